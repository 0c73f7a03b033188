"""CUB (Sec. 5.2) and its generated stand-in `shapes`: loaders, archives, rendering."""
import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf import data as data_lib
from msnvi_tf.data import cub
from msnvi_tf.data import shapes

from conftest import make_shapes_config


def test_tfds_mock_path_yields_resized_float_images_and_binary_masks(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = configs.get_config("cub").override(
      [f"data_dir={tmp_path}", "batch_size=3", "eval_batch_size=2"])
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    train, test = cub.make_datasets(config)
    batch = next(iter(train))
    eval_batch = next(iter(test))
  assert batch["image"].shape == (3, 128, 128, 3)
  assert batch["mask"].shape == (3, 128, 128, 1)
  assert eval_batch["image"].shape == (2, 128, 128, 3)
  for x in (batch, eval_batch):
    assert x["image"].dtype == tf.float32 and x["mask"].dtype == tf.float32
    image = x["image"].numpy()
    assert 0. <= image.min() and image.max() <= 1. and image.std() > 0.
    assert set(np.unique(x["mask"].numpy())) <= {0., 1.}
  # Mock masks are random bytes, mostly > 0: mostly foreground after binarising.
  assert batch["mask"].numpy().mean() > 0.5


def test_preprocess_binarises_and_resizes_masks():
  mask = np.zeros((40, 60), np.uint8)
  mask[:, 30:] = 7  # right half is the bird, label value 7
  image = np.full((40, 60, 3), 255, np.uint8)
  out = cub.preprocess(image, mask, 8)
  np.testing.assert_array_equal(out["mask"][..., 0].numpy(),
                                np.tile([0] * 4 + [1] * 4, (8, 1)))
  assert out["image"].shape == (8, 8, 3) and int(out["image"].numpy().min()) == 255


def test_missing_data_error_names_directories_and_files(tmp_path, monkeypatch):
  monkeypatch.delenv(cub.ENV_VAR, raising=False)
  config = configs.get_config("cub").override([f"data_dir={tmp_path}"])
  with pytest.raises(FileNotFoundError) as info:
    data_lib.make_datasets(config)
  message = str(info.value)
  for needle in (os.path.join(str(tmp_path), "caltech_birds2010"),
                 os.path.join(str(tmp_path), "manual"), "images.tgz",
                 "annotations.tgz", "lists.tgz", "--data_dir", cub.ENV_VAR):
    assert needle in message


def _add(tar, name, payload):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def test_original_archives_are_read_when_tfds_is_absent(tmp_path, monkeypatch):
  # The archive walk, split lists, mask matching and resizing; only the MATLAB
  # decoding (scipy, not a requirement) is replaced: masks are stored as .npy.
  monkeypatch.setattr(cub, "_mat_segmentation", lambda b: np.load(io.BytesIO(b)))
  manual = tmp_path / "manual"
  manual.mkdir()
  names = {"train": ["001.Albatross/Albatross_0001.jpg", "002.Auklet/Auklet_0002.jpg"],
           "test": ["001.Albatross/Albatross_0003.jpg"]}
  with tarfile.open(manual / "lists.tgz", "w:gz") as tar:
    for split, files in names.items():
      _add(tar, f"lists/{split}.txt", "\n".join(files).encode())
  with tarfile.open(manual / "images.tgz", "w:gz") as tar, \
       tarfile.open(manual / "annotations.tgz", "w:gz") as ann:
    for i, name in enumerate(names["train"] + names["test"]):
      image = np.full((30 + i, 20, 3), 40 * (i + 1), np.uint8)
      _add(tar, f"images/{name}", tf.io.encode_jpeg(image).numpy())
      seg = np.zeros((30 + i, 20), np.uint8)
      seg[:, 10:] = 1  # right half
      buffer = io.BytesIO()
      np.save(buffer, seg)
      _add(ann, f"annotations-mat/{name[:-4]}.mat", buffer.getvalue())
    _add(tar, "images/003.Other/Other_0009.jpg", b"not listed, never decoded")
  config = configs.get_config("cub").override(
      [f"data_dir={tmp_path}", "image_size=8", "batch_size=2", "eval_batch_size=4"])
  train, test = cub.make_datasets(config)
  batch, eval_batch = next(iter(train)), next(iter(test))
  assert batch["image"].shape == (2, 8, 8, 3) and eval_batch["image"].shape == (1, 8, 8, 3)
  np.testing.assert_allclose(eval_batch["image"].numpy(), 120. / 255., atol=3. / 255.)
  np.testing.assert_array_equal(eval_batch["mask"][0, :, :, 0].numpy(),
                                np.tile([0.] * 4 + [1.] * 4, (8, 1)))


def test_data_dir_falls_back_to_environment_variable(monkeypatch, tmp_path):
  monkeypatch.setenv(cub.ENV_VAR, str(tmp_path))
  assert cub.resolve_data_dir("") == str(tmp_path)
  assert cub.resolve_data_dir("/explicit") == "/explicit"


# ------------------------------------------------------------ shapes data
@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_shapes_image_is_object_inside_mask_and_background_outside(index):
  example = shapes.render(seed=5, index=index, size=48)
  inside = example["mask"][..., 0] == 1.
  assert 0.02 < inside.mean() < 0.6  # a whole object, not the whole frame
  np.testing.assert_array_equal(example["image"][inside], example["foreground"][inside])
  np.testing.assert_array_equal(example["image"][~inside], example["background"][~inside])
  # The object is drawn in its own colours over the clutter.
  contrast = np.abs(example["foreground"][inside] - example["background"][inside])
  assert contrast.mean() > 0.1


def test_shapes_stored_data_matches_rendering():
  data = shapes.generate(3, seed=2, size=24)
  assert data["image"].dtype == np.uint8 and data["image"].shape == (3, 24, 24, 3)
  for n in range(3):
    example = shapes.render(2, n, 24)
    np.testing.assert_array_equal(data["mask"][n], example["mask"])
    np.testing.assert_array_equal(data["image"][n], np.round(example["image"] * 255.))


def test_shapes_are_deterministic_from_the_seed():
  first = shapes.generate(4, seed=11, size=16)
  again = shapes.generate(4, seed=11, size=16)
  fewer = shapes.generate(2, seed=11, size=16)
  other = shapes.generate(4, seed=12, size=16)
  for key in ("image", "mask"):
    np.testing.assert_array_equal(first[key], again[key])
    np.testing.assert_array_equal(first[key][:2], fewer[key])
  assert not np.array_equal(first["image"], other["image"])
  assert not np.array_equal(first["image"][0], first["image"][1])


def test_shapes_datasets_have_the_config_shapes():
  train, test = data_lib.make_datasets(make_shapes_config())
  batch = next(iter(train))
  assert batch["image"].shape == (2, 16, 16, 3) and batch["mask"].shape == (2, 16, 16, 1)
  assert sum(int(x["image"].shape[0]) for x in test) == 4
