"""Data sets, one module per data set, each exposing `make_datasets(config, start_step)`.

`make_datasets` is the `data` of a data set's registration
(`msnvi_tf.register_dataset`); the helpers below make any data set's pipeline.

`make_datasets` returns `(train, eval)` `tf.data.Dataset`s of dicts
`{name: [B, ...] float32}`: `train` is endless and its batch number s is a
function of the config's seed and s alone (`training_batches`), so a run resumed
at step s sees exactly the batches the uninterrupted run would have seen; `eval`
is one fixed pass over the evaluation split (`eval_batches`).
"""
from typing import Callable, Mapping, Optional

import numpy as np
import tensorflow as tf

from msnvi_tf import registry

__all__ = ["make_datasets", "check_finite", "check_examples",
           "training_batches", "eval_batches"]

def make_datasets(config, start_step: int = 0):
  """`(train, eval)` datasets of `config.dataset`; train begins at batch `start_step`."""
  return registry.for_config(config).make_datasets(config, start_step=start_step)


def check_finite(arrays: Mapping[str, np.ndarray], what: str):
  """Raises ValueError naming the entry, the first example and the count of NaN/inf values.

  Args:
    arrays: `{name: [N, ...]}` examples along the first axis.
    what: the data set, for the message.
  """
  for name, array in arrays.items():
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
      finite = np.isfinite(array)
      bad = int(np.size(array) - np.count_nonzero(finite))
      if bad:
        first = int(np.argmin(finite.reshape(len(array), -1).all(-1))) if array.ndim else 0
        raise ValueError(
            f"{what}: entry {name!r} has {bad} NaN or infinite value(s), the first "
            f"in example {first}; clean the data before training.")


def check_examples(examples: Mapping[str, object], what: str) -> Mapping[str, np.ndarray]:
  """Stacks `{name: examples}` into `{name: [N, ...] array}`, with clear errors.

  Raises:
    ValueError: no entries, no examples, entries of different lengths, an
      example whose shape differs from the entry's first, or NaN/inf values;
      each message names the entry (and the example).
  """
  if not examples:
    raise ValueError(f"{what} has no entries.")
  arrays = {}
  for name, values in examples.items():
    if isinstance(values, tf.Tensor):
      values = values.numpy()
    if not isinstance(values, np.ndarray):
      values = list(values)
      shapes = [np.shape(v) for v in values]
      for n, shape in enumerate(shapes):
        if shape != shapes[0]:
          raise ValueError(
              f"{what}: example {n} of entry {name!r} has shape {shape}, the "
              f"entry's first example {shapes[0]}; every example must have one shape.")
      values = np.asarray(values)
    arrays[name] = values
  lengths = {name: len(a) for name, a in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"{what}: the entries hold different numbers of examples {lengths}.")
  if not next(iter(lengths.values())):
    raise ValueError(f"{what} is empty (0 examples); it needs at least one.")
  check_finite(arrays, what)
  return arrays


def _permutation(num: int, seed: int, epoch):
  """The order of the `num` examples in `epoch`: `[num]` int64, stateless in (seed, epoch)."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(num, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))


def training_batches(examples: Mapping[str, object], batch_size: int, seed: int,
                     start_step: int = 0,
                     transform: Optional[Callable] = None,
                     what: str = "training data") -> tf.data.Dataset:
  """The endless training stream from batch `start_step` on, a function of (seed, step).

  The examples are served epoch after epoch, each epoch in its own random order
  (a stateless shuffle of (seed, epoch)); batch s holds positions
  [s B, (s + 1) B) of that stream (batches may span two epochs). `transform`
  (per-batch augmentation: binarisation, noise) gets the stateless seed
  (seed, s). So the batches from `start_step` on are exactly those an
  uninterrupted run sees at those steps: resuming needs no iterator state.

  Args:
    examples: `{name: [N, ...]}` arrays (or sequences of equal-shape examples).
    batch_size: B.
    seed: the data seed (`config.seed`).
    start_step: the first batch served.
    transform: optional `fn(batch, seed) -> batch`, `seed` a `[2]` int64 tensor.
    what: names the data set in error messages.

  Returns:
    A `tf.data.Dataset` of `{name: [B, ...]}` batches.

  Raises:
    ValueError: see `check_examples`.
  """
  arrays = check_examples(examples, what)
  num = len(next(iter(arrays.values())))
  first_epoch, offset = divmod(int(start_step) * int(batch_size), num)
  tensors = {name: tf.constant(a) for name, a in arrays.items()}

  def order(epoch):
    return _permutation(num, seed, epoch)[tf.where(epoch == first_epoch, offset, 0):]

  def gather(step, indices):
    batch = {name: tf.gather(t, indices) for name, t in tensors.items()}  # [B, ...]
    if transform is None:
      return batch
    return transform(batch, tf.stack([tf.constant(seed, tf.int64), step]))

  indices = (tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
             .map(order)
             .rebatch(batch_size, drop_remainder=True))  # [B] int64 per step
  steps = tf.data.Dataset.range(int(start_step), np.iinfo(np.int64).max)
  return (tf.data.Dataset.zip(steps, indices)
          .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def eval_batches(examples: Mapping[str, object], batch_size: int,
                 transform: Optional[Callable] = None,
                 what: str = "evaluation data") -> tf.data.Dataset:
  """One pass over `examples` in order, in batches of `batch_size` (the last may be smaller).

  Raises:
    ValueError: see `check_examples`.
  """
  dataset = tf.data.Dataset.from_tensor_slices(dict(check_examples(examples, what)))
  dataset = dataset.batch(batch_size)
  if transform is not None:
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE)
