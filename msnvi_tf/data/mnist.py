"""Randomly binarised MNIST as multiple information sources (Sec. 5.2).

Variants (the sources are the encoders' inputs, the targets the decoders'):
  mnist_tb  sources = targets = "top", "bottom": rows 0-13 / 14-27, 392 pixels each.
  mnist_qu  sources = targets = "q0".."q3": 14x14 quarters (top-left, top-right,
            bottom-left, bottom-right), 196 pixels each.
  mnist_no  sources "noisy0".."noisy3": the whole binarised digit (784) with
            independent bit-flip noise of probability `flip_prob` (0.05); target
            "image": the noise-free binarised digit.
With `config.use_label`, a one-hot "label" [10] is both a source and a target.

Binarisation: a pixel with intensity v in [0, 1] is 1 with probability v. The
training set is binarised (and, for mnist_no, corrupted) afresh every time an
example is served, from seeds drawn by a seeded `tf.data.Dataset.random`; the
test set is binarised once, from `config.eval_seed`, so every evaluation sees
the same binary images. The images are read by `mnist_files`.

Views: each variant is a view function `view(image, seed) -> {name: [B, D]}` of
binary digits `image` `[B, 28, 28]` float32 and a stateless seed `[2]` for any
noise of its own (`VIEWS`). Any other view reuses the loading, binarisation,
splits and batching; e.g. a digit and its 90° rotation as two sources:

  def digit_and_rotation(image, seed):
    del seed  # no noise
    rotated = tf.reverse(tf.transpose(image, [0, 2, 1]), [1])  # np.rot90
    return {"digit": tf.reshape(image, [-1, 784]),
            "rotated": tf.reshape(rotated, [-1, 784])}

  train_ds, eval_ds = mnist.make_datasets(config, view=digit_and_rotation)
"""
import functools
from typing import Callable, Dict, Optional

import tensorflow as tf

from msnvi_tf import data as data_lib
from msnvi_tf.data import mnist_files

__all__ = [
    "IMAGE_SIZE",
    "NUM_PIXELS",
    "NUM_CLASSES",
    "VARIANTS",
    "VIEWS",
    "source_shapes",
    "target_shapes",
    "binarise",
    "top_bottom",
    "quarters",
    "noisy_copies",
    "view_of",
    "split_image",
    "assemble_image",
    "make_examples",
    "make_test_examples",
    "make_datasets",
]

IMAGE_SIZE = mnist_files.IMAGE_SIZE
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10
_HALF = IMAGE_SIZE // 2

# variant -> {source: per-example shape}; the parts of the image each source sees.
VARIANTS = {
    "mnist_tb": {"top": (392,), "bottom": (392,)},
    "mnist_qu": {f"q{i}": (196,) for i in range(4)},
    "mnist_no": {f"noisy{i}": (NUM_PIXELS,) for i in range(4)},
}

# view(image [B, 28, 28] binary float32, seed [2]) -> {name: [B, D] float32}.
View = Callable[[tf.Tensor, Optional[tf.Tensor]], Dict[str, tf.Tensor]]


def _check_variant(variant):
  if variant not in VARIANTS:
    raise ValueError(f"Unknown MNIST variant {variant!r}; choose one of "
                     f"{sorted(VARIANTS)}.")


def source_shapes(variant: str, use_label: bool = False) -> Dict[str, tuple]:
  """`{source: per-example shape}` of a variant, in source order."""
  _check_variant(variant)
  shapes = dict(VARIANTS[variant])
  if use_label:
    shapes["label"] = (NUM_CLASSES,)
  return shapes


def target_shapes(variant: str, use_label: bool = False) -> Dict[str, tuple]:
  """`{target: per-example shape}`: the sources, except mnist_no models the clean "image"."""
  _check_variant(variant)
  shapes = {"image": (NUM_PIXELS,)} if variant == "mnist_no" else dict(VARIANTS[variant])
  if use_label:
    shapes["label"] = (NUM_CLASSES,)
  return shapes


def binarise(intensity, seed):
  """Bernoulli draw x_i ~ Ber(v_i) of intensities v in [0, 1]; stateless in `seed` [2]."""
  return tf.cast(tf.random.stateless_uniform(tf.shape(intensity), seed) < intensity,
                 tf.float32)


def _flat(image):
  """`[B, H, W]` -> `[B, H * W]`."""
  return tf.reshape(image, [-1, image.shape[1] * image.shape[2]])


def top_bottom(image, seed=None) -> Dict[str, tf.Tensor]:
  """The mnist_tb view: image `[B, 28, 28]` -> {"top", "bottom"} `[B, 392]` (no noise)."""
  del seed  # no noise
  return {"top": _flat(image[:, :_HALF]), "bottom": _flat(image[:, _HALF:])}


def quarters(image, seed=None) -> Dict[str, tf.Tensor]:
  """The mnist_qu view: image `[B, 28, 28]` -> {"q0".."q3"} `[B, 196]` (no noise).

  q0..q3 are the top-left, top-right, bottom-left and bottom-right quarters.
  """
  del seed  # no noise
  parts = (image[:, :_HALF, :_HALF], image[:, :_HALF, _HALF:],
           image[:, _HALF:, :_HALF], image[:, _HALF:, _HALF:])  # each [B, 14, 14]
  return {f"q{i}": _flat(q) for i, q in enumerate(parts)}


def noisy_copies(image, seed, flip_prob: float = 0.05) -> Dict[str, tf.Tensor]:
  """The mnist_no view: the clean "image" and four bit-flipped copies, all `[B, 784]`.

  Args:
    image: `[B, 28, 28]` binary float32.
    seed: `[2]` stateless seed; the flips are drawn from `fold_in(seed, 1)`.
    flip_prob: probability of flipping each bit of each copy, independently.

  Returns:
    {"image", "noisy0".."noisy3"} `[B, 784]` float32.
  """
  clean = _flat(image)  # [B, 784]
  num = len(VARIANTS["mnist_no"])
  flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
  flips = tf.cast(tf.random.stateless_uniform(
      tf.concat([[num], tf.shape(clean)], 0), flip_seed) < flip_prob,
                  tf.float32)  # [4, B, 784]
  noisy = tf.abs(clean[None] - flips)  # [4, B, 784]
  return {"image": clean, **{f"noisy{i}": noisy[i] for i in range(num)}}


VIEWS = {"mnist_tb": top_bottom, "mnist_qu": quarters, "mnist_no": noisy_copies}


def view_of(config) -> View:
  """The view of `config.dataset`, with mnist_no's `config.flip_prob`."""
  _check_variant(config.dataset)
  if config.dataset == "mnist_no":
    return functools.partial(noisy_copies, flip_prob=config.flip_prob)
  return VIEWS[config.dataset]


def split_image(image, variant: str) -> Dict[str, tf.Tensor]:
  """Cuts binary images `[B, 784]` into the variant's targets (no noise).

  Returns:
    mnist_tb: {"top", "bottom"} `[B, 392]`; mnist_qu: {"q0".."q3"} `[B, 196]`;
    mnist_no: {"image": [B, 784]}.
  """
  _check_variant(variant)
  if variant == "mnist_no":
    return {"image": image}
  return VIEWS[variant](tf.reshape(image, [-1, IMAGE_SIZE, IMAGE_SIZE]))


def assemble_image(parts, variant: str):
  """Inverse of `split_image`: parts `{name: [..., D]}` -> images `[..., 28, 28]`."""
  _check_variant(variant)
  if variant == "mnist_qu":
    lead = tf.shape(parts["q0"])[:-1]
    q = [tf.reshape(parts[f"q{i}"], tf.concat([lead, [_HALF, _HALF]], 0))
         for i in range(4)]  # each [..., 14, 14]
    return tf.concat([tf.concat(q[:2], -1), tf.concat(q[2:], -1)], -2)  # [..., 28, 28]
  if variant == "mnist_tb":
    flat = tf.concat([parts["top"], parts["bottom"]], -1)  # [..., 784]
  else:
    flat = parts["image"]  # [..., 784]
  return tf.reshape(flat, tf.concat([tf.shape(flat)[:-1], [IMAGE_SIZE, IMAGE_SIZE]], 0))


def make_examples(images, labels, seed, view: View,
                  use_label: bool = False) -> Dict[str, tf.Tensor]:
  """Binarises a batch of images and builds the view's sources and targets.

  Args:
    images: `[B, 28, 28]` uint8 (or float in [0, 255]) intensities.
    labels: `[B]` integer classes.
    seed: `[2]` stateless seed; binarisation and the view's noise are functions of it.
    view: `view(image [B, 28, 28], seed [2]) -> {name: [B, D]}`, e.g. of `VIEWS`.
    use_label: add the one-hot "label" `[B, 10]`.

  Returns:
    `{name: [B, D] float32}` holding every source and target of the view.
  """
  intensity = tf.cast(images, tf.float32) / 255.  # [B, 28, 28]
  examples = dict(view(binarise(intensity, seed), seed))
  if use_label:
    examples["label"] = tf.one_hot(tf.cast(labels, tf.int32), NUM_CLASSES)
  return examples


def _subset(images, labels, size):
  return (images, labels) if not size else (images[:size], labels[:size])


def make_test_examples(config, view: Optional[View] = None) -> Dict[str, tf.Tensor]:
  """The fixed binarisation of the first `config.eval_size` test images (0: all 10,000).

  Args:
    config: the data set's config.
    view: the examples' view; default `view_of(config)`.

  Returns:
    `{name: [N, D] float32}`.
  """
  images, labels = _subset(*mnist_files.load_split(config, "test"), config.eval_size)
  return make_examples(images, labels, tf.constant([config.eval_seed, 0], tf.int64),
                       view or view_of(config), config.use_label)


def _source_entries(config, view: View):
  """The batch entries that are sources (those `missing_rate` may hide): a
  variant's (`source_shapes`), or every entry a user's `view` makes; + "label"."""
  if config.dataset in VARIANTS:
    return tuple(source_shapes(config.dataset, config.use_label))
  names = tuple(view(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE]), tf.zeros([2], tf.int64)))
  return names + (("label",) if config.use_label else ())


def make_datasets(config, start_step: int = 0, view: Optional[View] = None):
  """`(train, eval)` datasets of `{name: [B, D] float32}` batches.

  Train: the first `config.train_size` training images (0: all 60,000), in a new
  random order every epoch, binarised anew whenever served; batch s is a function
  of (config.seed, s) (`data.training_batches`), the first is batch `start_step`.
  Eval: the fixed binarisation of `make_test_examples`, batched by
  `config.eval_batch_size`.

  Args:
    config: the data set's config.
    start_step: the first training batch served.
    view: `view(image [B, 28, 28], seed [2]) -> {name: [B, D]}` (see the module
      docstring); default `view_of(config)`.

  Returns:
    `(train_ds, eval_ds)`.
  """
  view = view or view_of(config)
  images, labels = _subset(*mnist_files.load_split(config, "train"), config.train_size)

  def build(batch, seed):
    return make_examples(batch["images"], batch["labels"], seed, view, config.use_label)

  missing = data_lib.missingness(config, lambda: _source_entries(config, view))
  train_ds = data_lib.training_batches(
      {"images": images, "labels": labels},  # [N, 28, 28] uint8, [N] uint8
      config.batch_size, config.seed, start_step, build,
      what=f"{config.dataset} training images", missing=missing)
  eval_ds = data_lib.eval_batches(make_test_examples(config, view),
                                  config.eval_batch_size,
                                  what=f"{config.dataset} test images", missing=missing)
  return train_ds, eval_ds
