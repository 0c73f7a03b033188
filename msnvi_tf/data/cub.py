"""Caltech-UCSD Birds 200 (2010): images and segmentation masks (Sec. 5.2).

Sources and targets "image" `[S, S, 3]` float32 in [0, 1] and "mask"
`[S, S, 1]` float32 in {0, 1} (the bird's pixels), S = `config.image_size`
(128 in the paper). The 3000 / 3033 train / test split of the data set is used.

The data is read, never downloaded, from either
  * a prepared TFDS `caltech_birds2010` (its `segmentation_mask` feature) in the
    TFDS data dir `config.data_dir`, else $MSNVI_CUB_DIR, else
    `<repo>/../shared/data/cub` when it exists; or
  * the original archives of CUB-200 2010, `images.tgz`, `annotations.tgz`
    (annotations-mat: the `seg` masks) and `lists.tgz` (train.txt / test.txt),
    in `config.archive_dir` (default: `<data dir>/manual`, the TFDS manual
    download dir). Reading the masks needs scipy.
When neither is there, `make_datasets` raises FileNotFoundError saying which
files to put where.

Preprocessing: images are resized to S x S (bilinear, anti-aliased, aspect
ratio not kept) and scaled to [0, 1]; masks are binarised (> 0), resized the
same way and thresholded at 1/2.
"""
import io
import os
import tarfile
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from msnvi_tf import data as data_lib

__all__ = [
    "SOURCES",
    "TFDS_NAME",
    "ENV_VAR",
    "ARCHIVES",
    "default_data_dir",
    "resolve_data_dir",
    "preprocess",
    "load_tfds_split",
    "load_archives",
    "batch_datasets",
    "make_datasets",
]

SOURCES = ("image", "mask")
TFDS_NAME = "caltech_birds2010"
ENV_VAR = "MSNVI_CUB_DIR"
ARCHIVES = ("images.tgz", "annotations.tgz", "lists.tgz")
_SPLITS = ("train", "test")


def default_data_dir() -> str:
  """`<repo>/../shared/data/cub`, relative to this package's repository root."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, os.pardir, "shared", "data", "cub"))


def resolve_data_dir(data_dir: str = "") -> str:
  """The TFDS data dir: `data_dir`, else $MSNVI_CUB_DIR, else `default_data_dir()`."""
  return data_dir or os.environ.get(ENV_VAR) or default_data_dir()


def _how_to_provide(data_dir, archive_dir):
  return (
      f"Caltech-UCSD Birds 200 (2010) was not found. Provide it in one of two ways "
      f"(nothing is downloaded):\n"
      f"  (a) a prepared TFDS {TFDS_NAME} (version 0.1.1): on a machine with network "
      f"run `tfds build {TFDS_NAME} --data_dir=D` and copy D/{TFDS_NAME}/ to "
      f"{os.path.join(data_dir, TFDS_NAME)}/ ; or\n"
      f"  (b) the original CUB-200 2010 archives {', '.join(ARCHIVES)} (images, "
      f"annotations-mat with the segmentations, and the train/test lists) in "
      f"{archive_dir}/ (needs scipy to read the masks).\n"
      f"Choose the directory with --data_dir (config.data_dir) or ${ENV_VAR}, and "
      f"the archive directory with --set archive_dir=DIR (default <data_dir>/manual).")


def preprocess(image, mask, size: int):
  """Resizes one example to `size` x `size` (see module docstring).

  Args:
    image: `[H, W, 3]` uint8.
    mask: `[H', W', 1]` (or `[H', W']`) integer segmentation; > 0 is the bird.
    size: S.

  Returns:
    `{"image": [S, S, 3] uint8, "mask": [S, S, 1] uint8 in {0, 1}}`.
  """
  image = tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)
  mask = tf.cast(tf.convert_to_tensor(mask) > 0, tf.float32)
  if mask.shape.rank == 2:
    mask = mask[..., None]
  mask = tf.image.resize(mask, [size, size], antialias=True)  # [S, S, 1]
  return {"image": tf.cast(tf.clip_by_value(tf.round(image), 0., 255.), tf.uint8),
          "mask": tf.cast(mask >= 0.5, tf.uint8)}


def load_tfds_split(split: str, data_dir: str, size: int) -> Optional[tf.data.Dataset]:
  """A split of the prepared TFDS data set, preprocessed; None if not prepared."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    ds = tfds.load(TFDS_NAME, split=split, data_dir=data_dir, download=False,
                   try_gcs=False)
  except (AssertionError, tfds.core.DatasetNotFoundError):
    return None
  return ds.map(lambda ex: preprocess(ex["image"], ex["segmentation_mask"], size),
                num_parallel_calls=tf.data.AUTOTUNE)


def _read_lists(path):
  """`{split: set of "<class dir>/<name>.jpg"}` from lists.tgz."""
  lists = {}
  with tarfile.open(path) as tar:
    for member in tar.getmembers():
      split = os.path.splitext(os.path.basename(member.name))[0]
      if member.isfile() and split in _SPLITS:
        text = tar.extractfile(member).read().decode()
        lists[split] = {line.strip() for line in text.splitlines() if line.strip()}
  missing = [s for s in _SPLITS if s not in lists]
  if missing:
    raise ValueError(f"{path} has no {', '.join(f'{s}.txt' for s in missing)}.")
  return lists


def _mat_segmentation(payload: bytes) -> np.ndarray:
  """The `seg` array `[H, W]` of one annotations-mat file (MATLAB v5 bytes)."""
  try:
    from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reading the CUB masks from annotations.tgz needs scipy "
                      "(`pip install scipy`).") from e
  mat = scipy_io.loadmat(io.BytesIO(payload), squeeze_me=True, variable_names=["seg"])
  return np.asarray(mat["seg"], np.uint8)


def _read_masks(path):
  """`{"<class dir>/<name>": [H, W] uint8}` from the `seg` of annotations.tgz."""
  masks = {}
  with tarfile.open(path) as tar:
    for member in tar.getmembers():
      if member.isfile() and member.name.endswith(".mat"):
        key = "/".join(os.path.splitext(member.name)[0].split("/")[-2:])
        masks[key] = _mat_segmentation(tar.extractfile(member).read())
  return masks


def load_archives(archive_dir: str, size: int) -> Dict[str, Dict[str, np.ndarray]]:
  """Both splits from the original archives (see module docstring).

  Returns:
    `{split: {"image": [N, S, S, 3] uint8, "mask": [N, S, S, 1] uint8}}`, each
    split in the order of its list file.
  """
  lists = _read_lists(os.path.join(archive_dir, "lists.tgz"))
  masks = _read_masks(os.path.join(archive_dir, "annotations.tgz"))
  examples = {}
  with tarfile.open(os.path.join(archive_dir, "images.tgz")) as tar:
    for member in tar.getmembers():
      key = "/".join(member.name.split("/")[-2:])
      if member.isfile() and key.endswith(".jpg") and any(key in l for l in lists.values()):
        stem = os.path.splitext(key)[0]
        if stem not in masks:
          raise ValueError(f"annotations.tgz has no mask for {key}.")
        image = tf.io.decode_jpeg(tar.extractfile(member).read(), channels=3)
        examples[key] = {k: v.numpy() for k, v in preprocess(image, masks[stem], size).items()}
  splits = {}
  for split in _SPLITS:
    names = sorted(lists[split])
    missing = [n for n in names if n not in examples]
    if missing:
      raise ValueError(f"images.tgz lacks {len(missing)} image(s) of {split}.txt, "
                       f"e.g. {missing[0]}.")
    splits[split] = {k: np.stack([examples[n][k] for n in names]) for k in SOURCES}
  return splits


def _to_float(example):
  return {"image": tf.cast(example["image"], tf.float32) / 255.,
          "mask": tf.cast(example["mask"], tf.float32)}


def _as_arrays(data) -> Dict[str, np.ndarray]:
  """`{"image", "mask"}` stacked uint8 arrays of a `tf.data.Dataset` (or the dict itself)."""
  if not isinstance(data, tf.data.Dataset):
    return data
  parts = list(data.batch(256).as_numpy_iterator())
  return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros((0,))
          for k in SOURCES}


def batch_datasets(train, test, config, start_step: int = 0):
  """Training and evaluation pipelines from uint8 examples.

  Args:
    train, test: `tf.data.Dataset`s of `{"image", "mask"}` uint8 examples, or
      dicts of stacked numpy arrays (held in memory either way).
    config: needs `seed`, `batch_size`, `eval_batch_size`.
    start_step: the first training batch served.

  Returns:
    `(train, eval)`: train endless, batch s a function of (config.seed, s)
    (`data.training_batches`); eval one pass. Batches are
    `{"image": [B, S, S, 3], "mask": [B, S, S, 1]}` float32.
  """
  missing = data_lib.missingness(config, ("image", "mask"))
  train_ds = data_lib.training_batches(
      _as_arrays(train), config.batch_size, config.seed, start_step,
      lambda batch, _: _to_float(batch), what=f"{config.dataset} training data",
      missing=missing)
  eval_ds = data_lib.eval_batches(_as_arrays(test), config.eval_batch_size, _to_float,
                                  what=f"{config.dataset} test data", missing=missing)
  return train_ds, eval_ds


def make_datasets(config, start_step: int = 0):
  """`(train, eval)` CUB datasets from TFDS or the original archives.

  Raises:
    FileNotFoundError: neither a prepared TFDS data set nor the archives were
      found; the message names the directories and files.
  """
  data_dir = resolve_data_dir(config.data_dir)
  archive_dir = config.archive_dir or os.path.join(data_dir, "manual")
  train = load_tfds_split("train", data_dir, config.image_size)
  if train is not None:
    test = load_tfds_split("test", data_dir, config.image_size)
    return batch_datasets(train, test, config, start_step)
  if all(os.path.isfile(os.path.join(archive_dir, f)) for f in ARCHIVES):
    splits = load_archives(archive_dir, config.image_size)
    return batch_datasets(splits["train"], splits["test"], config, start_step)
  raise FileNotFoundError(_how_to_provide(data_dir, archive_dir))
