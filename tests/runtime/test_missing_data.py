"""Training on incomplete data: masks in the data, the model's checks, resume (issue 26)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import copy_of, make_toy_config
from msnvi_tf import architectures
from msnvi_tf import data as data_lib
from msnvi_tf.runtime import config as config_lib
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib


def test_masks_are_fixed_per_example_with_a_source_always_present():
  missing = data_lib.Missingness(0.5, ("q0", "q1", "q2", "q3"), seed=3)
  masks = missing.masks(20_000, "train")
  np.testing.assert_array_equal(masks, missing.masks(20_000, "train"))  # (seed, split)
  assert masks.min(-1).min() == 0. and masks.max(-1).min() == 1.  # never all absent
  # P(absent) = p, except where all four were drawn absent (1/16) and one came back.
  np.testing.assert_allclose(1. - masks.mean(), 0.5 - 1. / 16. / 4., atol=0.01)
  np.testing.assert_allclose(masks.all(-1).mean(), 1. / 16., atol=0.01)
  assert not np.array_equal(masks[:1000], missing.masks(1000, "test"))
  # Only p = 0 is no missingness; a config without the field has none either.
  assert data_lib.missingness(make_toy_config(), ("x", "y")) is None


def _toy_batches(config, start_step=0):
  from msnvi_tf.data import toy  # pylint: disable=g-import-not-at-top
  train, test = toy.make_datasets(config, start_step)
  return next(iter(train)), next(iter(test))


def test_training_batches_carry_the_masks_of_their_examples_and_resume_with_them():
  config = make_toy_config().override(["missing_rate=0.5", "batch_size=64"])
  train, test = _toy_batches(config)
  present = {k: v.numpy() for k, v in train[data_lib.PRESENT].items()}
  assert sorted(present) == ["x", "y"]
  assert np.all(present["x"] + present["y"] >= 1.) and present["x"].min() == 0.
  assert sorted(test[data_lib.PRESENT]) == ["x", "y"]
  # Reports (bin/evaluate) evaluate the complete test data.
  complete = next(iter(data_lib.test_batches(config)))
  assert data_lib.PRESENT not in complete
  np.testing.assert_array_equal(complete["x"], test["x"])
  # Batch 7 of a resumed stream is batch 7 of the uninterrupted one, masks included.
  stream = data_lib.make_datasets(config)[0]
  seventh = next(iter(stream.skip(7)))
  resumed = next(iter(data_lib.make_datasets(config, start_step=7)[0]))
  for key in ("x", "y"):
    np.testing.assert_array_equal(resumed[key], seventh[key])
    np.testing.assert_array_equal(resumed[data_lib.PRESENT][key],
                                  seventh[data_lib.PRESENT][key])


def test_complete_only_serves_only_the_complete_examples():
  examples = {"a": np.arange(1000, dtype=np.float32)[:, None],
              "b": np.arange(1000, dtype=np.float32)[:, None]}
  missing = data_lib.Missingness(0.5, ("a", "b"), seed=0, handling="complete_only")
  complete = np.flatnonzero(missing.masks(1000, "train").all(-1))
  stream = data_lib.training_batches(examples, 50, seed=0, missing=missing)
  seen = np.concatenate([batch["a"].numpy()[:, 0] for batch in stream.take(40)])
  assert data_lib.PRESENT not in next(iter(stream))
  assert set(seen.astype(int)) == set(complete)  # 2,000 draws cover the ~330 complete
  with pytest.raises(ValueError, match="complete_only' has nothing to train on"):
    data_lib.training_batches(
        {"a": examples["a"][:2], "b": examples["b"][:2]}, 1, seed=0,
        missing=data_lib.Missingness(0.99, ("a", "b"), 0, "complete_only"))


def test_iwae_on_masked_data_and_bad_missing_fields_are_refused():
  config = make_toy_config()
  with pytest.raises(ValueError, match="objective 'iwae' cannot train on examples with"):
    config_lib.validate(config.override(["objective=iwae", "missing_rate=0.3"]))
  config_lib.validate(config.override(
      ["objective=iwae", "missing_rate=0.3", "missing_handling=complete_only"]))
  with pytest.raises(ValueError, match="missing_rate must be a number >= 0 and < 1"):
    config_lib.validate(config.override(["missing_rate=1.0"]))
  with pytest.raises(ValueError, match="missing_handling must be one of"):
    config_lib.validate(config.override(["missing_handling='drop'"]))


@pytest.fixture(scope="module")
def toy_model():
  config = make_toy_config()
  return optimizers.compile_model(architectures.build_model(config), config)


def _weights(model, prefix):
  return [v.numpy().copy() for v in model.trainable_variables if v.path.startswith(prefix)]


def test_a_train_step_without_source_x_leaves_its_encoder_and_decoder_unchanged(toy_model):
  batch, _ = _toy_batches(make_toy_config())
  batch = {**batch, data_lib.PRESENT: {"x": tf.zeros([32]), "y": tf.ones([32])}}
  names = sorted({v.path.split("/")[0] for v in toy_model.trainable_variables})
  before = {name: _weights(toy_model, name) for name in names}
  toy_model.train_step(batch)
  for name in names:
    changed = [not np.array_equal(a, b) for a, b in zip(before[name],
                                                        _weights(toy_model, name))]
    if name.endswith("_x"):
      assert not any(changed), name  # zero gradient: Adam moves nothing
    else:
      assert all(changed), name


def test_bad_presence_masks_are_clear_errors(toy_model):
  batch, _ = _toy_batches(make_toy_config())
  none_present = {**batch, data_lib.PRESENT: {"x": tf.zeros([32]), "y": tf.zeros([32])}}
  with pytest.raises(tf.errors.InvalidArgumentError, match="none of the sources"):
    tf.function(toy_model.test_step)(none_present)
  half = {**batch, data_lib.PRESENT: {"x": tf.fill([32], 0.5)}}
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"must hold 0 \(absent\) or 1"):
    tf.function(toy_model.test_step)(half)
  with pytest.raises(ValueError, match="names \\['z'\\], which the model does not read"):
    toy_model.test_step({**batch, data_lib.PRESENT: {"z": tf.ones([32])}})


@pytest.mark.slow
@pytest.mark.usefixtures("no_export")
def test_masked_training_reports_both_test_bounds_and_resumes_exactly(tmp_path):
  config = make_toy_config().override(["missing_rate=0.5", "objective=hybrid",
                                       "num_steps=40", "eval_every=20"])
  once = training.train_and_evaluate(config, str(tmp_path / "once"))
  for key in ("bound", "ind", "moe", "poe"):
    assert np.isfinite(once[f"missing_{key}"]) and once[f"missing_{key}"] != once[key]
  assert os.listdir(tmp_path / "once" / "eval_missing")  # TensorBoard run
  training.train_and_evaluate(config.override(["num_steps=20"]), str(tmp_path / "twice"))
  assert training.train_and_evaluate(config, str(tmp_path / "twice")) == once
  # Masked and complete training differ (the masks reach the objective).
  complete = training.train_and_evaluate(
      config.override(["missing_rate=0.0"]), str(tmp_path / "complete"))
  assert complete["bound"] != once["bound"]


@pytest.mark.usefixtures("no_export")
def test_a_workdir_written_before_the_missing_fields_existed_resumes(toy_run, tmp_path):
  config = make_toy_config()  # toy_run's, trained to step 20
  workdir = copy_of(toy_run, tmp_path, "old")
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    saved = json.load(f)
  del saved["missing_rate"], saved["missing_handling"]
  with open(path, "w") as f:
    json.dump(saved, f)
  assert training.train_and_evaluate(config.override(["num_steps=30"]), workdir)["step"] == 30
  with pytest.raises(ValueError, match="missing_rate: 0.0 -> 0.5"):
    training.train_and_evaluate(config.override(["missing_rate=0.5"]), workdir)


@pytest.mark.parametrize("name", ["toy", "pendulum", "shapes", "mnist_tb", "mnist_qu",
                                  "mnist_no"])
def test_every_built_in_data_set_hides_its_sources_and_only_those(name):
  import conftest  # pylint: disable=g-import-not-at-top
  config = {"toy": make_toy_config, "pendulum": conftest.make_pendulum_config,
            "shapes": conftest.make_shapes_config}.get(
                name, lambda: conftest.make_mnist_config(name))()
  config = config.override(["missing_rate=0.5"])
  model = optimizers.compile_model(architectures.build_model(config), config)
  train, test = data_lib.make_datasets(config)
  for batch in (next(iter(train)), next(iter(test))):
    assert sorted(batch[data_lib.PRESENT]) == sorted(model.sources), name
    sources, _ = model.presence(batch)
    assert np.all(sources.numpy().max(0) == 1.) and sources.numpy().min() == 0.
