"""Data sets, one module per data set, each exposing `make_datasets(config, start_step)`.

`make_datasets` is the `data` of a data set's registration
(`msnvi_tf.register_dataset`); the helpers below make any data set's pipeline.

`make_datasets` returns `(train, eval)` `tf.data.Dataset`s of dicts
`{name: [B, ...] float32}`: `train` is endless and its batch number s is a
function of the config's seed and s alone (`training_batches`), so a run resumed
at step s sees exactly the batches the uninterrupted run would have seen; `eval`
is one fixed pass over the evaluation split (`eval_batches`).

Incomplete data: a batch may hold `present`, `{name: [B] float32}` (1. observed,
0. absent) for some of its entries; an entry it does not name is observed, and
an absent entry's values are ignored but must be finite (e.g. zeros). A
plug-in data set puts its own masks there. `config.missing_rate` = p > 0 makes
them for a built-in one (`Missingness`): each source entry of each example is
absent with probability p, at least one present, drawn once per example from
the config's seed, so an example keeps its missing sources for the whole run
(missingness is a property of the data, not of the step) and a resumed run sees
the same masks. With `missing_handling="mask"` training batches carry the masks;
with "complete_only" (the usual workaround) the training set shrinks to the
examples whose sources are all present. The evaluation batches carry masks of
the test split drawn in the same way, so evaluation can report the bounds both
with and without them.
"""
import dataclasses
from typing import Callable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from msnvi_tf import registry
from msnvi_tf.core.model import PRESENT

__all__ = ["make_datasets", "split_masks", "test_batches", "check_finite", "check_examples",
           "Missingness", "missingness", "training_batches", "eval_batches", "PRESENT"]


def make_datasets(config, start_step: int = 0):
  """`(train, eval)` datasets of `config.dataset`; train begins at batch `start_step`."""
  return registry.for_config(config).make_datasets(config, start_step=start_step)


def split_masks(dataset: tf.data.Dataset):
  """`(complete, masked)`: `dataset`'s batches without their `present` masks, and
  `dataset` itself if it has masks (else None)."""
  if PRESENT not in dataset.element_spec:
    return dataset, None
  return dataset.map(lambda batch: {k: v for k, v in batch.items() if k != PRESENT}), dataset


def test_batches(config) -> tf.data.Dataset:
  """The complete test batches of `config` (no presence masks): what reports evaluate."""
  return split_masks(make_datasets(config)[1])[0]


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


@dataclasses.dataclass(frozen=True)
class Missingness:
  """Which source entries of which examples are absent (see the module docstring).

  Attributes:
    rate: p, the probability that a source entry of an example is absent.
    entries: the source entries that may be absent, e.g. ("top", "bottom").
    seed: the draw's seed (the config's).
    handling: "mask" (batches carry `present`) or "complete_only" (training
      keeps the complete examples only).
  """
  rate: float
  entries: Tuple[str, ...]
  seed: int
  handling: str = "mask"

  def masks(self, num: int, split: str) -> np.ndarray:
    """`[num, E]` float32 presence of the `entries` of examples 0..num-1 of `split`.

    Each entry absent with probability `rate`; where that leaves an example
    with none, one entry drawn uniformly is present. A function of (seed,
    split, num) alone.
    """
    salt = {"train": 0, "test": 1}[split]
    rng = np.random.default_rng([self.seed, salt, 0x4D5353])  # "MSS": missing sources
    absent = rng.random((num, len(self.entries))) < self.rate  # [N, E]
    keep = rng.integers(len(self.entries), size=num)  # [N]
    none = absent.all(-1)
    absent[none, keep[none]] = False
    return (~absent).astype(np.float32)


def missingness(config, entries) -> Optional[Missingness]:
  """The `Missingness` of `config` (`missing_rate`, `missing_handling`, `seed`) over
  a data set's source `entries` (names, or a function returning them, called only
  when needed); None for complete data (missing_rate 0)."""
  rate = float(config.missing_rate)
  if not rate:
    return None
  return Missingness(rate, tuple(entries() if callable(entries) else entries),
                     int(config.seed), config.missing_handling)


def _present(entries, masks):
  """`{entry: [B]}` of presence masks `[B, E]`."""
  return {e: masks[:, i] for i, e in enumerate(entries)}


def _permutation(num: int, seed: int, epoch):
  """The order of the `num` examples in `epoch`: `[num]` int64, stateless in (seed, epoch)."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(num, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))


def training_batches(examples: Mapping[str, object], batch_size: int, seed: int,
                     start_step: int = 0,
                     transform: Optional[Callable] = None,
                     what: str = "training data",
                     missing: Optional[Missingness] = None) -> tf.data.Dataset:
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
    missing: optional `Missingness` of the training split: batches carry
      `present` masks, or only the complete examples are served.

  Returns:
    A `tf.data.Dataset` of `{name: [B, ...]}` batches.

  Raises:
    ValueError: see `check_examples`; "complete_only" leaves no example.
  """
  arrays = check_examples(examples, what)
  num = len(next(iter(arrays.values())))
  masks = None
  if missing is not None:
    masks = missing.masks(num, "train")  # [N, E]
    if missing.handling == "complete_only":
      complete = masks.all(-1)
      if not complete.any():
        raise ValueError(
            f"{what}: with missing_rate={missing.rate} no training example keeps all of "
            f"{list(missing.entries)}; missing_handling='complete_only' has nothing to "
            "train on (lower missing_rate or use missing_handling='mask').")
      arrays = {name: a[complete] for name, a in arrays.items()}
      num, masks = int(complete.sum()), None
  first_epoch, offset = divmod(int(start_step) * int(batch_size), num)
  tensors = {name: tf.constant(a) for name, a in arrays.items()}
  masks = None if masks is None else tf.constant(masks)  # [N, E]

  def order(epoch):
    return _permutation(num, seed, epoch)[tf.where(epoch == first_epoch, offset, 0):]

  def gather(step, indices):
    batch = {name: tf.gather(t, indices) for name, t in tensors.items()}  # [B, ...]
    if transform is not None:
      batch = transform(batch, tf.stack([tf.constant(seed, tf.int64), step]))
    if masks is not None:
      batch[PRESENT] = _present(missing.entries, tf.gather(masks, indices))  # [B] each
    return batch

  indices = (tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
             .map(order)
             .rebatch(batch_size, drop_remainder=True))  # [B] int64 per step
  steps = tf.data.Dataset.range(int(start_step), np.iinfo(np.int64).max)
  return (tf.data.Dataset.zip(steps, indices)
          .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def eval_batches(examples: Mapping[str, object], batch_size: int,
                 transform: Optional[Callable] = None,
                 what: str = "evaluation data",
                 missing: Optional[Missingness] = None) -> tf.data.Dataset:
  """One pass over `examples` in order, in batches of `batch_size` (the last may be smaller).

  With `missing`, the batches also carry the test split's `present` masks
  (whatever its handling: evaluation reports both sets of bounds).

  Raises:
    ValueError: see `check_examples`.
  """
  arrays = dict(check_examples(examples, what))
  dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)
  if transform is not None:
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  if missing is not None:
    masks = missing.masks(len(next(iter(arrays.values()))), "test")  # [N, E]
    dataset = tf.data.Dataset.zip(
        dataset, tf.data.Dataset.from_tensor_slices(masks).batch(batch_size)).map(
            lambda batch, present: {**batch, PRESENT: _present(missing.entries, present)})
  return dataset.prefetch(tf.data.AUTOTUNE)
