"""Data sets, one module per data set, each exposing `make_datasets(config)`.

`make_datasets` returns `(train, eval)` `tf.data.Dataset`s of dicts
`{name: [B, ...] float32}`: `train` repeats forever and is shuffled from the
config's seed, `eval` is one fixed pass over the evaluation split.
"""
from typing import Mapping

import numpy as np

from msnvi_tf.config import dataset_module

__all__ = ["DATA_MODULES", "make_datasets", "check_finite"]

# config.dataset -> module under msnvi_tf.data.
DATA_MODULES = {
    "toy": "toy",
    "pendulum": "pendulum",
    "mnist_tb": "mnist",
    "mnist_qu": "mnist",
    "mnist_no": "mnist",
    "cub": "cub",
    "shapes": "shapes",
}


def make_datasets(config):
  """`(train, eval)` datasets of `config.dataset` (see module docstring)."""
  return dataset_module(DATA_MODULES, __name__, config.dataset).make_datasets(config)


def check_finite(arrays: Mapping[str, np.ndarray], what: str):
  """Raises ValueError naming the entry and count of NaN/inf values, if any."""
  for name, array in arrays.items():
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
      bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
      if bad:
        raise ValueError(
            f"{what}: entry {name!r} has {bad} NaN or infinite value(s) of "
            f"{array.size}; clean the data before training.")
