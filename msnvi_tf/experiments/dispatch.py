"""What `bin/evaluate` and `bin/plot` run for the data set of the given workdirs.

`evaluate(workdirs, output_dir, **options)` and `plot(workdirs, output_dir,
**options)` read each workdir's data set from its config.json and call the
entry of `EXPERIMENTS` for it:

  toy                 evaluate: the generic bounds; plot: Figs. 2 and 6
  pendulum            evaluate: the Sec. 5.3 report (Fig. 5, RMSE table, sensor
                      health); plot: Fig. 5 for every fault
  mnist_tb, _qu, _no  evaluate: the Table 1 grid (with `sensor_health=True` also
                      the MNIST-QU / -NO sensor-health report); plot: Figs. 3, 4, 7
  cub, shapes         evaluate: Table 2; plot: Figs. 8 and 9

Every entry is a function `fn(runs, output_dir, **options) -> [written paths]`
(`runs`: a list of `Run`); options it has no use for it ignores. `register`
adds or replaces an entry; a registered data set (`msnvi_tf.register_dataset`,
e.g. a user's: its module named by `bin/evaluate --dataset_module`, or the
workdir's `dataset_module` imported with `trust_workdir`) without an entry gets
`generic.generic_evaluation` (the ind / MoE / PoE bounds of the test set) and
`generic.learning_curves`.
"""
import collections
import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras

from msnvi_tf import data as data_lib
from msnvi_tf import registry
from msnvi_tf.data import pendulum_faults
from msnvi_tf.experiments import cub_figures
from msnvi_tf.experiments import figures
from msnvi_tf.experiments import generic
from msnvi_tf.experiments import mnist_figures
from msnvi_tf.experiments import mnist_health
from msnvi_tf.experiments import pendulum_sensors
from msnvi_tf.experiments import table1
from msnvi_tf.experiments import table2
from msnvi_tf.experiments import toy_figures
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["Run", "Experiment", "EXPERIMENTS", "register", "known_datasets",
           "parse_workdir", "load_runs", "evaluate", "plot"]

log = logging.getLogger("msnvi_tf")

Run = collections.namedtuple("Run", ["label", "workdir", "config"])
Experiment = collections.namedtuple("Experiment", ["evaluate", "plot"])
Function = Callable[..., List[str]]
_HEALTH_DATASETS = ("mnist_qu", "mnist_no")  # sensor_health=True: their report


def _run_dir(output_dir: str, run: Run, runs: Sequence[Run]) -> str:
  """`output_dir` for one run; `output_dir/<workdir name>` for each of several."""
  return output_dir if len(runs) == 1 else os.path.join(
      output_dir, workdir_lib.run_name(run.workdir))


def _choose(faults: Optional[Sequence[str]], known: Sequence[str]) -> List[str]:
  unknown = [f for f in faults or () if f not in known]
  if unknown:
    raise ValueError(f"faults: choose from {list(known)}; got {unknown}.")
  return list(faults or known)


def _evaluate_mnist(runs, output_dir, num_samples=None, eval_size=0, eval_batch_size=None,
                    large_k=1000, large_k_examples=500, chunk_size=0,
                    large_k_proposals=None, large_k_precision="float32", large_k_seed=0,
                    merge=False, sensor_health=False, faults=None, seed=None,
                    **unused) -> List[str]:
  """The Table 1 grid (table1.py); the sensor-health report of MNIST-QU / -NO runs."""
  del unused
  if sensor_health:
    faults = _choose(faults, mnist_health.CORRUPTIONS)
  results = ((table1.load_results(os.path.join(output_dir, "results.json")) or [])
             if merge else [])
  for run in runs:
    result = table1.evaluate_workdir(
        run.workdir, num_samples or 16, eval_size, large_k, large_k_examples, chunk_size,
        eval_batch_size=eval_batch_size or 500, large_k_proposals=large_k_proposals,
        large_k_precision=large_k_precision, large_k_seed=large_k_seed)
    results = [r for r in results if r["workdir"] != result["workdir"]]
    # A label names the column; two models of one column (e.g. two seeds) get two,
    # the later one's named after its workdir too (as in Table 2).
    column = run.label or result["column"]
    if (result["dataset"], column) in {(r["dataset"], r["column"]) for r in results}:
      column += f" ({workdir_lib.run_name(run.workdir)})"
    results.append({**result, "column": column})
    log.info("%s: %s / %s at step %d: -ind %.2f | -moe %.2f | -poe %.2f", run.workdir,
             result["dataset"], column, result["step"], -result["ind"],
             -result["moe"], -result["poe"])
  paths = list(table1.write_grid(results, output_dir).values())
  log.info("Table 1:\n%s", table1.format_markdown(results))
  for run in runs if sensor_health else ():
    paths += mnist_health.run_experiment(
        run.workdir, os.path.join(_run_dir(output_dir, run, runs), "sensor_health"),
        faults, num_samples=num_samples or 16, seed=1 if seed is None else seed,
        num_examples=eval_size)
  return paths


def _plot_mnist(runs, output_dir, label_workdir=None, num_examples=None, chain_steps=None,
                num_samples=None, seed=None, **unused) -> List[str]:
  """Figs. 3, 4 and 7 of the first run; further runs add their Markov chains to Fig. 4."""
  del unused
  model, config = workdir_lib.load_trained(runs[0].workdir)
  chains = {run.label or table1.column_of(run.config): workdir_lib.load_trained(run.workdir)[0]
            for run in runs[1:]}
  label_model = workdir_lib.load_trained(label_workdir)[0] if label_workdir else None
  return list(mnist_figures.plot_mnist_figures(
      model, config, output_dir, chains, label_model, num_examples or 500,
      chain_steps or 150, num_samples or 100, seed=seed or 0).values())


def _evaluate_pendulum(runs, output_dir, faults=None, frames_per_rotation=None,
                       num_samples=None, seed=None, **unused) -> List[str]:
  """The Sec. 5.3 report of every run: Fig. 5 per fault, roc.png, results.md."""
  del unused
  faults = _choose(faults, list(pendulum_faults.FAULTS))
  paths = []
  for run in runs:
    paths += pendulum_sensors.run_experiment(
        run.workdir, _run_dir(output_dir, run, runs), faults,
        frames_per_rotation or 120, num_samples or 500, 1 if seed is None else seed)
  return paths


def _plot_pendulum(runs, output_dir, faults=None, frames_per_rotation=None,
                   num_samples=None, seed=None, **unused) -> List[str]:
  """Fig. 5 of every run for every fault (`fig5_<fault>.png`)."""
  del unused
  faults = _choose(faults, list(pendulum_faults.FAULTS))
  seed = 1 if seed is None else seed
  paths = []
  for run in runs:
    model, config = workdir_lib.load_trained(run.workdir)
    pendulum_sensors.ensure_calibrated(model, config, seed=seed)
    for fault in faults:
      sequence = pendulum_sensors.run_sequence(
          model, config, fault, frames_per_rotation=frames_per_rotation or 120,
          num_samples=num_samples or 500, seed=seed)
      paths.append(figures.fig5_pendulum(sequence, os.path.join(
          _run_dir(output_dir, run, runs), f"fig5_{fault}.png")))
  return paths


def _evaluate_cub(runs, output_dir, num_samples=None, eval_size=0, eval_batch_size=None,
                  accuracy_samples=None, seed=None, merge=False, **unused) -> List[str]:
  """Table 2, the paper's numbers beside: table2.md, table2.csv and table2.json.

  table2.md holds the paper's columns (a mask model and an image model merged
  into one, `table2.merge_columns`), then one column per model and the workdir
  and step (checkpoint) each model came from; table2.csv
  one row per cell with the model, step and K it came from; table2.json the
  results per model. With `merge`, the models of an existing table2.json that
  are not evaluated again stay in the table (models evaluated as they finish).
  """
  del unused
  columns = {}
  if merge and os.path.exists(os.path.join(output_dir, "table2.json")):
    with open(os.path.join(output_dir, "table2.json")) as f:
      columns = json.load(f)
    again = {workdir_lib.run_name(run.workdir) for run in runs}
    columns = {label: c for label, c in columns.items() if c.get("workdir") not in again}
  for run in runs:
    model, config = workdir_lib.load_trained(  # float32: no machine-dependent numbers
        run.workdir, eval_batch_size=eval_batch_size or 8, precision="float32")
    keras.utils.set_random_seed(seed or 0)
    label = run.label or table2.label_of(config)
    if label in columns:
      label += f" ({workdir_lib.run_name(run.workdir)})"
    k = num_samples or config.eval_num_samples
    results = table2.evaluate_table2(
        model, data_lib.test_batches(config), k, accuracy_samples or 100,
        eval_size or None, progress=f"Table 2 {label}")
    columns[label] = {**results, "workdir": workdir_lib.run_name(run.workdir),
                      "step": model.trained_steps, "num_samples": k,
                      "train_num_samples": config.num_samples}
    log.info("%s (%s, step %d): %s", label, run.workdir, model.trained_steps, results)
  merged = table2.merge_columns(columns)
  k_values = sorted({c["num_samples"] for c in columns.values()})
  table = (f"Negative bounds (nats per example, lower is better; K = "
           f"{', '.join(map(str, k_values))}) and segmentation accuracy (higher is "
           f"better), ours (paper, CUB at 128x128).\n\n"
           + table2.table2_markdown(merged) + "\n\nPer model:\n\n"
           + table2.table2_markdown(columns) + "\n\nModels: " + "; ".join(
               f"{label}: {c['workdir']} at step {c['step']}" for label, c in columns.items())
           + ".\n")
  log.info("Table 2:\n%s", table)
  return [generic.write_text(output_dir, "table2.md", table),
          generic.write_csv(output_dir, "table2.csv", table2.table2_rows(columns)),
          generic.write_text(output_dir, "table2.json", json.dumps(columns, indent=2) + "\n")]


def _plot_cub(runs, output_dir, num_columns=None, seed=None, **unused) -> List[str]:
  """Figs. 8 and 9 (App. G) of every run, on the first test examples."""
  del unused
  paths = []
  for run in runs:
    model, config = workdir_lib.load_trained(run.workdir)
    keras.utils.set_random_seed(seed or 0)
    batch = next(iter(data_lib.test_batches(config).unbatch().batch(num_columns or 8)))
    name = (f"{config.dataset}, {run.label or table2.label_of(config)} trained with "
            f"K={config.num_samples} ({workdir_lib.run_name(run.workdir)}, step "
            f"{model.trained_steps}); first {len(batch['image'])} test scenes")
    paths += cub_figures.cub_figures(model, batch, _run_dir(output_dir, run, runs), name)
  return paths


def _plot_toy(runs, output_dir, seed=None, **unused) -> List[str]:
  """Figs. 2 and 6 of every run."""
  del unused
  paths = []
  for run in runs:
    model, config = workdir_lib.load_trained(run.workdir)
    keras.utils.set_random_seed(seed or 0)
    name = (f"toy mixture of Gaussians, {run.label or 'L_' + config.objective} "
            f"({workdir_lib.run_name(run.workdir)}, step {model.trained_steps})")
    paths += toy_figures.toy_figures(model, config, _run_dir(output_dir, run, runs), name)
  return paths


# config.dataset -> Experiment(evaluate, plot); None: the generic one.
EXPERIMENTS: Dict[str, Experiment] = {
    "toy": Experiment(None, _plot_toy),
    "pendulum": Experiment(_evaluate_pendulum, _plot_pendulum),
    **{name: Experiment(_evaluate_mnist, _plot_mnist)
       for name in ("mnist_tb", "mnist_qu", "mnist_no")},
    **{name: Experiment(_evaluate_cub, _plot_cub) for name in ("cub", "shapes")},
}


def register(dataset: str, evaluate: Optional[Function] = None,
             plot: Optional[Function] = None):
  """Makes `bin/evaluate` / `bin/plot` run `evaluate` / `plot` for `dataset`.

  Args:
    dataset: a `config.dataset` name.
    evaluate: `fn(runs, output_dir, **options) -> [paths]` (None: `generic.generic_evaluation`).
    plot: the same for the figures (None: `generic.learning_curves`).
  """
  EXPERIMENTS[dataset] = Experiment(evaluate, plot)


def known_datasets() -> List[str]:
  """The data sets `evaluate` and `plot` can handle."""
  return sorted(set(EXPERIMENTS) | set(registry.names()))


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
                       f"sets: {known_datasets()} (see dispatch.register).")
  return runs


def _entry(runs: Sequence[Run], kind: str) -> Function:
  """The `kind` function of the runs' data set; ValueError if they need different ones."""
  default = generic.generic_evaluation if kind == "evaluate" else generic.learning_curves
  none = Experiment(None, None)
  fns = [getattr(EXPERIMENTS.get(r.config.dataset, none), kind) or default for r in runs]
  datasets = {r.config.dataset for r in runs}
  if len(set(fns)) > 1 or (kind == "plot" and len(datasets) > 1):
    held = ", ".join(f"{r.workdir} ({r.config.dataset})" for r in runs)
    raise ValueError(f"The workdirs hold different data sets: {held}; {kind} one data "
                     "set per call.")
  return fns[0]


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
  other = [f"{r.workdir} ({r.config.dataset})" for r in runs
           if r.config.dataset not in _HEALTH_DATASETS]
  if options.get("sensor_health") and other:
    raise ValueError(f"sensor_health needs {' or '.join(_HEALTH_DATASETS)} workdirs (three "
                     f"or more sources; the pendulum's report is its evaluation); got "
                     f"{', '.join(other)}.")
  if output_dir is None:
    if len(runs) > 1:
      raise ValueError("Several workdirs need an output_dir.")
    output_dir = os.path.join(runs[0].workdir, "evaluation")
  return fn(runs, output_dir, **options)


def plot(workdirs: Sequence[str], output_dir: Optional[str] = None, curves: bool = False,
         trust_workdir: bool = False, **options) -> List[str]:
  """Draws the figures of `[label=]workdir`s of one data set; returns the paths.

  With `curves` it draws only the learning curves of all workdirs (of any data
  sets; an MNIST run's Table 1 PoE cell as a dotted line). `output_dir` defaults
  to `<first workdir>/figures`. `trust_workdir`: as for `evaluate`.
  """
  runs = load_runs(workdirs, trust_workdir)
  output_dir = output_dir or os.path.join(runs[0].workdir, "figures")
  if curves:  # MNIST runs with the paper's Table 1 PoE cell of their column
    return generic.learning_curves(runs, output_dir, reference=table1.paper_bound, **options)
  return _entry(runs, "plot")(runs, output_dir, **options)
