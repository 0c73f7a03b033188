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
the same binary images.

Images come from the four standard IDX gz files in a directory (`config.data_dir`,
else the environment variable MSNVI_MNIST_DIR, else `<repo>/../shared/data/mnist`
when it exists) or from a prepared TFDS `mnist` (`config.data_source = "tfds"`,
or "auto" when no IDX directory is found). Nothing is ever downloaded.
"""
import gzip
import os
import struct
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from msnvi_tf import data as data_lib

__all__ = [
    "IMAGE_SIZE",
    "NUM_PIXELS",
    "NUM_CLASSES",
    "VARIANTS",
    "ENV_VAR",
    "IDX_FILES",
    "default_data_dir",
    "resolve_data_dir",
    "read_idx",
    "load_idx_split",
    "load_tfds_split",
    "load_split",
    "source_shapes",
    "target_shapes",
    "binarise",
    "split_image",
    "assemble_image",
    "make_examples",
    "make_test_examples",
    "make_datasets",
]

IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10
ENV_VAR = "MSNVI_MNIST_DIR"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_MAGIC = {3: 2051, 1: 2049}  # number of dimensions -> magic number.

# variant -> {source: per-example shape}; the parts of the image each source sees.
VARIANTS = {
    "mnist_tb": {"top": (392,), "bottom": (392,)},
    "mnist_qu": {f"q{i}": (196,) for i in range(4)},
    "mnist_no": {f"noisy{i}": (NUM_PIXELS,) for i in range(4)},
}

_HOW_TO_PROVIDE = (
    "Provide MNIST as the four IDX gz files ({files}) in a directory and pass it "
    "with --data_dir (config.data_dir) or the environment variable {env}, or "
    "prepare TFDS mnist once on a machine with network (`tfds build mnist`) and "
    "set data_source='tfds' (and tfds_data_dir if it is not the TFDS default).")


def _how_to_provide():
  files = ", ".join(f for pair in IDX_FILES.values() for f in pair)
  return _HOW_TO_PROVIDE.format(files=files, env=ENV_VAR)


def _check_variant(variant):
  if variant not in VARIANTS:
    raise ValueError(f"Unknown MNIST variant {variant!r}; choose one of "
                     f"{sorted(VARIANTS)}.")


def default_data_dir() -> str:
  """`<repo>/../shared/data/mnist`, relative to this package's repository root."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, os.pardir, "shared", "data", "mnist"))


def resolve_data_dir(data_dir: str = "") -> Optional[str]:
  """The IDX directory: `data_dir`, else $MSNVI_MNIST_DIR, else the default if it exists.

  Returns:
    A path (not checked when given explicitly), or None when nothing is set and
    the default directory does not exist.
  """
  if data_dir:
    return data_dir
  if os.environ.get(ENV_VAR):
    return os.environ[ENV_VAR]
  default = default_data_dir()
  return default if os.path.isdir(default) else None


def read_idx(path: str, ndim: int) -> np.ndarray:
  """Reads one gzip'd IDX file of unsigned bytes.

  Args:
    path: the `.gz` file.
    ndim: 3 for images (magic 2051), 1 for labels (magic 2049).

  Returns:
    uint8 array of the shape in the header.

  Raises:
    FileNotFoundError: no file at `path` (the message says how to provide it).
    ValueError: not gzip, wrong magic number or truncated payload.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MNIST file {path} not found. {_how_to_provide()}")
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"MNIST file {path} is not a readable gzip file ({e}); it "
                     f"is corrupt. {_how_to_provide()}") from None
  header = 4 * (ndim + 1)
  if len(raw) < header:
    raise ValueError(f"MNIST file {path} is truncated ({len(raw)} bytes). "
                     f"{_how_to_provide()}")
  magic, *dims = struct.unpack(f">{ndim + 1}i", raw[:header])
  if magic != _IDX_MAGIC[ndim]:
    raise ValueError(f"MNIST file {path} has magic number {magic}, expected "
                     f"{_IDX_MAGIC[ndim]}; it is corrupt or the wrong file. "
                     f"{_how_to_provide()}")
  size = int(np.prod(dims))
  if len(raw) - header != size:
    raise ValueError(f"MNIST file {path} holds {len(raw) - header} data bytes, "
                     f"its header promises {size} ({dims}); it is corrupt. "
                     f"{_how_to_provide()}")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def load_idx_split(data_dir: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """`(images [N, 28, 28] uint8, labels [N] uint8)` of "train" or "test" from IDX files."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"MNIST directory {data_dir} does not exist. "
                            f"{_how_to_provide()}")
  image_file, label_file = IDX_FILES[split]
  images = read_idx(os.path.join(data_dir, image_file), 3)
  labels = read_idx(os.path.join(data_dir, label_file), 1)
  if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(images) != len(labels):
    raise ValueError(
        f"MNIST {split} files in {data_dir} disagree: images {images.shape}, labels "
        f"{labels.shape}; expected [N, 28, 28] and [N]. {_how_to_provide()}")
  return images, labels


def load_tfds_split(split: str, tfds_data_dir: str = "") -> Tuple[np.ndarray, np.ndarray]:
  """`(images [N, 28, 28] uint8, labels [N] uint8)` from a prepared TFDS `mnist` (no download)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    dataset = tfds.load("mnist", split=split, data_dir=tfds_data_dir or None,
                        download=False)
  except AssertionError as e:  # TFDS's "could not find data in <dir>".
    raise FileNotFoundError(f"TFDS mnist is not prepared ({e}). "
                            f"{_how_to_provide()}") from None
  batches = list(tfds.as_numpy(dataset.batch(10_000)))
  images = np.concatenate([b["image"] for b in batches]).astype(np.uint8)
  labels = np.concatenate([b["label"] for b in batches]).astype(np.uint8)
  return images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), labels


def _tfds_prepared(tfds_data_dir: str) -> bool:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder("mnist", data_dir=tfds_data_dir or None).is_prepared()


def load_split(config, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Images and labels of a split from IDX files or TFDS, per `config.data_source`.

  "idx" reads the directory of `resolve_data_dir(config.data_dir)`; "tfds" reads a
  prepared TFDS `mnist` in `config.tfds_data_dir`; "auto" takes IDX when a
  directory resolves, else TFDS when it is prepared.

  Raises:
    FileNotFoundError / ValueError: naming the path, with how to provide the data.
  """
  source = config.data_source
  if source not in ("auto", "idx", "tfds"):
    raise ValueError(f"Unknown data_source {source!r}; choose 'auto', 'idx' or 'tfds'.")
  data_dir = resolve_data_dir(config.data_dir)
  if source == "tfds" or (source == "auto" and data_dir is None
                          and _tfds_prepared(config.tfds_data_dir)):
    return load_tfds_split(split, config.tfds_data_dir)
  if data_dir is None:
    raise FileNotFoundError(
        f"No MNIST data: {ENV_VAR} is unset, the default directory "
        f"{default_data_dir()} does not exist and TFDS mnist is not prepared. "
        f"{_how_to_provide()}")
  return load_idx_split(data_dir, split)


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


def split_image(image, variant: str) -> Dict[str, tf.Tensor]:
  """Cuts binary images `[B, 784]` into the variant's parts (no noise).

  Returns:
    mnist_tb: {"top", "bottom"} `[B, 392]`; mnist_qu: {"q0".."q3"} `[B, 196]`;
    mnist_no: {"image": [B, 784]}.
  """
  _check_variant(variant)
  if variant == "mnist_tb":
    return {"top": image[:, :NUM_PIXELS // 2], "bottom": image[:, NUM_PIXELS // 2:]}
  if variant == "mnist_qu":
    half = IMAGE_SIZE // 2
    grid = tf.reshape(image, [-1, IMAGE_SIZE, IMAGE_SIZE])  # [B, 28, 28]
    quarters = (grid[:, :half, :half], grid[:, :half, half:],
                grid[:, half:, :half], grid[:, half:, half:])  # each [B, 14, 14]
    return {f"q{i}": tf.reshape(q, [-1, half * half]) for i, q in enumerate(quarters)}
  return {"image": image}


def assemble_image(parts, variant: str):
  """Inverse of `split_image`: parts `{name: [..., D]}` -> images `[..., 28, 28]`."""
  _check_variant(variant)
  if variant == "mnist_qu":
    half = IMAGE_SIZE // 2
    lead = tf.shape(parts["q0"])[:-1]
    q = [tf.reshape(parts[f"q{i}"], tf.concat([lead, [half, half]], 0))
         for i in range(4)]  # each [..., 14, 14]
    return tf.concat([tf.concat(q[:2], -1), tf.concat(q[2:], -1)], -2)  # [..., 28, 28]
  if variant == "mnist_tb":
    flat = tf.concat([parts["top"], parts["bottom"]], -1)  # [..., 784]
  else:
    flat = parts["image"]  # [..., 784]
  return tf.reshape(flat, tf.concat([tf.shape(flat)[:-1], [IMAGE_SIZE, IMAGE_SIZE]], 0))


def make_examples(images, labels, seed, variant: str, flip_prob: float = 0.05,
                  use_label: bool = False) -> Dict[str, tf.Tensor]:
  """Binarises a batch of images and builds the variant's sources and targets.

  Args:
    images: `[B, 784]` uint8 (or float in [0, 255]) intensities.
    labels: `[B]` integer classes.
    seed: `[2]` stateless seed; binarisation and bit flips are functions of it.
    variant: a key of `VARIANTS`.
    flip_prob: bit-flip probability of the mnist_no sources.
    use_label: add the one-hot "label" `[B, 10]`.

  Returns:
    `{name: [B, D] float32}` holding every source and target of the variant.
  """
  intensity = tf.cast(images, tf.float32) / 255.  # [B, 784]
  image = binarise(intensity, seed)  # [B, 784]
  examples = split_image(image, variant)
  if variant == "mnist_no":
    num = len(VARIANTS[variant])
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    flips = tf.cast(tf.random.stateless_uniform(
        tf.concat([[num], tf.shape(image)], 0), flip_seed) < flip_prob,
                    tf.float32)  # [4, B, 784]
    noisy = tf.abs(image[None] - flips)  # [4, B, 784]
    examples.update({f"noisy{i}": noisy[i] for i in range(num)})
  if use_label:
    examples["label"] = tf.one_hot(tf.cast(labels, tf.int32), NUM_CLASSES)
  return examples


def _subset(images, labels, size):
  return (images, labels) if not size else (images[:size], labels[:size])


def make_test_examples(config) -> Dict[str, tf.Tensor]:
  """The fixed binarisation of the first `config.eval_size` test images (0: all 10,000)."""
  images, labels = _subset(*load_split(config, "test"), config.eval_size)
  return make_examples(images.reshape(-1, NUM_PIXELS), labels,
                       tf.constant([config.eval_seed, 0], tf.int64), config.dataset,
                       config.flip_prob, config.use_label)


def make_datasets(config, start_step: int = 0):
  """`(train, eval)` datasets of `{name: [B, D] float32}` batches.

  Train: the first `config.train_size` training images (0: all 60,000), in a new
  random order every epoch, binarised anew whenever served; batch s is a function
  of (config.seed, s) (`data.training_batches`), the first is batch `start_step`.
  Eval: the fixed binarisation of `make_test_examples`, batched by
  `config.eval_batch_size`.
  """
  _check_variant(config.dataset)
  images, labels = _subset(*load_split(config, "train"), config.train_size)

  def build(batch, seed):
    return make_examples(batch["images"], batch["labels"], seed, config.dataset,
                         config.flip_prob, config.use_label)

  train_ds = data_lib.training_batches(
      {"images": images.reshape(-1, NUM_PIXELS), "labels": labels},  # [N, 784] uint8
      config.batch_size, config.seed, start_step, build,
      what=f"{config.dataset} training images")
  eval_ds = data_lib.eval_batches(make_test_examples(config), config.eval_batch_size,
                                  what=f"{config.dataset} test images")
  return train_ds, eval_ds
