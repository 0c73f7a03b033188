"""The latent filter stored with the model (issue 27): fitted at the end of training for
a data set with sequences, kept by the checkpoint, absent from older checkpoints, and the
serving filter step's weights (the export's signatures: test_export.py)."""
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf import registry
from msnvi_tf.core import filtering
from msnvi_tf.core import robust
from msnvi_tf.data import pendulum
from msnvi_tf.runtime import export as export_lib
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import copy_of, make_pendulum_config, make_toy_config

FILTER_VARIABLES = ("transition_matrix", "transition_offset", "transition_noise_cov",
                    "prediction_thresholds", "trend_thresholds")


def toy_sequences(config, num, seed):
  """A `sequences` hook for the toy data set: x = y along 0.8 sin(0.15 t + i)."""
  del config
  frames = 0.15 * np.arange(30)
  out = []
  for i in range(seed, seed + num):
    x = (0.8 * np.sin(frames + i)).astype(np.float32)[:, None]
    out.append({"x": x, "y": x.copy()})
  return out


def _save(model, workdir, config, step=20):
  """`model` as the checkpoint of step `step` of a workdir of `config`."""
  workdir_lib.write_config(config, workdir)
  checkpoint = workdir_lib.checkpoint(model, tf.Variable(step, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "checkpoints"), 1).save(
      checkpoint_number=step)


def _filter_values(model):
  return {name: getattr(model, name).numpy() for name in FILTER_VARIABLES}


def test_the_filter_survives_saving_and_loading_the_workdir(tmp_path):
  config = make_toy_config()
  model = optimizers.compile_model(architectures.build_model(config), config)
  assert model.transition is None  # none until fitted
  model.calibrate_filter(toy_sequences(config, 3, 0), toy_sequences(config, 3, 3))
  assert model.transition is not None
  _save(model, str(tmp_path / "run"), config)
  loaded, _ = workdir_lib.load_trained(str(tmp_path / "run"))
  for name, value in _filter_values(model).items():
    np.testing.assert_array_equal(getattr(loaded, name).numpy(), value, err_msg=name)
  contract = export_lib.ServingModule(loaded, num_samples=4).contract()
  assert set(export_lib.FILTER_SIGNATURES) <= set(contract["signatures"])
  np.testing.assert_array_equal(contract["filter"]["transition"]["noise_cov"],
                                model.transition_noise_cov.numpy())


def test_a_checkpoint_from_before_the_filter_loads_and_exports_without_filter_step(
    tmp_path):
  config = make_toy_config()
  old = optimizers.compile_model(architectures.build_model(config), config)
  for name in FILTER_VARIABLES:  # what a checkpoint written before them holds
    delattr(old, name)
  _save(old, str(tmp_path / "old"), config)
  prefix = tf.train.latest_checkpoint(str(tmp_path / "old" / "checkpoints"))
  assert not any("transition" in name or "prediction_thresholds" in name
                 for name, _ in tf.train.list_variables(prefix))
  model, _ = workdir_lib.load_trained(str(tmp_path / "old"))
  assert model.trained_steps == 20 and model.transition is None
  module = export_lib.ServingModule(model, num_samples=4)
  assert not module.has_filter and module.contract()["filter"] is None
  exported = set(module._serving_functions()) | {"metadata"}  # what export() saves
  assert exported == set(export_lib.SIGNATURES)
  assert "state_cov" not in module.contract()["inputs"]


def test_a_filter_from_before_the_trend_test_loads_and_serves_without_it(tmp_path):
  config = make_toy_config()
  old = optimizers.compile_model(architectures.build_model(config), config)
  old.calibrate_filter(toy_sequences(config, 3, 0), toy_sequences(config, 3, 3))
  assert (old.trend_thresholds.numpy() > 0.).all()
  del old.trend_thresholds  # what a checkpoint of the first filter holds
  _save(old, str(tmp_path / "old"), config)
  prefix = tf.train.latest_checkpoint(str(tmp_path / "old" / "checkpoints"))
  names = [name for name, _ in tf.train.list_variables(prefix)]
  assert any("transition_noise_cov" in n for n in names)
  assert not any("trend_thresholds" in n for n in names)
  model, _ = workdir_lib.load_trained(str(tmp_path / "old"))
  assert model.transition is not None
  np.testing.assert_array_equal(model.trend_thresholds.numpy(), 0.)  # no trend test
  module = export_lib.ServingModule(model, num_samples=4)
  frames = toy_sequences(config, 1, 7)[0]
  state = (tf.zeros([1, 2]), tf.zeros([1, 2, 2]), tf.fill([1, 2, 2], 9.))
  for t in range(5):
    x = {k: tf.constant(v[t:t + 1]) for k, v in frames.items()}
    (loc, cov), _, health, _ = module.filter_step(x, tf.ones([1, 2]), *state)
    np.testing.assert_array_equal(health["trend_score"], 0.)
    state = (loc, cov, tf.transpose(health["trend"], [1, 0, 2]))


def test_training_fits_the_filter_of_a_data_set_with_sequences_into_the_last_checkpoint(
    toy_run, tmp_path, monkeypatch, no_export):
  del no_export
  workdir = copy_of(toy_run, tmp_path)  # trained to step 20 without sequences: no filter
  noise_cov = "model/transition_noise_cov/.ATTRIBUTES/VARIABLE_VALUE"
  last = lambda: tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  assert not tf.train.load_variable(last(), noise_cov).any()
  config = workdir_lib.load_config(workdir)
  monkeypatch.setitem(registry._REGISTRY, "toy", dataclasses.replace(  # pylint: disable=protected-access
      registry.get("toy"), _sequences=toy_sequences))
  training.train_and_evaluate(config.override(["num_steps=30"]), workdir)
  assert last().endswith("ckpt-30") and tf.train.load_variable(last(), noise_cov).any()
  model, config = workdir_lib.load_trained(workdir)
  assert model.trained_steps == 30 and model.transition is not None
  stored = _filter_values(model)
  # What the checkpoint holds is the filter of the hook's sequences of the config's seed.
  num_fit, num_calibration = training.FILTER_SEQUENCES
  healthy = toy_sequences(config, num_fit + num_calibration, config.seed)
  result = model.calibrate_filter(healthy[:num_fit], healthy[num_fit:],
                                  config.conflict_false_alarm_rate)
  assert result.num_fit_frames == num_fit * 30
  for name, value in _filter_values(model).items():
    np.testing.assert_allclose(stored[name], value, rtol=1e-6, err_msg=name)


def test_filter_step_weights_are_the_smaller_of_prediction_and_per_frame_robust_weights():
  # Three cameras (with two sources the per-frame robust weights are always 1).
  config = make_pendulum_config()
  model = optimizers.compile_model(architectures.build_model(config), config)
  batch, _ = pendulum.make_sequence(pendulum.Rig.from_config(make_pendulum_config()), 6, 3)
  x = {s: tf.constant(batch[s]) for s in model.sources}
  model.transition_matrix.assign([[0.9, -0.4], [0.4, 0.9]])
  model.transition_offset.assign([0.05, 0.])
  model.transition_noise_cov.assign([[0.02, 0.005], [0.005, 0.03]])
  model.conflict_thresholds.assign(tf.fill([3, 3], 0.05))
  model.prediction_thresholds.assign(tf.fill([2, 3], 0.5))
  rng = np.random.default_rng(0)
  factor = rng.normal(0., 0.3, (6, 2, 2))
  state_loc = tf.constant(rng.normal(0., 0.5, (6, 2)), tf.float32)
  state_cov = tf.constant(factor @ factor.transpose(0, 2, 1) + 0.05 * np.eye(2), tf.float32)
  present = tf.constant([[1., 1., 1.]] * 5 + [[1., 1., 0.]])
  module = export_lib.ServingModule(model, num_samples=4)
  (loc, cov), _, health, start = module.filter_step(x, present, state_loc, state_cov,
                                                    tf.zeros([6, 3, 2]))
  np.testing.assert_array_equal(health["trend_score"], 0.)  # trend test uncalibrated
  beliefs = model.encode_stacked(x, model.sources)
  mask = tf.transpose(present)
  pred_loc, pred_cov = filtering.predict(state_loc, state_cov, model.transition)
  by_prediction = filtering.prediction_weights(
      filtering.prediction_conflict(pred_loc, pred_cov, *beliefs),
      model.prediction_thresholds, mask)["weight"].numpy()
  by_frame = robust.robust_weights(*beliefs, mask, model.conflict_thresholds).numpy()
  assert (by_frame < by_prediction).any() and (by_prediction < by_frame).any()
  weight = np.minimum(by_prediction, by_frame)
  np.testing.assert_allclose(health["weight"], weight, rtol=1e-6)
  expected = filtering.update(pred_loc, pred_cov, *beliefs, weight)
  np.testing.assert_allclose(loc, expected[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cov, expected[1], rtol=1e-5, atol=1e-6)
  assert not start.numpy().any()


def test_pendulum_sequences_are_healthy_and_deterministic_from_the_seed():
  sequences = registry.get("pendulum").sequences
  assert sequences is pendulum.healthy_sequences
  assert registry.get("toy").sequences is None and registry.get("mnist_tb").sequences is None
  config = make_pendulum_config()
  two = sequences(config, 2, 5)
  assert [sorted(s) for s in two] == [sorted(pendulum.SOURCES + (pendulum.TARGET,))] * 2
  assert two[0]["camera0"].shape == (360, 32, 32) and two[0]["position"].shape == (360, 2)
  # Sequence i does not depend on how many are drawn; another seed is another one.
  second = pendulum.healthy_sequences(config, 1, 5, first=1)[0]
  for key, value in two[1].items():
    np.testing.assert_array_equal(second[key], value, err_msg=key)
  assert not np.array_equal(sequences(config, 1, 6)[0]["camera0"], two[0]["camera0"])
  # Constant speed: 120 frames per rotation, a random start angle.
  angles = np.arctan2(two[0]["position"][:, 1], two[0]["position"][:, 0])
  np.testing.assert_allclose(np.angle(np.exp(1j * np.diff(angles))), 2. * np.pi / 120.,
                             rtol=1e-4)
