"""Table 2 and Figs. 8, 9 (`experiments.cub`) on the tiny shapes model."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf import architectures
from msnvi_tf import data as data_lib
from msnvi_tf.architectures import cub as cub_arch
from msnvi_tf.core import estimators
from msnvi_tf.experiments.cub import figures as cub_figures
from msnvi_tf.experiments.cub import table2
from msnvi_tf.runtime.config import Config

from conftest import make_shapes_config, shapes_batch


def test_pixel_accuracy_on_hand_made_masks():
  predicted = tf.constant([[[0.9, 0.2], [0.6, 0.4]],
                           [[0.1, 0.9], [0.5, 0.7]]])
  mask = tf.constant([[[1., 0.], [0., 0.]],
                      [[1., 0.], [0., 0.]]])
  np.testing.assert_allclose(table2.pixel_accuracy(predicted, mask),
                             [0.75, 0.])
  np.testing.assert_allclose(table2.pixel_accuracy(mask, mask), [1., 1.])


def test_single_source_bound_is_seeded_and_exact_on_its_samples():
  model = architectures.build_model(make_shapes_config())
  x = shapes_batch()
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
  test = data_lib.make_datasets(make_shapes_config())[1]
  full = table2.evaluate_table2(architectures.build_model(make_shapes_config()), test,
                                        num_samples=2, accuracy_samples=3)
  star = table2.evaluate_table2(
      architectures.build_model(make_shapes_config("targets=mask")), test, 2, 3, max_examples=2)
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
  test = data_lib.make_datasets(make_shapes_config())[1]  # 4 examples in 2 batches
  with caplog.at_level("INFO", logger="msnvi_tf"):
    table2.evaluate_table2(architectures.build_model(make_shapes_config()), test, 2, 2,
                           progress="Table 2 ind")
  lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith("Table 2 ind (K=2): 1/2 batches, ")


def test_conditional_generation_figures(tmp_path):
  model = architectures.build_model(make_shapes_config())
  x = shapes_batch(num=3)
  grid = cub_figures.conditional_grid(model, x, "image", [("image", 3), ("mask", 11)])
  assert grid.shape == (15, 3, 16, 16, 3)
  np.testing.assert_array_equal(grid[0], x["image"].numpy())
  paths = cub_figures.cub_figures(model, x, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["fig8_images.png", "fig9_masks.png"]
  assert all(os.path.getsize(p) > 1000 for p in paths)
  assert cub_arch.parse_names(" image , mask", "targets") == ("image", "mask")


@pytest.mark.slow
@pytest.mark.usefixtures("no_export")
def test_bin_evaluate_and_plot_of_a_shapes_run_write_table2_and_figs_8_9(tmp_path):
  """The dispatch of bin/evaluate and bin/plot for CUB / shapes workdirs."""
  from msnvi_tf.experiments import dispatch  # pylint: disable=g-import-not-at-top
  from msnvi_tf.runtime import training  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  training.train_and_evaluate(make_shapes_config(
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


@pytest.mark.parametrize("objective,targets,label", [
    ("ind", "image,mask", "ind"), ("hybrid", "mask", "hybrid*"),
    ("hybrid", "image", "hybrid* (img-to-img)"), ("iwae", "mask", "iwae"),
    ("iwae", "image", "iwae (img-to-img)")])
def test_table2_column_comes_from_the_config(objective, targets, label):
  config = Config(configs.get_config("shapes"), objective=objective, targets=targets)
  assert table2.label_of(config) == label
  assert label.split(" ")[0] in table2.PAPER_TABLE2
