"""Experiment configs: a flat dict with attribute access and typed overrides.

Configs are plain Python (`configs/<name>.py: get_config()`); `Config.override`
applies `key=value` strings from the command line, parsing each value to the
type of the default it replaces, and refuses unknown keys.
"""
import ast
import importlib
import json
from typing import Any, Iterable, Mapping

__all__ = ["Config", "dataset_module"]


def dataset_module(registry: Mapping[str, str], package: str, dataset: str):
  """Imports `<package>.<registry[dataset]>`; a clear error for unknown names."""
  if dataset not in registry:
    raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(registry)}.")
  return importlib.import_module(f"{package}.{registry[dataset]}")


class Config(dict):
  """A dict whose keys are also attributes: `config.num_samples`."""

  def __getattr__(self, key):
    try:
      return self[key]
    except KeyError:
      raise AttributeError(
          f"Config has no field {key!r}; fields: {sorted(self)}") from None

  def __setattr__(self, key, value):
    self[key] = value

  def copy(self):
    return Config(self)

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
            f"Unknown config field {key!r} in override {assignment!r}; fields: "
            f"{sorted(config)}")
      config[key] = _parse(key, text.strip(), config[key])
    return config

  def to_json(self) -> str:
    return json.dumps(dict(self), indent=2, sort_keys=True, default=list)


def _parse(key: str, text: str, default: Any):
  if isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if default is None:
      return text
    raise ValueError(
        f"Cannot parse {text!r} for config field {key!r} (default "
        f"{default!r}).") from None
  if default is None or isinstance(value, type(default)):
    return value
  if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
    return type(default)(value)
  raise ValueError(
      f"Config field {key!r} expects {type(default).__name__} (default "
      f"{default!r}), got {text!r}.")
