"""CUB (Sec. 5.2): data loaders, generated shapes, Table 6 model, Table 2 metrics."""
import io
import json
import math
import os
import shutil
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf import architectures
from msnvi_tf import data as data_lib
from msnvi_tf.core import estimators
from msnvi_tf.experiments import table2
from msnvi_tf.experiments import cub_figures
from msnvi_tf.architectures import cub as cub_arch
from msnvi_tf.data import cub
from msnvi_tf.data import shapes

# 16x16 images: two pools down to 4x4, one upsampling to 8x8 + the stride-2 head.
TINY = ["image_size=16", "encoder_channels=(4, 8)", "decoder_channels=(4,)",
        "decoder_base_channels=8", "encoder_dense=16", "latent_dim=4",
        "num_samples=2", "eval_num_samples=2", "batch_size=2", "eval_batch_size=2",
        "train_size=8", "eval_size=4"]


def _tiny_config(*overrides):
  return configs.get_config("shapes").override(TINY + list(overrides))


def _batch(size=16, num=2, seed=0):
  data = shapes.generate(num, seed, size)
  return {"image": tf.constant(data["image"], tf.float32) / 255.,
          "mask": tf.constant(data["mask"], tf.float32)}


def _compiled(config):
  model = architectures.build_model(config)
  model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
  model.optimizer.build(model.trainable_variables)
  return model


# ------------------------------------------------------------------ CUB data
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
  train, test = data_lib.make_datasets(_tiny_config())
  batch = next(iter(train))
  assert batch["image"].shape == (2, 16, 16, 3) and batch["mask"].shape == (2, 16, 16, 1)
  assert sum(int(x["image"].shape[0]) for x in test) == 4


# ------------------------------------------------------------------ model
def test_table6_shapes_at_paper_size():
  config = configs.get_config("cub").override(["num_samples=1"])
  model = architectures.build_model(config)
  assert sorted(model.encoders) == ["image", "mask"]
  assert sorted(model.decoders) == ["image", "mask"]
  h = tf.zeros([1, 128, 128, 3])
  stem = model.encoders["image"].stem
  for layer in stem[:-2]:
    h = layer(h)
  assert h.shape == (1, 4, 4, 96)  # last pool of Table 6
  assert stem[-1](stem[-2](h)).shape == (1, 256)
  z = tf.zeros([2, 96])
  assert model.decoders["image"].mean(z).shape == (2, 128, 128, 3)
  assert model.decoders["mask"].mean(z).shape == (2, 128, 128, 1)
  h = z
  for layer in model.decoders["mask"].stem:
    h = layer(h)
  assert h.shape == (2, 64, 64, 16)  # last interpolation of Table 6
  assert model.decoders["image"].head.scale_kind == "global"
  assert model.decoders["image"].head.raw_scale.shape == ()


def test_wrong_image_size_and_unknown_target_are_refused():
  with pytest.raises(ValueError, match="image_size=64"):
    architectures.build_model(configs.get_config("shapes").override(["image_size=64"]))
  with pytest.raises(ValueError, match="targets"):
    architectures.build_model(_tiny_config("targets=segmentation"))


@pytest.mark.parametrize("objective,targets,precision,encoders,decoders", [
    ("ind", "image,mask", "mixed_bfloat16", ["image", "mask"], ["image", "mask"]),
    ("hybrid", "image,mask", "mixed_float16", ["image", "mask"], ["image", "mask"]),
    ("hybrid", "mask", "mixed_bfloat16", ["image", "mask"], ["mask"]),  # hybrid*
    ("ind", "mask", "mixed_float16", ["image", "mask"], ["mask"]),  # ind*
    ("iwae", "mask", "mixed_bfloat16", ["image"], ["mask"]),
])
def test_one_mixed_precision_train_step_per_objective(objective, targets, precision,
                                                      encoders, decoders):
  keras.config.set_dtype_policy(precision)
  config = _tiny_config(f"objective={objective}", f"targets={targets}",
                        f"precision={precision}")
  model = _compiled(config)
  assert sorted(model.encoders) == encoders and sorted(model.decoders) == decoders
  conv = model.decoders[decoders[0]].stem[2]
  assert conv.compute_dtype == precision.split("_")[1]  # the policy reached the convs
  before = [v.numpy().copy() for v in model.trainable_variables]
  step = tf.function(model.train_step)
  # float16 uses dynamic loss scaling: steps whose scaled gradients overflow
  # are skipped while the scale drops, so allow a few.
  for _ in range(1 if precision == "mixed_bfloat16" else 40):
    logs = step(_batch())
    assert math.isfinite(float(logs["loss"])) and math.isfinite(float(logs["bound"]))
    if not np.array_equal(before[0], model.trainable_variables[0].numpy()):
      break
  bound, bounds = model._bounds(_batch(), 2, ("ind", "poe"))  # pylint: disable=protected-access
  assert bound.dtype == tf.float32 and bounds["poe"].dtype == tf.float32
  changed = [not np.array_equal(b, v.numpy())
             for b, v in zip(before, model.trainable_variables)]
  assert sum(changed) > len(changed) // 2


# ------------------------------------------------------------ Table 2
def test_pixel_accuracy_on_hand_made_masks():
  predicted = tf.constant([[[0.9, 0.2], [0.6, 0.4]],
                           [[0.1, 0.9], [0.5, 0.7]]])
  mask = tf.constant([[[1., 0.], [0., 0.]],
                      [[1., 0.], [0., 0.]]])
  np.testing.assert_allclose(table2.pixel_accuracy(predicted, mask),
                             [0.75, 0.])
  np.testing.assert_allclose(table2.pixel_accuracy(mask, mask), [1., 1.])


def test_single_source_bound_is_seeded_and_exact_on_its_samples():
  model = architectures.build_model(_tiny_config())
  x = _batch()
  whole = table2.single_source_bound(model, x, "image", "mask", 6, chunk_size=6, seed=7)
  np.testing.assert_array_equal(
      whole, table2.single_source_bound(model, x, "image", "mask", 6, chunk_size=6,
                                        seed=7))
  # One chunk draws the K samples of estimators.draw (the seeding convention).
  q = model.encode(x, ["image"])["image"]

  def reference(chunks):  # the samples of chunks starting at 0, 4, ...
    z = tf.concat([estimators.draw(q, n, estimators.as_seed(7), offset)
                   for offset, n in chunks], 0)
    log_w = model.decoders["mask"].log_prob(z, x["mask"]) + (
        -0.5 * tf.reduce_sum(z ** 2, -1) - 2. * math.log(2. * math.pi)) - q.log_prob(z)
    return tf.reduce_logsumexp(log_w, 0) - math.log(6.)

  np.testing.assert_allclose(whole, reference([(0, 6)]), rtol=1e-5)
  # Chunks of 4 draw other samples (chunk k0 from fold_in(seed, k0)); summed exactly.
  chunked = table2.single_source_bound(model, x, "image", "mask", 6, chunk_size=4,
                                       seed=7)
  np.testing.assert_allclose(chunked, reference([(0, 4), (4, 2)]), rtol=1e-5)


def test_table2_rows_follow_the_model():
  test = data_lib.make_datasets(_tiny_config())[1]
  full = table2.evaluate_table2(architectures.build_model(_tiny_config()), test,
                                        num_samples=2, accuracy_samples=3)
  star = table2.evaluate_table2(
      architectures.build_model(_tiny_config("targets=mask")), test, 2, 3, max_examples=2)
  assert full["num_examples"] == 4 and star["num_examples"] == 2
  assert all(math.isfinite(full[r]) for r in table2.ROWS)
  assert 0. <= full["accuracy"] <= 1.
  assert star["img_to_img"] is None and math.isfinite(star["img_to_seg"])
  table = table2.table2_markdown({"ind": full, "hybrid*": star})
  assert "(paper 5326)" in table and "(paper 0.872)" in table
  assert "| img-to-img |" in table and " - (paper -29668)" in table


def test_table2_merges_the_mask_and_image_models_of_a_column():
  """The paper's asterisk and IWAE columns: img-to-img from the model of the images."""
  seg = {"img_to_seg": 100., "img_to_img": None, "accuracy": 0.9, "step": 5}
  img = {"img_to_seg": None, "img_to_img": -1700., "accuracy": None, "step": 6}
  both = {"img_to_seg": 200., "img_to_img": -1650., "accuracy": 0.8, "step": 7}
  k1 = {"img_to_seg": 300., "img_to_img": -1600., "accuracy": 0.7, "step": 8}
  merged = table2.merge_columns({"hybrid* (img-to-img)": img, "hybrid (K=1)": k1,
                                 "hybrid*": seg, "ind": both})
  assert list(merged) == ["ind", "hybrid*", "hybrid (K=1)"]
  assert merged["hybrid*"]["img_to_img"] == {"value": -1700.,
                                             "model": "hybrid* (img-to-img)"}
  assert merged["hybrid*"]["img_to_seg"] == {"value": 100., "model": "hybrid*"}
  rows = table2.table2_rows({"hybrid* (img-to-img)": img, "hybrid*": seg,
                             "hybrid (K=1)": k1})
  cells = {(r["column"], r["row"]): r for r in rows}
  assert cells["hybrid*", "img-to-img"]["step"] == 6
  assert cells["hybrid*", "accuracy"]["paper"] == 0.872
  assert cells["hybrid (K=1)", "img-to-seg"]["paper"] is None  # the paper's K is 80
  table = table2.table2_markdown(merged)
  assert "| img-to-img | -1650.0 (paper -26179) | -1700.0 (paper -29668) | -1600.0 |" in table


def test_table2_evaluation_logs_progress_with_an_eta(caplog, monkeypatch):
  from msnvi_tf.runtime import progress  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(progress, "EVERY", 0.)
  test = data_lib.make_datasets(_tiny_config())[1]  # 4 examples in 2 batches
  with caplog.at_level("INFO", logger="msnvi_tf"):
    table2.evaluate_table2(architectures.build_model(_tiny_config()), test, 2, 2,
                           progress="Table 2 ind")
  lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith("Table 2 ind (K=2): 1/2 batches, ")


def test_conditional_generation_figures(tmp_path):
  model = architectures.build_model(_tiny_config())
  x = _batch(num=3)
  grid = cub_figures.conditional_grid(model, x, "image", [("image", 3), ("mask", 11)])
  assert grid.shape == (15, 3, 16, 16, 3)
  np.testing.assert_array_equal(grid[0], x["image"].numpy())
  paths = cub_figures.cub_figures(model, x, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["fig8_images.png", "fig9_masks.png"]
  assert all(os.path.getsize(p) > 1000 for p in paths)
  assert cub_arch.parse_names(" image , mask", "targets") == ("image", "mask")


@pytest.mark.usefixtures("no_export")
def test_bin_evaluate_and_plot_of_a_shapes_run_write_table2_and_figs_8_9(tmp_path):
  """The dispatch of bin/evaluate and bin/plot for CUB / shapes workdirs."""
  from msnvi_tf.experiments import dispatch  # pylint: disable=g-import-not-at-top
  from msnvi_tf.runtime import training  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  training.train_and_evaluate(_tiny_config(
      "num_steps=2", "steps_per_call=1", "log_every=2", "eval_every=2",
      "checkpoint_every=2", "export_num_samples=2"), workdir)
  out = tmp_path / "table2"
  paths = dispatch.evaluate([workdir, f"ind*={workdir}"], str(out), num_samples=2,
                            accuracy_samples=2, eval_size=2)
  assert paths == [str(out / name) for name in ("table2.md", "table2.csv", "table2.json")]
  table = (out / "table2.md").read_text()  # the config's objective, or the given label
  assert "| | ind* | hybrid |\n" in table  # the paper's column order
  assert "(paper 5924)" in table and "(paper 3264)" in table
  assert table.endswith("\nModels: hybrid: run at step 2; ind*: run at step 2.\n")
  results = json.loads((out / "table2.json").read_text())
  # Runs are named, never by a machine's absolute path; the step is the checkpoint's.
  assert results["hybrid"]["num_examples"] == 2 and results["ind*"]["workdir"] == "run"
  assert results["ind*"]["step"] == 2 and results["ind*"]["num_samples"] == 2
  rows = (out / "table2.csv").read_text().splitlines()
  assert rows[0].startswith("column,row,ours,paper,model,")
  assert len(rows) == 1 + 2 * 3 and str(tmp_path) not in "".join(rows)
  # --merge: a model evaluated on its own joins the others of table2.json.
  shutil.copytree(workdir, tmp_path / "run2")
  dispatch.evaluate([f"iwae={tmp_path / 'run2'}"], str(out), num_samples=2,
                    accuracy_samples=2, eval_size=2, merge=True)
  merged = json.loads((out / "table2.json").read_text())
  assert list(merged) == ["hybrid", "ind*", "iwae"] and merged["iwae"]["workdir"] == "run2"
  assert merged["hybrid"] == results["hybrid"]
  paths = dispatch.plot([workdir], num_columns=2)
  assert paths == [os.path.join(workdir, "figures", name)
                   for name in ("fig8_images.png", "fig9_masks.png")]
  assert all(os.path.getsize(p) > 1000 for p in paths)
