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


def get_config(name: str):
  """The default config of data set `name`.

  Raises:
    ValueError: unknown data set.
  """
  if name not in CONFIGS:
    raise ValueError(
        f"Unknown dataset {name!r}; choose one of {sorted(CONFIGS)}.")
  module, arg = CONFIGS[name]
  get = importlib.import_module(module).get_config
  return get() if arg is None else get(arg)
