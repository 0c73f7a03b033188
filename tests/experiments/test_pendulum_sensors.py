"""The sensor-health experiment of Sec. 5.3 on a trained pendulum: thresholds calibrated
by training and served by the export, the robust integration, the report, Fig. 5."""
import os

import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf import architectures
from msnvi_tf.core import calibration
from msnvi_tf.core import robust
from msnvi_tf.data import pendulum
from msnvi_tf.experiments import dispatch
from msnvi_tf.experiments import health_report
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib


@pytest.fixture(scope="module")
def pendulum_config():
  return configs.get_config("pendulum").override([
      "train_size=200", "eval_size=256", "eval_batch_size=64", "num_steps=40",
      "steps_per_call=20", "log_every=20", "eval_every=40", "checkpoint_every=40",
      "export_num_samples=4", "batch_size=32", "learning_rate=0.003"])


@pytest.fixture(scope="module")
def pendulum_run(pendulum_config, tmp_path_factory):
  """A pendulum workdir trained 40 steps (calibrated at the end)."""
  workdir = str(tmp_path_factory.mktemp("pendulum") / "run")
  training.train_and_evaluate(pendulum_config, workdir)
  return workdir


@pytest.mark.slow
def test_training_stores_the_calibration_in_checkpoint_and_export(pendulum_run,
                                                                 pendulum_config):
  model, _ = workdir_lib.load_trained(pendulum_run)
  assert model.conflict_calibrated
  # Recalibrating on the same evaluation data gives the stored thresholds.
  fresh = architectures.build_model(pendulum_config)
  fresh.set_weights(model.get_weights())
  fresh.conflict_thresholds.assign(tf.ones([3, 3]))
  assert not fresh.conflict_calibrated
  from msnvi_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  _, eval_ds = data_lib.make_datasets(pendulum_config)
  result = fresh.calibrate_conflict(eval_ds, pendulum_config.conflict_false_alarm_rate)
  np.testing.assert_array_equal(result.thresholds, model.conflict_thresholds.numpy())
  # The export serves them: sensor_health flags and weights equal the model's.
  loaded = tf.saved_model.load(f"{pendulum_run}/export/40")
  batch, _ = pendulum.make_sequence(pendulum.Rig.from_config(pendulum_config), 24, 3,
                                    fault="noise", fault_start=12)
  x = {s: tf.constant(batch[s]) for s in model.sources}
  served = loaded.signatures["sensor_health"](present=tf.ones([24, 3]), **x)
  health = model.sensor_health(x)
  for key, name in (("weight", "weights"), ("alarm", "alarm"), ("score", "score")):
    expected = np.stack([health[key][s].numpy() for s in model.sources], 1)  # [B, M]
    np.testing.assert_allclose(served[name].numpy(), expected, rtol=1e-5)
  assert served["position"].shape == (24, 2)
  absent = loaded.signatures["sensor_health"](
      present=tf.constant([[1., 1., 0.]] * 24), **x)
  assert (absent["score"].numpy()[:, 2] == 0.).all() and not absent["valid"].numpy()[:, 2].any()
  assert not absent["alarm"].numpy()[:, 2].any()
  assert (absent["weights"].numpy()[:, 2] == 0.).all()


@pytest.mark.slow
def test_robust_integration_of_the_model_uses_its_thresholds(pendulum_run):
  model, config = workdir_lib.load_trained(pendulum_run)
  batch, _ = pendulum.make_sequence(pendulum.Rig.from_config(config), 16, 4)
  x = {s: tf.constant(batch[s]) for s in model.sources}
  beliefs = model.encode(x)
  loc = np.stack([beliefs[s].mean() for s in model.sources])
  scale = np.stack([beliefs[s].stddev() for s in model.sources])
  for tau in (np.full((3, 3), 1e-3, np.float32), np.full((3, 3), 1e3, np.float32)):
    model.conflict_thresholds.assign(tau)
    expected, _, _ = robust.robust_stacked(loc, scale, None, tau)
    np.testing.assert_allclose(model.integrate(beliefs, "robust").mean(), expected,
                               rtol=1e-5)
    # A subset picks its rows and columns of the thresholds.
    sub = model.integrate(beliefs, "robust", ["camera2", "camera0"]).mean()
    expected_sub, _, _ = robust.robust_stacked(loc[[2, 0]], scale[[2, 0]], None,
                                               tau[np.ix_([2, 0], [2, 0])])
    np.testing.assert_allclose(sub, expected_sub, rtol=1e-5)


@pytest.mark.slow
def test_sensor_health_report_runs_on_a_trained_pendulum(pendulum_run, tmp_path):
  from msnvi_tf.experiments.pendulum import sensors as pendulum_sensors  # pylint: disable=g-import-not-at-top
  paths = pendulum_sensors.run_experiment(
      pendulum_run, str(tmp_path), faults=("noise", "shift"), frames_per_rotation=12,
      num_samples=4, num_healthy=2, calibration_size=100)
  names = sorted(p.rsplit("/", 1)[-1] for p in paths)
  assert names == ["fig5_noise.png", "fig5_shift.png", "results.md", "roc.png"]
  text = (tmp_path / "results.md").read_text()
  assert "False alarms" in text and "| shift |" in text and "robust, tau = 1" in text
  assert text.startswith("Model: run (L_ind, 40 steps);")  # the checkpoint evaluated


@pytest.mark.slow
def test_bin_plot_of_a_pendulum_run_draws_fig5_per_fault(pendulum_run, tmp_path):
  paths = dispatch.plot([pendulum_run], str(tmp_path), faults=["black"],
                        frames_per_rotation=12, num_samples=4)
  assert paths == [str(tmp_path / "fig5_black.png")]
  assert os.path.getsize(paths[0]) > 10_000


@pytest.mark.slow
def test_bad_calibration_data_and_workdirs_are_clear_errors(pendulum_run, tmp_path):
  model, _ = workdir_lib.load_trained(pendulum_run)
  with pytest.raises(ValueError, match="dataset is empty"):
    model.calibrate_conflict([])
  workdir = tmp_path / "toy"
  workdir.mkdir()
  (workdir / "config.json").write_text(configs.get_config("toy").to_json())
  with pytest.raises(ValueError, match=r"^sensor_health: not an option for toy workdirs"):
    dispatch.evaluate([str(workdir)], str(tmp_path / "out"), sensor_health=True)
  with pytest.raises(ValueError, match=r"^sensor_health: not an option for pendulum "):
    dispatch.evaluate([pendulum_run], str(tmp_path / "out"), sensor_health=True)
  assert not (tmp_path / "out").exists()


def test_roc_and_detection_numbers():
  assert health_report.roc_auc([0., 1.], [2., 3.]) == 1.
  assert health_report.roc_auc([0., 1.], [0., 1.]) == pytest.approx(0.5)
  assert health_report.roc_auc([2., 3.], [0., 1.]) == 0.
  fpr, tpr = health_report.roc_curve([0., 1., 2., 3.], [1.5, 2.5])
  assert fpr[0] == tpr[0] == 0. and fpr[-1] == tpr[-1] == 1.
  assert np.all(np.diff(fpr) >= 0.) and np.all(np.diff(tpr) >= 0.)
  alarm = np.zeros((3, 10), bool)
  alarm[0, 7:] = True
  alarm[2, 5] = True
  found = health_report.detection(alarm, faulty=0, start=4)
  assert found == {"rate": 0.5, "delay": 3, "misattributed": 1. / 6.}
  assert health_report.detection(alarm, faulty=1, start=4)["delay"] is None
  assert calibration.false_alarm_rate(alarm) == 0.4


@pytest.mark.slow
def test_filter_experiment_writes_its_table_with_finite_numbers(pendulum_run, tmp_path):
  from msnvi_tf.experiments.pendulum import latent_filter as pendulum_filter  # pylint: disable=g-import-not-at-top
  result = pendulum_filter.run_filter_experiment(
      pendulum_run, str(tmp_path), num_fit=2, num_calibration=2, num_healthy=1,
      num_samples=4, faults=("noise",), unlisted_faults=("swap",), frames_per_rotation=20)
  assert sorted(result["rows"]) == ["healthy", "healthy, after", "noise", "swap"]
  assert result["rows"]["swap"]["unlisted"] and not result["rows"]["noise"]["unlisted"]
  for row in result["rows"].values():
    assert all(np.isfinite(row[k]) for k in ("PoE", "robust", "filter", "robust filter"))
  assert 0. <= result["false_alarms"] <= 1.
  assert np.isfinite(result["dropout"]["filter"])
  assert all(np.isfinite(v) for v in result["camera_dropout"].values())
  assert 0. < result["camera_dropout_missing"] < 0.6
  text = open(os.path.join(str(tmp_path), "results.md")).read()
  assert "| noise |" in text and "Every camera missing" in text
  assert text.index("| noise |") < text.index("not in the built-in list") < text.index(
      "| swap |")
  assert text.count("| healthy, after |") == 2  # the reference row of both tables
  assert "Each camera missing on its own with probability 0.3" in text
  for sequence in ("healthy", "noise", "swap"):
    png = os.path.join(str(tmp_path), f"filter_{sequence}.png")
    assert png in result["paths"]
    with open(png, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_unlisted_fault_is_injected_into_the_healthy_sequence_of_the_same_seed():
  from msnvi_tf.data import pendulum_faults  # pylint: disable=g-import-not-at-top
  from msnvi_tf.experiments.pendulum import sensors  # pylint: disable=g-import-not-at-top
  rig = pendulum.Rig()
  listed = sensors.faulty_sequence(rig, 30, 4, fault="lag", fault_start=20)
  expected = pendulum.make_sequence(rig, 30, 4, fault="lag", fault_start=20)
  for key in expected[0]:
    np.testing.assert_array_equal(listed[0][key], expected[0][key])
  healthy, angles = pendulum.make_sequence(rig, 30, 4)
  batch, _ = sensors.faulty_sequence(rig, 30, 4, fault="mirror", fault_sensor=2)
  faulty = pendulum_faults.inject_unlisted_fault(
      np.stack([healthy[s] for s in pendulum.SOURCES]), rig.render(angles), "mirror", 2,
      20, 4)  # the default start: after 2/3 of the frames
  for i, s in enumerate(pendulum.SOURCES):
    np.testing.assert_array_equal(batch[s], faulty[i])
  np.testing.assert_array_equal(batch["position"], healthy["position"])
