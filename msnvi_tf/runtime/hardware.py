"""Mixed precision: choosing and applying a Keras dtype policy.

Variables stay float32 under every policy; beliefs, likelihood parameters,
log-probabilities, log-sum-exp and the objectives are float32 as well (see
`beliefs`, `likelihoods`, `objectives`); only the networks' matmuls and
convolutions run in float16 / bfloat16. float16 training uses Keras' dynamic
loss scaling (`keras.optimizers.LossScaleOptimizer`, added by `Model.compile`).

"auto" picks mixed_float16 where a GPU is visible, mixed_bfloat16 on CPUs with
AMX-BF16 tiles (Sapphire Rapids and later), and float32 on CPUs without bf16
instructions. On CPUs with avx512_bf16 but no AMX, bf16 matmuls are slower than
float32 on some CPU models and faster on others, so "auto" measures: it times a
bf16 and a float32 matmul (about 0.2 s, once per process) and picks
mixed_bfloat16 only if bf16 is at least `BF16_MIN_SPEEDUP` times faster. On the
2-core AMD EPYC here bf16 matmuls run 1.6x faster and the MNIST-TB L_ind step
1.24x (bench/step_time.py, no XLA).
"""
import contextlib
import functools
import time
from typing import Callable, Optional, Tuple

import keras
import tensorflow as tf

__all__ = ["PRECISIONS", "BF16_MIN_SPEEDUP", "cpu_flags", "bf16_matmul_speedup",
           "default_precision", "resolve", "policy"]

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

# A whole training step gains less than its matmuls (MNIST-TB: matmuls 1.6x,
# step 1.24x), and bf16 costs precision: ask for a clear margin.
BF16_MIN_SPEEDUP = 1.3


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


@functools.lru_cache(maxsize=None)
def bf16_matmul_speedup(size: int = 768, repeats: int = 5) -> float:
  """time(float32 matmul) / time(bfloat16 matmul) on this machine's CPU.

  The fastest of `repeats` timings of 4 square `size` matmuls each, for both
  dtypes interleaved (so a busy neighbour slows both alike). Cached per process.
  """
  with tf.device("/CPU:0"):
    a = tf.random.stateless_normal([size, size], seed=[0, 0])
    operands = {dtype: (tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype))
                for dtype in (tf.float32, tf.bfloat16)}
    run = tf.function(lambda x, y: tf.reduce_sum(tf.cast(
        tf.matmul(tf.matmul(x, y), tf.matmul(y, x)) + tf.matmul(x, x), tf.float32)))
    best = {}
    for _ in range(repeats + 1):  # the first round traces and warms up
      for dtype, (x, y) in operands.items():
        start = time.perf_counter()
        run(x, y).numpy()
        best.setdefault(dtype, []).append(time.perf_counter() - start)
  return min(best[tf.float32][1:]) / min(best[tf.bfloat16][1:])


def default_precision(gpus=None, flags=None,
                      bf16_speedup: Optional[Callable[[], float]] = None
                      ) -> Tuple[str, str]:
  """`(policy name, reason)` that pays on this machine (see module docstring).

  Args:
    gpus: visible GPUs (default: this machine's).
    flags: CPU feature flags (default: this machine's).
    bf16_speedup: callable measuring bf16 / float32 matmul speed (default
      `bf16_matmul_speedup`); called only on CPUs with avx512_bf16 and no AMX.
  """
  gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
  flags = cpu_flags() if flags is None else flags
  if gpus:
    return "mixed_float16", f"{len(gpus)} GPU(s) visible"
  if "amx_bf16" in flags:
    return "mixed_bfloat16", "the CPU has AMX-BF16 tiles"
  if "avx512_bf16" in flags:
    speedup = (bf16_speedup or bf16_matmul_speedup)()
    measured = (f"the CPU has avx512_bf16 but no AMX tiles, and bf16 matmuls ran "
                f"{speedup:.2f}x as fast as float32 here")
    if speedup >= BF16_MIN_SPEEDUP:
      return "mixed_bfloat16", measured
    return "float32", f"{measured} (bf16 needs {BF16_MIN_SPEEDUP}x to pay)"
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
