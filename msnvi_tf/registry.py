"""Data sets by name: each one's data, architecture and config, registered by one call.

A data set is three functions, and optionally its experiment:
  data(config, start_step=0) -> (train, eval)   `tf.data.Dataset`s of
      `{name: [B, ...]}` batches (`msnvi_tf.data` has the helpers that make
      them resumable: `training_batches`, `eval_batches`)
  architecture(config) -> MultiSourceVAE       (`msnvi_tf.architectures.dense_model`
      builds a dense one from source shapes and likelihood heads)
  config() -> Config                           the fields training reads
      (`msnvi_tf.runtime.config.FIELDS`); its `dataset` is the registered name
  experiment: Experiment(evaluate, plot)       what `bin/evaluate` and `bin/plot`
      run for its workdirs: `fn(runs, output_dir, **options) -> [written paths]`
      (`runs`: `msnvi_tf.experiments.dispatch.Run`s; options are keyword
      arguments with their defaults, e.g. `num_samples=16`, and an option a
      function does not take is refused); either may be None, and without an
      experiment a data set gets the generic report (the ind / MoE / PoE test
      bounds, the learning curves)
  sequences(config, num, seed) -> [{name: [T, ...]}]   optional: `num` healthy
      sequences of frames (every source present), deterministic from `seed`;
      a data set that has them gets a latent filter fitted at the end of
      training, stored with the model and served (`filter_step`)

Register one from your own module, without editing msnvi_tf:

  import msnvi_tf
  msnvi_tf.register_dataset("mnist_rot", data=make_datasets,
                            architecture=build_model, config=get_config,
                            experiment=msnvi_tf.Experiment(evaluate=my_report))

and train it with `bin/train --dataset=mnist_rot --dataset_module=my_module.py`
(a module name or a file path): bin/train imports that module, and stores it
in the workdir's config (`dataset_module`). Evaluation, plots and loading the
trained model import it again only when you name it (`--dataset_module` of
bin/evaluate and bin/plot) or trust the workdir (`--trust_workdir`,
`workdir.load_trained(..., trust_workdir=True)`): a workdir's files are data,
and importing a module runs its code. The built-in data sets are registered by
`msnvi_tf/__init__.py` in the same way, with "module:attribute" references that
are imported on first use.
"""
import dataclasses
import importlib
import importlib.util
import os
import sys
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Tuple, Union

__all__ = ["DataSet", "Experiment", "register_dataset", "get", "for_config", "names",
           "import_dataset_module"]

Reference = Union[str, Callable, Mapping, None]


class Experiment(NamedTuple):
  """What `bin/evaluate` and `bin/plot` run for a data set's workdirs.

  Attributes:
    evaluate: `fn(runs, output_dir, **options) -> [written paths]`: its tables
      and reports (None: the generic ind / MoE / PoE test bounds).
    plot: the same for its figures (None: the learning curves).
    reference: `fn(config) -> nats or None`: the published test bound of a
      run's model, drawn as a dotted line beside its learning curve (MNIST: the
      paper's Table 1 PoE cell of its column).
  """
  evaluate: Optional[Callable[..., List[str]]] = None
  plot: Optional[Callable[..., List[str]]] = None
  reference: Optional[Callable[[Any], Optional[float]]] = None


@dataclasses.dataclass(frozen=True)
class DataSet:
  """A registered data set (see the module docstring).

  Attributes:
    name: the `config.dataset` that selects it.
    split_sizes: `(train, test)` sizes of a real data set's splits: the config's
      `train_size` / `eval_size` may run from 0 (all) to these; None for
      synthetic data (any positive size).
  """
  name: str
  _data: Reference
  _architecture: Reference
  _config: Reference
  _variants: Reference = None
  split_sizes: Optional[Tuple[int, int]] = None
  _experiment: Reference = None
  _sequences: Reference = None

  def make_datasets(self, config, start_step: int = 0):
    """`(train, eval)` datasets for `config`; train begins at batch `start_step`."""
    return _resolve(self._data)(config, start_step=start_step)

  def build_model(self, config):
    """The uncompiled `MultiSourceVAE` of `config`."""
    return _resolve(self._architecture)(config)

  def config(self):
    """The data set's default config (the paper's, for the built-in ones)."""
    return _resolve(self._config)()

  @property
  def splits(self) -> Optional[Mapping[str, int]]:
    """`{"train": n, "test": m}` of a real data set (for `config.validate`), else None."""
    if self.split_sizes is None:
      return None
    return dict(zip(("train", "test"), self.split_sizes))

  @property
  def experiment(self) -> Experiment:
    """Its `Experiment` (an empty one, the generic report, if none was registered)."""
    return _resolve(self._experiment) or Experiment()

  @property
  def sequences(self) -> Optional[Callable[..., List[Mapping[str, Any]]]]:
    """`fn(config, num, seed) -> [{name: [T, ...]}]`: healthy sequences, or None (none).

    Training fits the model's latent filter on them (`msnvi_tf.core.filtering`).
    """
    return _resolve(self._sequences)

  @property
  def variants(self) -> Mapping[str, Mapping[str, Any]]:
    """`{variant: {field: value}}`: named changes of the config (e.g. "fast")."""
    return dict(_resolve(self._variants) or {})


_REGISTRY = {}


def _resolve(reference: Reference):
  """A "module:attribute" string imported on first use, or the object itself."""
  if not isinstance(reference, str):
    return reference
  module, _, attribute = reference.partition(":")
  return getattr(importlib.import_module(module), attribute)


def register_dataset(name: str, *, data: Reference, architecture: Reference,
                     config: Reference, variants: Reference = None,
                     split_sizes: Optional[Tuple[int, int]] = None,
                     experiment: Reference = None, sequences: Reference = None,
                     replace: bool = False) -> DataSet:
  """Registers data set `name` (see the module docstring); returns its entry.

  Args:
    name: the name `--dataset` and `config.dataset` use.
    data: `fn(config, start_step=0) -> (train, eval)`, or "module:attribute".
    architecture: `fn(config) -> MultiSourceVAE`, or "module:attribute".
    config: `fn() -> Config`, or "module:attribute".
    variants: optional `{variant: {field: value}}` (or "module:attribute").
    split_sizes: `(train, test)` of a real data set; None for synthetic data.
    experiment: optional `Experiment` (or "module:attribute"): its tables and
      figures for `bin/evaluate` and `bin/plot`.
    sequences: optional `fn(config, num, seed) -> [{name: [T, ...]}]` (or
      "module:attribute"): healthy sequences; training then fits the latent
      filter (module docstring).
    replace: allow replacing an existing registration (else an error).

  Raises:
    ValueError: `name` is taken (and not `replace`), an argument is neither
      callable nor a "module:attribute" string, or `experiment` is neither an
      `Experiment` nor such a string.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"A data set name must be a non-empty string, got {name!r}.")
  if name in _REGISTRY and not replace:
    raise ValueError(f"Data set {name!r} is already registered; pass replace=True to "
                     "replace it, or choose another name.")
  for what, value in (("data", data), ("architecture", architecture), ("config", config),
                      ("sequences", sequences)):
    if what == "sequences" and value is None:
      continue
    if not (callable(value) or (isinstance(value, str) and ":" in value)):
      raise ValueError(f"register_dataset({name!r}): {what} must be a function or a "
                       f"'module:attribute' string, got {value!r}.")
  if not (experiment is None or isinstance(experiment, Experiment)
          or (isinstance(experiment, str) and ":" in experiment)):
    raise ValueError(f"register_dataset({name!r}): experiment must be an Experiment("
                     f"evaluate, plot) or a 'module:attribute' string, got {experiment!r}.")
  entry = DataSet(name, data, architecture, config, variants,
                  None if split_sizes is None else tuple(int(n) for n in split_sizes),
                  experiment, sequences)
  _REGISTRY[name] = entry
  return entry


def names():
  """The registered data set names, sorted."""
  return sorted(_REGISTRY)


def get(name: str) -> DataSet:
  """The registered data set `name`.

  Raises:
    ValueError: no data set of that name is registered.
  """
  if name not in _REGISTRY:
    raise ValueError(
        f"Unknown dataset {name!r}; choose one of {names()}, or register your own "
        "with msnvi_tf.register_dataset (bin/ scripts: --dataset_module=<module or "
        "file that registers it>).")
  return _REGISTRY[name]


def for_config(config) -> DataSet:
  """The data set of `config.dataset`; imports `config.dataset_module` first if it is unknown.

  For a config you made: a workdir's config passes `workdir.load_config`, which
  imports its module only when trusted.
  """
  if config.dataset not in _REGISTRY:
    import_dataset_module(config.dataset_module)
  return get(config.dataset)


def import_dataset_module(module: str):
  """Imports the module (a dotted name or a .py file path) that registers a data set.

  Raises:
    ValueError: the module cannot be found (the message names it).
  """
  if not module:
    return None
  if module.endswith(".py") or os.sep in module:
    path = os.path.abspath(module)
    if not os.path.isfile(path):
      raise ValueError(f"dataset_module {module!r}: no such file ({path}).")
    name = os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == path:
      return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    raise ValueError(f"dataset_module {module!r} cannot be imported ({e}); give a "
                     "module on the Python path or a .py file path.") from e
