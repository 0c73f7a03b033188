"""The machine a run uses: dtype policy, intra-op threads, XLA, distribution strategy.

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
mixed_bfloat16 only if bf16 is at least `BF16_MIN_SPEEDUP` times faster
(README, "Speed, precision and scale", gives the measured speed-ups;
bench/step_time.py measures them on any machine).
"""
import contextlib
import functools
import logging
import os
import time
from typing import Callable, Optional, Tuple

import keras
import tensorflow as tf

__all__ = ["PRECISIONS", "BF16_MIN_SPEEDUP", "cpu_flags", "bf16_matmul_speedup",
           "default_precision", "resolve", "policy", "make_strategy", "num_workers",
           "is_chief", "configure_threads", "resolve_jit"]

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

# A whole training step gains less than its matmuls, and bf16 costs precision:
# ask for a clear margin.
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


# Spellings of a config switch that is forced on (jit_compile).
ON = ("true", "on", "1")
# Progress goes to this logger; `bin/` scripts print it to stdout.
log = logging.getLogger("msnvi_tf")


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
  """The `tf.distribute` strategy for `config.distribute`.

  "auto": MultiWorkerMirroredStrategy when TF_CONFIG is set (several hosts or
  processes), MirroredStrategy with more than one GPU, else the default
  (single-device) strategy. "multi_worker", "mirrored" and "none" force one.
  """
  if kind == "auto":
    if os.environ.get("TF_CONFIG"):
      kind = "multi_worker"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
      kind = "mirrored"
    else:
      kind = "none"
  if kind == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if kind == "mirrored":
    return tf.distribute.MirroredStrategy()
  if kind == "none":
    return tf.distribute.get_strategy()
  raise ValueError(f"Unknown distribute {kind!r}; choose one of "
                   "auto, none, mirrored, multi_worker.")


def configure_threads(value, gpus=None, cores=None, xla=False) -> str:
  """Applies `config.intra_op_threads` (before TF starts); returns it for the log.

  "auto": 1 on CPU-only machines with at most 2 cores when XLA is not forced
  on (`xla`), otherwise TensorFlow's default (0, one thread per core);
  TF_NUM_INTRAOP_THREADS, if set, wins. With one thread per op, independent
  ops (each source's decoder, a layer's two backward matmuls) run side by side,
  one per core, instead of each splitting across both (README, "Speed,
  precision and scale", has the measured gain). XLA:CPU runs one op at a time
  and needs the intra-op threads. Once TF has started the setting can no
  longer change; that is logged, not an error.
  """
  if str(value).lower() == "auto":
    if os.environ.get("TF_NUM_INTRAOP_THREADS"):
      return f"{os.environ['TF_NUM_INTRAOP_THREADS']} (TF_NUM_INTRAOP_THREADS)"
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    threads = 1 if not gpus and cores <= 2 and not xla else 0
  else:
    try:
      threads = int(value)
    except ValueError:
      raise ValueError(
          f"intra_op_threads must be 'auto' or an integer, got {value!r}.") from None
  current = tf.config.threading.get_intra_op_parallelism_threads()
  if threads <= 0 or threads == current:
    return str(current or "TF default")
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:
    log.warning("TensorFlow has already started: intra-op threads stay at %s "
                "(wanted %d).", current or "TF default", threads)
    return str(current or "TF default")
  return str(threads)


def intra_op_threads() -> int:
  """The intra-op threads TensorFlow runs ops with (its default 0: one per core, counted)."""
  return (tf.config.threading.get_intra_op_parallelism_threads()
          or len(os.sched_getaffinity(0)))


def resolve_jit(value, strategy=None, gpus=None) -> bool:
  """`config.jit_compile`: True/False, or "auto" = XLA on a GPU with a single replica.

  On CPUs oneDNN's matmuls and convolutions beat XLA:CPU's for the MNIST and
  CUB models and the Bernoulli heads are fused anyway (see
  `kernels.compiled_kernels`; bench/step_time.py measures both), so "auto"
  leaves XLA off there; on GPUs it fuses the objectives' many small ops.
  Multi-replica training keeps the collective all-reduce outside XLA, so "auto"
  leaves XLA off there too. `gpus` defaults to this machine's.
  """
  text = str(value).lower()
  if text in ON:
    return True
  if text in ("false", "off", "0"):
    return False
  if text == "auto":
    strategy = strategy or tf.distribute.get_strategy()
    if gpus is None:
      gpus = tf.config.list_physical_devices("GPU")
    return strategy.num_replicas_in_sync == 1 and bool(gpus)
  raise ValueError(f"jit_compile must be True, False or 'auto', got {value!r}.")


def num_workers(strategy) -> int:
  """How many workers (chief included) `strategy` trains on: 1 without a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return max(1, sum(len(spec.get(kind, ())) for kind in ("chief", "worker")))


def is_chief(strategy) -> bool:
  """Whether this worker writes the workdir (the chief, or worker 0 without one)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
