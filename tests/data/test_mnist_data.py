"""MNIST: the IDX files and their errors, binarisation, noise, the variants' views."""
import gzip
import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf.data import mnist
from msnvi_tf.data import mnist_files

from conftest import REPO, make_mnist_config

pytestmark = pytest.mark.usefixtures("keras_seed")

VARIANTS = ("mnist_tb", "mnist_qu", "mnist_no")


@pytest.mark.smoke
def test_the_loader_finds_the_test_images_or_says_where_to_put_them():
  config = make_mnist_config("mnist_tb")
  try:
    images, labels = mnist_files.load_split(config, "test")
  except FileNotFoundError as error:  # not downloaded: the error says where and how
    message = str(error)
    where = mnist_files.resolve_data_dir(config.data_dir) or mnist_files.default_data_dir()
    assert where in message, message
    assert mnist_files.ENV_VAR in message and "--data_dir" in message, message
    return
  assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (10_000,) and set(np.unique(labels)) == set(range(10))


@pytest.fixture(scope="module")
def raw_test_images():
  """The first 32 real test images and labels (IDX files beside the repo)."""
  config = make_mnist_config("mnist_tb")
  images, labels = mnist_files.load_split(config, "test")
  return images[:32].reshape(-1, 784), labels[:32]


@pytest.mark.parametrize("variant", VARIANTS)
def test_loader_shapes_dtypes_and_binary_values_per_variant(variant, raw_test_images):
  config = make_mnist_config(variant, "use_label=True")
  train_ds, eval_ds = mnist.make_datasets(config)
  expected = {**mnist.source_shapes(variant, True), **mnist.target_shapes(variant, True)}
  for batch, size in ((next(iter(train_ds)), 16), (next(iter(eval_ds)), 16)):
    assert sorted(batch) == sorted(expected)
    for name, shape in expected.items():
      assert batch[name].dtype == tf.float32
      assert tuple(batch[name].shape) == (size,) + shape, name
      values = np.unique(batch[name].numpy())
      assert set(values) <= {0., 1.}, (name, values)
    np.testing.assert_array_equal(tf.reduce_sum(batch["label"], -1), np.ones(size))
  # The fixed test binarisation is consistent with the real intensities: black
  # pixels stay 0, saturated pixels become 1, and the parts reassemble the image.
  test = mnist.make_test_examples(config)
  image = mnist.assemble_image(
      {t: test[t] for t in mnist.target_shapes(variant)}, variant).numpy()
  raw = raw_test_images[0].reshape(-1, 28, 28)
  assert image.shape == raw.shape
  assert np.all(image[raw == 0] == 0.) and np.all(image[raw == 255] == 1.)
  np.testing.assert_array_equal(np.argmax(test["label"], -1), raw_test_images[1])
  parts = mnist.split_image(tf.reshape(image, [-1, 784]), variant)
  np.testing.assert_array_equal(mnist.assemble_image(parts, variant), image)


def test_quarters_are_the_four_corners(raw_test_images):
  image = tf.constant(raw_test_images[0][:2], tf.float32)  # [2, 784]
  quarters = mnist.split_image(image, "mnist_qu")
  grid = image.numpy().reshape(-1, 28, 28)
  np.testing.assert_array_equal(quarters["q1"].numpy().reshape(-1, 14, 14),
                                grid[:, :14, 14:])
  np.testing.assert_array_equal(quarters["q2"].numpy().reshape(-1, 14, 14),
                                grid[:, 14:, :14])
  halves = mnist.split_image(image, "mnist_tb")
  np.testing.assert_array_equal(halves["bottom"].numpy().reshape(-1, 14, 28),
                                grid[:, 14:])


def test_training_binarisation_is_redrawn_each_epoch_but_test_set_is_fixed():
  # One batch = the whole (tiny) training set, so consecutive batches are epochs.
  config = make_mnist_config("mnist_tb", "train_size=16")
  train_ds, eval_ds = mnist.make_datasets(config)
  epochs = [np.concatenate([b["top"], b["bottom"]], -1) for b in train_ds.take(3)]
  for a, b in ((0, 1), (1, 2)):  # no image of one epoch recurs bit-exactly in the next
    same = (epochs[a][:, None] == epochs[b][None]).all(-1)  # [16, 16]
    assert not same.any()
  # Same images, so the pixel counts agree on average across epochs.
  np.testing.assert_allclose(epochs[0].mean(), epochs[1].mean(), atol=0.02)
  # Seeded: a second pipeline from the same config serves the same batches.
  again = next(iter(mnist.make_datasets(config)[0]))
  np.testing.assert_array_equal(np.concatenate([again["top"], again["bottom"]], -1),
                                epochs[0])
  first = [b["top"].numpy() for b in eval_ds]
  second = [b["top"].numpy() for b in mnist.make_datasets(config)[1]]
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))
  other_seed = mnist.make_test_examples(config.override(["eval_seed=7"]))["top"]
  assert np.any(other_seed.numpy() != np.concatenate(first))


def test_bit_flip_rate_is_five_percent_and_independent_per_source():
  config = make_mnist_config("mnist_no", "eval_size=300")
  test = mnist.make_test_examples(config)
  flips = np.stack([test[f"noisy{i}"].numpy() != test["image"].numpy()
                    for i in range(4)])  # [4, 300, 784]
  assert abs(flips.mean() - 0.05) < 0.003
  for i in range(4):
    assert abs(flips[i].mean() - 0.05) < 0.005
  both = (flips[0] & flips[1]).mean()  # independent: ~ 0.05^2
  assert abs(both - 0.0025) < 0.001
  train = next(iter(mnist.make_datasets(config.override(["batch_size=64"]))[0]))
  rate = np.mean([np.mean(train[f"noisy{i}"] != train["image"]) for i in range(4)])
  assert abs(rate - 0.05) < 0.005


# sha256 of the sorted {name: float32 bytes} of the first training batch (from
# step 3), the first eval batch and all test examples, recorded before the
# variants became view functions: the pipeline serves the same bits.
_PINNED = {
    "mnist_tb": ("74ff253fd36915b5", "4bff1bf2802903a5", "34ff44c73087b71e"),
    "mnist_qu": ("2380bc23118890a4", "21a71ca4c3c1392b", "85862eaef4b9d71f"),
    "mnist_no": ("924e097c2e382a21", "7b145af06a6b96a0", "31893ce77ba1895b"),
}


def _fingerprint(batch):
  digest = hashlib.sha256()
  for name in sorted(batch):
    digest.update(name.encode())
    digest.update(np.asarray(batch[name], np.float32).tobytes())
  return digest.hexdigest()[:16]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_serve_the_bits_they_served_before_views(variant):
  config = configs.get_config(variant).override([
      "train_size=64", "eval_size=32", "batch_size=16", "eval_batch_size=16",
      "use_label=True"])
  train_ds, eval_ds = mnist.make_datasets(config, start_step=3)
  got = (_fingerprint(next(iter(train_ds))), _fingerprint(next(iter(eval_ds))),
         _fingerprint(mnist.make_test_examples(config)))
  assert got == _PINNED[variant]
  explicit = mnist.make_datasets(config, start_step=3, view=mnist.view_of(config))
  assert _fingerprint(next(iter(explicit[0]))) == _PINNED[variant][0]


def _digit_and_rotation(image, seed):
  """The module docstring's example view."""
  del seed  # no noise
  rotated = tf.reverse(tf.transpose(image, [0, 2, 1]), [1])  # np.rot90
  return {"digit": tf.reshape(image, [-1, 784]),
          "rotated": tf.reshape(rotated, [-1, 784])}


def test_custom_view_digit_and_rotation_reuses_the_pipeline():
  config = make_mnist_config("mnist_tb", "use_label=True")
  train_ds, eval_ds = mnist.make_datasets(config, view=_digit_and_rotation)
  for batch in (next(iter(train_ds)), next(iter(eval_ds))):
    assert sorted(batch) == ["digit", "label", "rotated"]
    assert all(tuple(batch[n].shape) == (16, 784) for n in ("digit", "rotated"))
    digit = batch["digit"].numpy().reshape(-1, 28, 28)
    np.testing.assert_array_equal(batch["rotated"].numpy().reshape(-1, 28, 28),
                                  np.rot90(digit, axes=(1, 2)))
  # The same binarisation as the built-in views, and deterministic.
  test = mnist.make_test_examples(config, _digit_and_rotation)
  tb = mnist.make_test_examples(config)
  np.testing.assert_array_equal(test["digit"],
                                np.concatenate([tb["top"], tb["bottom"]], -1))
  again = next(iter(mnist.make_datasets(config, view=_digit_and_rotation)[0]))
  np.testing.assert_array_equal(again["digit"], next(iter(train_ds))["digit"])


@pytest.mark.smoke
def test_missing_directory_error_names_it_and_how_to_provide(tmp_path):
  missing = str(tmp_path / "no_such_dir")
  with pytest.raises(FileNotFoundError, match=f"directory {missing} does not") as info:
    mnist.make_datasets(make_mnist_config("mnist_tb", f"data_dir={missing}"))
  assert "MSNVI_MNIST_DIR" in str(info.value) and "--data_dir" in str(info.value)


def test_environment_variable_selects_the_directory(tmp_path, monkeypatch):
  monkeypatch.setenv(mnist_files.ENV_VAR, str(tmp_path))
  assert mnist_files.resolve_data_dir("") == str(tmp_path)
  assert mnist_files.resolve_data_dir("/explicit") == "/explicit"
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
    mnist_files.load_split(make_mnist_config("mnist_tb"), "test")


def test_default_directory_is_relative_to_the_repository():
  assert mnist_files.default_data_dir() == os.path.normpath(
      os.path.join(REPO, "..", "shared", "data", "mnist"))


def test_unprepared_tfds_error_names_the_directory(tmp_path):
  config = make_mnist_config("mnist_tb", "data_source=tfds", f"tfds_data_dir={tmp_path}")
  with pytest.raises(FileNotFoundError, match="tfds build mnist") as info:
    mnist_files.load_split(config, "test")
  assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("content, message", [
    (b"not gzip at all", "not a readable gzip"),
    (gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 12, mtime=0), "magic number 2049"),
    (gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x1c\x00\x00\x00\x1c"
                   + b"\x00" * 100, mtime=0), "header promises"),
], ids=["not_gzip", "wrong_magic", "short_data"])
def test_corrupt_file_error_names_the_path(tmp_path, content, message):
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=message) as info:
    mnist_files.read_idx(str(path), 3)
  assert str(path) in str(info.value)


def test_tfds_path_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    config = make_mnist_config("mnist_qu", "data_source=tfds", "train_size=0", "eval_size=0")
    images, labels = mnist_files.load_split(config, "test")
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (40,)
    train_ds, eval_ds = mnist.make_datasets(config)
    batch = next(iter(train_ds))
    assert sorted(batch) == ["q0", "q1", "q2", "q3"]
    assert tuple(batch["q0"].shape) == (16, 196)
    assert sum(int(b["q3"].shape[0]) for b in eval_ds) == 40
