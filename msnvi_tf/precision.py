"""Mixed precision: choosing and applying a Keras dtype policy.

Variables stay float32 under every policy; beliefs, likelihood parameters,
log-probabilities, log-sum-exp and the objectives are float32 as well (see
`beliefs`, `likelihoods`, `objectives`); only the networks' matmuls and
convolutions run in float16 / bfloat16. float16 training uses Keras' dynamic
loss scaling (`keras.optimizers.LossScaleOptimizer`, added by `Model.compile`).

"auto" picks mixed_float16 where a GPU is visible, mixed_bfloat16 on CPUs with
AMX-BF16 tiles (Sapphire Rapids and later), and float32 elsewhere. On a CPU with
only avx512_bf16 (AMD EPYC, bench/step_time.py, MNIST-TB L_ind step): bf16 was
1.19x faster than float32 without XLA and 1.16x slower with XLA; "auto" keeps
float32 there, the numerically safer choice at a similar speed.
"""
import contextlib
from typing import Tuple

import keras
import tensorflow as tf

__all__ = ["PRECISIONS", "cpu_flags", "default_precision", "resolve", "policy"]

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def cpu_flags(path="/proc/cpuinfo") -> frozenset:
  """The CPU feature flags of this machine (empty where /proc/cpuinfo is absent)."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def default_precision(gpus=None, flags=None) -> Tuple[str, str]:
  """`(policy name, reason)` that pays on this machine (see module docstring)."""
  gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
  flags = cpu_flags() if flags is None else flags
  if gpus:
    return "mixed_float16", f"{len(gpus)} GPU(s) visible"
  if "amx_bf16" in flags:
    return "mixed_bfloat16", "the CPU has AMX-BF16 tiles"
  if "avx512_bf16" in flags:
    return "float32", ("the CPU has avx512_bf16 but no AMX tiles; float32 "
                       "keeps full precision at a similar speed there")
  return "float32", "no GPU and no bf16 support on this CPU"


def resolve(name: str) -> Tuple[str, str]:
  """Maps a config's precision ("auto" or a policy name) to `(policy, reason)`."""
  if name not in PRECISIONS:
    raise ValueError(f"Unknown precision {name!r}; choose one of {PRECISIONS}.")
  if name == "auto":
    return default_precision()
  return name, "set in the config"


@contextlib.contextmanager
def policy(name: str):
  """Sets the global Keras dtype policy inside the block, then restores it."""
  name, _ = resolve(name)
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)
