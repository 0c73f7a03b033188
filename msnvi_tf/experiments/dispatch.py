"""What `bin/evaluate` and `bin/plot` run for the data set of the given workdirs.

`evaluate(workdirs, output_dir, **options)` and `plot(workdirs, output_dir,
**options)` read each workdir's data set from its config.json and call its
registered experiment's function (`msnvi_tf.register_dataset(...,
experiment=Experiment(evaluate, plot))`; the built-in ones are the packages
`msnvi_tf.experiments.toy`, `.mnist`, `.pendulum` and `.cub`). A data set
without one gets `generic.generic_evaluation` (the ind / MoE / PoE bounds of the
test set) and `generic.learning_curves`.

Every function is `fn(runs, output_dir, **options) -> [written paths]` (`runs`:
a list of `Run`); its keyword arguments are its options, with the experiment's
defaults, and an option it does not take is refused before anything runs.
"""
import collections
import functools
import inspect
import os
from typing import Callable, List, Optional, Sequence, Tuple

from msnvi_tf import registry
from msnvi_tf.experiments import generic
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["Run", "known_datasets", "parse_workdir", "load_runs", "options_of", "evaluate",
           "plot"]

Run = collections.namedtuple("Run", ["label", "workdir", "config"])
Function = Callable[..., List[str]]


def known_datasets() -> List[str]:
  """The data sets `evaluate` and `plot` can handle: the registered ones."""
  return registry.names()


def parse_workdir(spec: str) -> Tuple[Optional[str], str]:
  """`(label or None, workdir)` of a `[label=]workdir` entry.

  An existing directory decides: the whole entry if it is one (`wd_lr=1e-4`),
  else what follows the first '=' that leaves one (`lr=wd_lr=1e-4`, and a label
  holding '=': `K=1=workdirs/k1`); with none, the label ends at the first '='.
  """
  if "=" not in spec or os.path.isdir(spec):
    return None, spec
  splits = [(spec[:i], spec[i + 1:]) for i, c in enumerate(spec) if c == "="]
  return next((s for s in splits if os.path.isdir(s[1])), splits[0])


def load_runs(workdirs: Sequence[str], trust_workdir: bool = False) -> List[Run]:
  """`Run`s of `[label=]workdir` entries, checked to be workdirs of known data sets.

  A workdir's `dataset_module` is imported only with `trust_workdir`
  (`workdir.load_config`).

  Raises:
    FileNotFoundError: an entry is not a workdir written by bin/train.
    ValueError: no workdirs; one holds a data set no entry or data module
      knows, or names a `dataset_module` that is not trusted.
  """
  if not workdirs:
    raise ValueError("No workdirs given.")
  runs = []
  for spec in workdirs:
    label, workdir = parse_workdir(spec)
    if not os.path.isdir(workdir):
      raise FileNotFoundError(f"{workdir}: no such workdir.")
    runs.append(Run(label, workdir, workdir_lib.load_config(workdir, trust_workdir)))
  for run in runs:
    if run.config.dataset not in known_datasets():
      raise ValueError(f"{run.workdir} holds a {run.config.dataset!r} model; known data "
                       f"sets: {known_datasets()} (msnvi_tf.register_dataset adds one).")
  return runs


def _entry(runs: Sequence[Run], kind: str) -> Function:
  """The `kind` function of the runs' data set; ValueError if they need different ones."""
  default = generic.generic_evaluation if kind == "evaluate" else generic.learning_curves
  fns = [getattr(registry.for_config(r.config).experiment, kind) or default for r in runs]
  datasets = {r.config.dataset for r in runs}
  if len(set(fns)) > 1 or (kind == "plot" and len(datasets) > 1):
    held = ", ".join(f"{r.workdir} ({r.config.dataset})" for r in runs)
    raise ValueError(f"The workdirs hold different data sets: {held}; {kind} one data "
                     "set per call.")
  return fns[0]


def options_of(fn: Function) -> Optional[List[str]]:
  """The options `fn(runs, output_dir, **options)` takes; None if it takes any."""
  parameters = list(inspect.signature(fn).parameters.values())[2:]
  if any(p.kind == p.VAR_KEYWORD for p in parameters):
    return None
  return [p.name for p in parameters]


def _call(fn: Function, runs: Sequence[Run], output_dir: str, options) -> List[str]:
  """`fn(runs, output_dir, **options)`, after checking that it takes every option."""
  known = options_of(fn)
  unknown = sorted(set(options) - set(known)) if known is not None else []
  if unknown:
    datasets = ", ".join(sorted({r.config.dataset for r in runs}))
    named = getattr(fn, "func", fn)  # a functools.partial names its function
    raise ValueError(f"{', '.join(unknown)}: not an option for {datasets} workdirs "
                     f"({named.__module__}.{named.__qualname__}); its options: "
                     f"{', '.join(known) or 'none'}.")
  return fn(runs, output_dir, **options)


def evaluate(workdirs: Sequence[str], output_dir: Optional[str] = None,
             trust_workdir: bool = False, **options) -> List[str]:
  """Evaluates `[label=]workdir`s of one data set as their experiment does; returns paths.

  `output_dir` defaults to `<workdir>/evaluation` for one workdir and is
  required for several. `trust_workdir`: import the `dataset_module` a
  workdir names (`load_runs`). `options` go to the data set's function (see
  the module docstring and `bin/evaluate --help`).
  """
  runs = load_runs(workdirs, trust_workdir)
  fn = _entry(runs, "evaluate")
  if output_dir is None:
    if len(runs) > 1:
      raise ValueError("Several workdirs need an output_dir.")
    output_dir = os.path.join(runs[0].workdir, "evaluation")
  return _call(fn, runs, output_dir, options)


def plot(workdirs: Sequence[str], output_dir: Optional[str] = None, curves: bool = False,
         trust_workdir: bool = False, **options) -> List[str]:
  """Draws the figures of `[label=]workdir`s of one data set; returns the paths.

  With `curves` it draws only the learning curves of all workdirs (of any data
  sets; with its experiment's `reference` as a dotted line, for MNIST the
  paper's Table 1 PoE cell of the run's column). `output_dir` defaults to
  `<first workdir>/figures`. `trust_workdir`: as for `evaluate`.
  """
  runs = load_runs(workdirs, trust_workdir)
  output_dir = output_dir or os.path.join(runs[0].workdir, "figures")
  if curves:
    def reference(config):
      published = registry.for_config(config).experiment.reference
      return published(config) if published else None
    return _call(functools.partial(generic.learning_curves, reference=reference), runs,
                 output_dir, options)
  return _call(_entry(runs, "plot"), runs, output_dir, options)
