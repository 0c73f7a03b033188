"""Reading the MNIST images and labels: IDX gz files or a prepared TFDS `mnist`.

Images come from the four standard IDX gz files in a directory (`config.data_dir`,
else the environment variable MSNVI_MNIST_DIR, else `<repo>/../shared/data/mnist`
when it exists) or from a prepared TFDS `mnist` (`config.data_source = "tfds"`,
or "auto" when no IDX directory is found). Nothing is ever downloaded. Every
error names the path and says how to provide the data.
"""
import gzip
import os
import struct
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "IMAGE_SIZE",
    "ENV_VAR",
    "IDX_FILES",
    "default_data_dir",
    "resolve_data_dir",
    "read_idx",
    "load_idx_split",
    "load_tfds_split",
    "load_split",
]

IMAGE_SIZE = 28
ENV_VAR = "MSNVI_MNIST_DIR"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_MAGIC = {3: 2051, 1: 2049}  # number of dimensions -> magic number.

_HOW_TO_PROVIDE = (
    "Provide MNIST as the four IDX gz files ({files}) in a directory and pass it "
    "with --data_dir (config.data_dir) or the environment variable {env}, or "
    "prepare TFDS mnist once on a machine with network (`tfds build mnist`) and "
    "set data_source='tfds' (and tfds_data_dir if it is not the TFDS default).")


def _how_to_provide():
  files = ", ".join(f for pair in IDX_FILES.values() for f in pair)
  return _HOW_TO_PROVIDE.format(files=files, env=ENV_VAR)


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
