"""Experiment configs, one module per data set (paper Tables 3-6).

`get_config(name)` returns the config of a data set name; every config has the
fields `msnvi_tf.runtime.training.train_and_evaluate` reads (see `configs/toy.py`).
`split_sizes(name)` gives the real data sets' split sizes for
`msnvi_tf.runtime.config.validate`.
"""
import importlib

__all__ = ["CONFIGS", "SPLIT_SIZES", "get_config", "split_sizes"]

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

# The real data sets' (train, test) sizes: their train_size / eval_size run from
# 0 (all) to these. The synthetic ones (toy, pendulum, shapes) have no fixed
# split: their sizes are the config's own, any positive count.
SPLIT_SIZES = {
    "mnist_tb": (60_000, 10_000),
    "mnist_qu": (60_000, 10_000),
    "mnist_no": (60_000, 10_000),
    "cub": (3_000, 3_033),  # CUB-200 2010.
}


def split_sizes(name: str):
  """`{"train": n, "test": m}` of real data set `name`; None for synthetic data."""
  if name not in SPLIT_SIZES:
    return None
  train, test = SPLIT_SIZES[name]
  return {"train": train, "test": test}


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
