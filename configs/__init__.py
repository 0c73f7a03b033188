"""Experiment configs, one module per data set (paper Tables 3-6).

`get_config(name)` returns the config of a data set name; every config has the
fields `msnvi_tf.training.train_and_evaluate` reads (see `configs/toy.py`).
"""
import importlib

__all__ = ["CONFIGS", "get_config"]

# data set name -> (module, argument of its get_config or None).
CONFIGS = {
    "toy": ("configs.toy", None),
    "pendulum": ("configs.pendulum", None),
    "mnist_tb": ("configs.mnist", "mnist_tb"),
    "mnist_qu": ("configs.mnist", "mnist_qu"),
    "mnist_no": ("configs.mnist", "mnist_no"),
    "cub": ("configs.cub", "cub"),
    "shapes": ("configs.cub", "shapes"),
}


def get_config(name: str, variant: str = "paper"):
  """The config of data set `name`: the paper's, or a named `variant` of it.

  A config module may define `VARIANTS = {variant: {field: value}}`, fields that
  replace the paper's (e.g. a faster learning-rate schedule); "paper" is the
  config as the paper gives it.

  Raises:
    ValueError: unknown data set or variant.
  """
  if name not in CONFIGS:
    raise ValueError(
        f"Unknown dataset {name!r}; choose one of {sorted(CONFIGS)}.")
  module, arg = CONFIGS[name]
  module = importlib.import_module(module)
  config = module.get_config() if arg is None else module.get_config(arg)
  variants = getattr(module, "VARIANTS", {})
  if variant != "paper":
    if variant not in variants:
      raise ValueError(f"Unknown variant {variant!r} of {name}; choose one of "
                       f"{['paper'] + sorted(variants)}.")
    config.update(variants[variant])
  return config
