"""Experiment configs: flat `ml_collections.ConfigDict`s with declared, typed fields.

Configs are plain Python (`configs/<name>.py: get_config()`, as in Flax and
big_vision); `load_file` loads a user's (`bin/train --config=my_config.py:arg`),
naming the file and what is wrong in one line when it cannot. `Config.override`
applies `key=value` strings from the command line (`--set`), parsing each value
to the type of the default it replaces, and refuses unknown keys.

Every field is declared once, as a `Field`: its default (or `REQUIRED`), what it
means, the rule its values follow and what a re-run in the same workdir may do
with it. `FIELDS` declares the fields of every data set; a data set's config
module declares its own (`configs/mnist.py`: `FIELDS`) and passes them to
`make_config`, which makes the config carry them (`Config.declarations`). From
the declarations, `validate` checks the values before anything is built,
`msnvi_tf.runtime.workdir` decides what a resume may change, and a workdir
written before a field existed gets its default when loaded (`defaults`).
"""
import ast
import dataclasses
import difflib
import importlib.util
import json
import math
import os
import traceback

import ml_collections
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional

from msnvi_tf.core import calibration
from msnvi_tf.core import objectives
from msnvi_tf.runtime.hardware import PRECISIONS

__all__ = ["Config", "Field", "Rule", "FIELDS", "REQUIRED", "FIXED", "MAY_CHANGE", "NUMERICS",
           "COUNT", "SEED", "POSITIVE", "UNIT", "BETA", "choice", "defaults", "make_config",
           "load_file", "validate"]


class Config(ml_collections.ConfigDict):
  """A flat `ConfigDict`: `config.num_samples`, `config["num_samples"]`, `config.get`.

  Not type-locked (`type_safe=False`): `override` parses command-line values to
  the default's type and `validate` checks every value with a message naming the
  field, which a TypeError on assignment would not.

  Args:
    values: the fields' values (a mapping, or a `Config`, whose declarations
      are kept unless `declarations` is given).
    declarations: `{name: Field}` of its fields (`make_config` passes them);
      None: `FIELDS`.
    **more: more values.
  """

  def __init__(self, values: Optional[Mapping[str, Any]] = None, *,
               declarations: Optional[Mapping[str, "Field"]] = None, **more):
    super().__init__({**dict(values or {}), **more}, type_safe=False)
    if declarations is None and isinstance(values, Config):
      declarations = values.declarations
    # Not a field: ConfigDict's __setattr__ would store it as one.
    object.__setattr__(self, "_declarations", dict(declarations or FIELDS))

  @property
  def declarations(self) -> Mapping[str, "Field"]:
    """`{name: Field}`: `FIELDS` and the fields its data set declares."""
    return self._declarations

  def __getattr__(self, key):
    try:
      return super().__getattr__(key)
    except AttributeError:
      raise AttributeError(f"Config has no field {key!r}{_hint(key, self)}") from None

  def copy(self) -> "Config":
    return Config(self.to_dict(), declarations=self.declarations)

  def override(self, assignments: Iterable[str]) -> "Config":
    """Returns a copy with `key=value` assignments applied.

    Values are parsed as Python literals and must match the type of the
    default (an int may replace a float; None defaults accept anything).

    Raises:
      ValueError: malformed assignment, unknown key or wrong type.
    """
    config = self.copy()
    for assignment in assignments:
      key, sep, text = assignment.partition("=")
      key = key.strip()
      if not sep or not key:
        raise ValueError(f"Override {assignment!r} is not of the form key=value.")
      if key not in config:
        raise ValueError(
            f"Unknown config field {key!r} in override {assignment!r}{_hint(key, config)}")
      config[key] = _parse(key, text.strip(), config[key])
    return config

  def to_json(self) -> str:  # pylint: disable=arguments-differ
    """The fields as JSON, sorted by name (a workdir's config.json)."""
    return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=list)


def _hint(key: str, fields: Iterable[str]) -> str:
  """"; did you mean 'x'?" for the fields close to `key`, else a pointer to them."""
  close = difflib.get_close_matches(key, sorted(fields), n=3)
  if close:
    return f"; did you mean {' or '.join(map(repr, close))}?"
  return "; no field has a similar name (see configs/)."


def _parse(key: str, text: str, default: Any):
  if isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if default is None:
      return text
    value = text
    if isinstance(default, float):
      try:  # nan, inf: `validate` names what is accepted.
        value = float(text)
      except ValueError:
        pass
  if default is None or isinstance(value, type(default)):
    return value
  if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
    return type(default)(value)
  raise ValueError(f"{key} must be of type {type(default).__name__} like its "
                   f"default {default!r}, got {text!r}.")


_MAX_COUNT = 1_000_000_000
_MAX_SEED = 2**31 - 1  # keras.utils.set_random_seed takes numpy's 32-bit seeds.


class Rule(NamedTuple):
  """The values a field accepts: `accepted` says which (in messages), `test` checks one."""
  accepted: str
  test: Callable[[Any], bool]


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _integer(low: int, high: int, low_note: str = "", high_note: str = "") -> Rule:
  """The integers from `low` to `high` (bool excluded)."""
  return Rule(f"an integer from {low:,}{low_note} to {high:,}{high_note}",
              lambda v: _is_int(v) and low <= v <= high)


def _number(accepted: str, test) -> Rule:
  """The finite real numbers (bool excluded) passing `test`."""
  return Rule(accepted, lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and math.isfinite(v) and test(v)))


def choice(values: Iterable[Any]) -> Rule:
  """The rule of a field that is one of `values`."""
  values = tuple(values)
  return Rule(f"one of {', '.join(map(repr, values))}", lambda v: v in values)


COUNT = _integer(1, _MAX_COUNT)  # steps, samples, batch sizes, widths, ...
SEED = _integer(0, _MAX_SEED)
POSITIVE = _number("a positive finite number", lambda v: v > 0)
UNIT = _number("a number from 0 to 1", lambda v: 0 <= v <= 1)
BETA = _number("a number >= 0 and < 1", lambda v: 0 <= v < 1)

REQUIRED = "<required>"
# What a re-run in the same workdir may do with a field (`Field.resume`).
FIXED = "fixed"
MAY_CHANGE = "may change"
NUMERICS = "numerics"
_RESUME = (FIXED, MAY_CHANGE, NUMERICS)


@dataclasses.dataclass(frozen=True)
class Field:
  """The declaration of a config field.

  Attributes:
    default: its value when a config does not name it (also what a workdir
      written before the field existed gets: a new field's default keeps the
      old behaviour); `REQUIRED`: every config names it.
    doc: what it means, in a line.
    rule: the values `validate` accepts (`COUNT`, `choice(...)`, ...); None: any.
    resume: what a re-run in the same workdir may do with it: `FIXED` keep it
      (it defines the trained model or its data), `MAY_CHANGE` change it (steps,
      logging, paths), `NUMERICS` resolve "auto" at the first start and keep
      that (`msnvi_tf.runtime.workdir.resolve_numerics`).
  """
  default: Any
  doc: str
  rule: Optional[Rule] = None
  resume: str = FIXED

  def __post_init__(self):
    if self.resume not in _RESUME:
      raise ValueError(f"Field resume must be one of {_RESUME}, got {self.resume!r}.")


# The fields of every data set, in one place. A data set's config (`configs/<name>.py`,
# or a user's) is `make_config(declarations, **values)`: these defaults and its own
# fields' (data- and architecture-specific ones), updated with `values`.
FIELDS = {
    # What to train.
    "dataset": Field(REQUIRED, "registered data set name (msnvi_tf.registry)"),
    "dataset_module": Field("", "module or .py file that registers `dataset` (user data "
                            "sets)", resume=MAY_CHANGE),
    "objective": Field(REQUIRED, "training objective (msnvi_tf.core.objectives.OBJECTIVES)",
                       choice(sorted(objectives.OBJECTIVES))),
    "iwae_sources": Field(None, "IWAE encoder input: None = all sources hard-wired, or names"),
    "hybrid_weight": Field(0.5, "lambda of L_hybrid, Eq. (5)", UNIT),
    # Model.
    "latent_dim": Field(REQUIRED, "Dz", COUNT),
    "min_scale": Field(1e-4, "floor of the beliefs' std (msnvi_tf.core.beliefs)", POSITIVE),
    "num_samples": Field(REQUIRED, "K of the training objective", COUNT),
    "eval_num_samples": Field(REQUIRED, "K of the evaluation bounds", COUNT,
                              resume=MAY_CHANGE),
    # Data.
    "batch_size": Field(REQUIRED, "training batch (global, over all replicas)", COUNT),
    "eval_batch_size": Field(500, "evaluation batch (lower it for large examples)", COUNT,
                             resume=MAY_CHANGE),
    "train_size": Field(0, "training examples (0: all of a real data set)"),
    "eval_size": Field(0, "evaluation examples (0: all of a real data set)"),
    "data_dir": Field("", "directory of the data set's files (data module's default if "
                      "empty)", resume=MAY_CHANGE),
    "seed": Field(0, "seed of initialisation, training batches and samples", SEED),
    # Optimisation (App. H: Adam).
    "learning_rate": Field(REQUIRED, "peak learning rate", POSITIVE, resume=MAY_CHANGE),
    "beta1": Field(0.9, "Adam beta1", BETA),
    "beta2": Field(0.999, "Adam beta2", BETA),
    "lr_schedule": Field("constant", "constant (the paper's) or warmup_cosine "
                         "(msnvi_tf.runtime.optimizers)"),
    "warmup_steps": Field(0, "warmup_cosine: linear warm-up steps", _integer(0, _MAX_COUNT)),
    "decay_steps": Field(0, "warmup_cosine: cosine decay steps after the warm-up",
                         _integer(0, _MAX_COUNT)),
    "final_lr_fraction": Field(0.0, "warmup_cosine: final / peak learning rate", UNIT),
    "num_steps": Field(REQUIRED, "training steps", COUNT, resume=MAY_CHANGE),
    # The loop: logging, evaluation, checkpoints, export.
    "steps_per_call": Field(100, "training steps per tf.function call", COUNT,
                            resume=MAY_CHANGE),
    "log_every": Field(1_000, "steps between progress lines and training scalars", COUNT,
                       resume=MAY_CHANGE),
    "eval_every": Field(5_000, "steps between evaluations", COUNT, resume=MAY_CHANGE),
    "checkpoint_every": Field(5_000, "steps between checkpoints", COUNT, resume=MAY_CHANGE),
    "max_checkpoints": Field(3, "checkpoints kept", COUNT, resume=MAY_CHANGE),
    "export_num_samples": Field(100, "latent samples of the serving signatures", COUNT,
                                resume=MAY_CHANGE),
    "conflict_false_alarm_rate": Field(
        calibration.FALSE_ALARM_RATE, "target fraction of healthy held-out examples with a conflict alarm "
        "(msnvi_tf.core.calibration)", BETA, resume=MAY_CHANGE),
    "missing_rate": Field(
        0.0, "incomplete data: each source of each training (and test) example absent "
        "with this probability, at least one present, drawn once per example from "
        "`seed` (msnvi_tf.data.Missingness); 0: none", BETA),
    "missing_handling": Field(
        "mask", "mask: train on every example with its present sources; complete_only: "
        "on the complete examples only (the usual workaround); the IWAE needs "
        "complete_only", choice(("mask", "complete_only"))),
    "divergence_tolerance": Field(
        1.0, "stop when a bound falls more than this many times max(|b0|, 1) nats below "
        "b0, the eval bound at initialisation (msnvi_tf.runtime.training; 0: off)",
        _number("a number >= 0 (0: no check)", lambda v: v >= 0), resume=MAY_CHANGE),
    # Hardware (msnvi_tf.runtime.hardware).
    "precision": Field("auto", "auto, float32, mixed_float16 or mixed_bfloat16",
                       choice(PRECISIONS), resume=NUMERICS),
    "jit_compile": Field("auto", "XLA: True, False or auto (a single GPU replica)",
                         resume=NUMERICS),
    "distribute": Field("auto", "auto, none, mirrored or multi_worker", resume=MAY_CHANGE),
    "intra_op_threads": Field("auto", "auto (1 on CPU-only machines with <= 2 cores) or N",
                              resume=NUMERICS),
}

# Latent samples a step draws, batch x K: the step's tensors hold that many
# times an example's size of numbers. 2**20 keeps them in a machine's memory and
# in TensorFlow's int32 shapes for examples of up to 2,048 numbers (MNIST: 784);
# the toy's training step peaks at 3.3 GB there, 4 times as many took more than
# 10 GB, batch_size=1e9 overflowed int32 and 1e7 took all the machine's memory.
MAX_SAMPLES_PER_STEP = 2**20
_SAMPLES_PER_STEP = (("batch_size", "num_samples"), ("eval_batch_size", "eval_num_samples"))


def _data_rules(config: Mapping[str, Any], split_sizes: Optional[Mapping[str, int]]):
  """The rules that depend on the data set's split sizes and the schedule."""
  rules = {}
  for field, split, name in (("train_size", "train", "training set"),
                             ("eval_size", "test", "test set")):
    size = (split_sizes or {}).get(split)
    rules[field] = COUNT if size is None else _integer(
        0, size, " (all)", f" (the {name} of {config.get('dataset')})")
  if config.get("lr_schedule") == "warmup_cosine":
    rules["decay_steps"] = _integer(1, _MAX_COUNT, high_note=" with lr_schedule 'warmup_cosine'")
  return rules


def validate(config: Mapping[str, Any],
             split_sizes: Optional[Mapping[str, int]] = None) -> None:
  """Checks the values of `config` before anything is built from it.

  Each field the config has is checked by the rule of its declaration
  (`Config.declarations`; `FIELDS` for a plain mapping): counts (steps,
  samples, batch sizes, ...) are integers from 1 to 1e9 (a bool is not),
  learning rates and scales positive finite numbers, Adam's betas in [0, 1),
  weights and fractions in [0, 1], seeds integers >= 0, the precision one of
  `hardware.PRECISIONS`; a batch times its number of latent samples (K) is at
  most `MAX_SAMPLES_PER_STEP`, for training and for evaluation.

  Args:
    config: the config (or any mapping of its fields).
    split_sizes: `{"train": n, "test": m}`, the real data set's split sizes
      (`msnvi_tf.registry.DataSet.splits`): `train_size` / `eval_size` may then be 0 (all) up
      to them. None for synthetic data, whose sizes must be >= 1.

  Raises:
    ValueError: one line naming the first bad field, what it accepts and its
      value.
  """
  declarations = config.declarations if isinstance(config, Config) else FIELDS
  rules = {k: f.rule for k, f in declarations.items() if f.rule is not None}
  rules.update(_data_rules(config, split_sizes))
  for field, (accepted, test) in rules.items():
    if field in config and not test(config[field]):
      raise ValueError(f"{field} must be {accepted}, got {config[field]!r}.")
  if (config.get("objective") == "iwae" and config.get("missing_rate")
      and config.get("missing_handling") == "mask"):
    raise ValueError(
        "objective 'iwae' cannot train on examples with missing sources: its one "
        "encoder reads all of them at once. Use missing_handling='complete_only' (train "
        "on the complete examples only), or an objective that integrates the present "
        "sources (ind, moe, poe, hybrid).")
  for batch, samples in _SAMPLES_PER_STEP:
    if batch in config and samples in config:
      if config[batch] * config[samples] > MAX_SAMPLES_PER_STEP:
        raise ValueError(
            f"{batch} x {samples} must be at most {MAX_SAMPLES_PER_STEP:,} latent samples "
            f"per step, got {config[batch]:,} x {config[samples]:,}; lower {batch} "
            f"or {samples}.")


def defaults(declarations: Mapping[str, Field] = FIELDS) -> dict:
  """`{name: default}` of the `declarations` that have one (`FIELDS` by default).

  Also what a workdir written before a field existed gets for it when loaded
  (`msnvi_tf.runtime.workdir`): a new field's default keeps the old behaviour.
  """
  return {k: f.default for k, f in declarations.items() if f.default != REQUIRED}


def make_config(declarations: Optional[Mapping[str, Field]] = None, **values) -> Config:
  """A config: the defaults of `FIELDS` and of `declarations`, updated with `values`.

  Args:
    declarations: `{name: Field}` of the data set's own fields (`configs/mnist.py`
      declares MNIST's); they are defaulted, validated and documented like
      `FIELDS`, which they may repeat but not change.
    **values: the config's values.

  Raises:
    ValueError: a declaration changes one of `FIELDS`, or a REQUIRED field is
      missing (the message lists them).
  """
  declarations = dict(declarations or {})
  changed = sorted(k for k in set(declarations) & set(FIELDS) if declarations[k] != FIELDS[k])
  if changed:
    raise ValueError(f"The config declares {changed} again, differently from "
                     "msnvi_tf.runtime.config.FIELDS; give them values instead.")
  declarations = {**FIELDS, **declarations}
  config = Config(defaults(declarations), declarations=declarations)
  config.update(values)
  missing = [k for k, f in declarations.items() if f.default == REQUIRED and k not in config]
  if missing:
    raise ValueError(f"The config lacks field(s) {missing} that training reads "
                     "(msnvi_tf.runtime.config.FIELDS documents them).")
  return config


def load_file(spec: str) -> Config:
  """The config of a config file, `spec` = `path/to/file.py[:argument]` (bin/train's --config).

  Runs the file and calls its `get_config()`, with `argument` when given (as
  `ml_collections.config_flags` does); what that returns, a `ConfigDict` or a
  dict, gets the defaults of `FIELDS` (`make_config`), and keeps the
  declarations of a `Config` (`configs/mnist.py:mnist_qu` those of MNIST's fields).

  Raises:
    ValueError: one line naming the file and what to fix: it does not exist,
      does not compile, raises when run, has no get_config(), its get_config()
      raises (the error and the file's line) or returns neither a ConfigDict
      nor a dict, or the config lacks fields training reads.
  """
  path, has_argument, argument = spec.partition(":")
  where = f"--config={spec}"
  if not os.path.isfile(path):
    raise ValueError(f"{where}: no such file ({os.path.abspath(path)}).")
  module_spec = importlib.util.spec_from_file_location("msnvi_tf_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  (the file's error, named)
    raise ValueError(f"{where}: running the file raised {_error_in(path, e)}; "
                     "fix the file.") from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ValueError(f"{where}: the file defines no get_config() (configs/toy.py has one).")
  call = f"get_config({argument!r})" if has_argument else "get_config()"
  try:
    config = get_config(*([argument] if has_argument else []))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{where}: {call} raised {_error_in(path, e)}; fix the file or "
                     "the argument after ':'.") from None
  if not isinstance(config, (ml_collections.ConfigDict, dict)):
    raise ValueError(f"{where}: {call} returned a {type(config).__name__}, not a "
                     "ConfigDict; return msnvi_tf.runtime.config.make_config(...) as "
                     "configs/toy.py does.")
  fields = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  try:
    return make_config(config.declarations if isinstance(config, Config) else None, **fields)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


def _error_in(path: str, error: Exception) -> str:
  """`error` in one line, "Type: message (path, line N)" with the line of `path` it came from."""
  if isinstance(error, SyntaxError):
    message, line = error.msg, error.lineno
  else:
    message = (str(error).splitlines() or [""])[0]
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    line = lines[-1] if lines else None
  return f"{type(error).__name__}: {message} ({path}" + (f", line {line})" if line else ")")
