"""Calibrated conflict thresholds, sensor-health alarms, their report and faults."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf import architectures
from msnvi_tf.core import calibration
from msnvi_tf.experiments import dispatch
from msnvi_tf.experiments import health_report
from msnvi_tf.experiments import mnist_health
from msnvi_tf.core import monitor
from msnvi_tf.core import robust
from msnvi_tf.runtime import training
from msnvi_tf.data import pendulum
from msnvi_tf.runtime import workdir as workdir_lib

# Healthy conflicts of three sources: c(i || j) ~ scale_ij * Exponential(1), pairs
# of very different scale (as cameras with different views).
SCALES = np.array([[1., 0.2, 0.5], [0.1, 1., 2.], [0.3, 0.05, 1.]])


def _healthy_conflicts(num, seed):
  c = np.random.default_rng(seed).exponential(size=(num, 3, 3)) * SCALES
  c[:, np.arange(3), np.arange(3)] = 0.
  return c.astype(np.float32)


def test_calibration_meets_the_false_alarm_target_on_new_healthy_data():
  alpha = 0.01
  result = calibration.calibrate(_healthy_conflicts(20_000, 0), alpha)
  assert result.num_examples == 20_000
  # On the calibration data at most alpha, and the smallest level that is.
  assert alpha - 5e-4 <= result.false_alarm_rate <= alpha
  lower = calibration.pair_quantiles(_healthy_conflicts(20_000, 0), result.level - 1e-3)
  assert calibration.false_alarm_rate(_healthy_conflicts(20_000, 0), lower) > alpha
  # On fresh healthy data within sampling error (4 binomial std).
  fresh = calibration.false_alarm_rate(_healthy_conflicts(20_000, 1), result.thresholds)
  assert abs(fresh - alpha) < 4. * math.sqrt(alpha * (1. - alpha) / 20_000)
  # Per-pair quantiles of exponentials: the thresholds scale like the pairs.
  off = ~np.eye(3, dtype=bool)
  ratio = result.thresholds[off] / SCALES[off]
  np.testing.assert_allclose(ratio / ratio.mean(), 1., rtol=0.1)
  np.testing.assert_array_equal(np.diag(result.thresholds), 1.)


def test_fixed_threshold_flags_healthy_pairs_that_calibration_accepts():
  conflicts = _healthy_conflicts(5_000, 2)
  # tau = 1 raises alarms on the large-scale pair (1 -> 2) far beyond 1 %.
  assert calibration.false_alarm_rate(conflicts, 1.) > 0.05
  result = calibration.calibrate(conflicts, 0.01)
  assert calibration.false_alarm_rate(conflicts, result.thresholds) <= 0.01


def test_scaling_one_pair_scales_its_threshold_and_keeps_the_alarms():
  conflicts = _healthy_conflicts(4_000, 3)
  scaled = conflicts.copy()
  scaled[:, 0, 1] *= 10.
  a = calibration.calibrate(conflicts, 0.02)
  b = calibration.calibrate(scaled, 0.02)
  assert b.level == pytest.approx(a.level)
  np.testing.assert_allclose(b.thresholds[0, 1], 10. * a.thresholds[0, 1], rtol=1e-5)
  np.testing.assert_array_equal(
      robust.conflict_scores(conflicts, a.thresholds).numpy() > 1.,
      robust.conflict_scores(scaled, b.thresholds).numpy() > 1.)


def test_calibration_rejects_bad_input():
  with pytest.raises(ValueError, match=r"\[N, M, M\]"):
    calibration.calibrate(np.zeros((5, 3, 2)))
  with pytest.raises(ValueError, match="two sources"):
    calibration.calibrate(np.zeros((5, 1, 1)))
  bad = _healthy_conflicts(10, 0)
  bad[0, 0, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    calibration.calibrate(bad)
  with pytest.raises(ValueError, match="target_rate"):
    calibration.calibrate(_healthy_conflicts(10, 0), 1.)


def _stacked(num=4):
  """Beliefs `[3, B, 2]`: sources 0 and 1 agree, source 2 sits elsewhere."""
  loc = np.zeros((3, num, 2), np.float32)
  loc[0] = 0.5
  loc[1] = 0.52
  loc[2] = -0.3
  scale = np.full((3, num, 2), 0.2, np.float32)
  return tf.constant(loc), tf.constant(scale)


def test_unit_thresholds_are_the_fixed_rule_and_a_matrix_is_per_pair():
  loc, scale = _stacked()
  fixed = robust.sensor_health(loc, scale)
  ones = robust.sensor_health(loc, scale, thresholds=tf.ones([3, 3]))
  for key in fixed:
    np.testing.assert_array_equal(fixed[key].numpy(), ones[key].numpy())
  # Source 2 conflicts with both others: only it raises the alarm and is muted.
  np.testing.assert_array_equal(fixed["alarm"].numpy()[:, 0], [False, False, True])
  assert fixed["weight"].numpy()[2, 0] < 0.1
  # Thresholds above its conflicts (here 2x) accept source 2 again: the PoE.
  score = fixed["score"].numpy()[2, 0]
  tau = np.ones((3, 3), np.float32)
  tau[2, :2] = tau[:2, 2] = 2. * score
  relaxed = robust.sensor_health(loc, scale, thresholds=tau)
  assert not relaxed["alarm"].numpy().any()
  np.testing.assert_array_equal(relaxed["weight"].numpy(), 1.)
  np.testing.assert_allclose(relaxed["score"].numpy()[2], 0.5, rtol=1e-5)


def test_absent_sources_have_no_alarm_and_no_weight():
  loc, scale = _stacked(2)
  mask = tf.constant([[1., 1.], [1., 0.], [1., 1.]])
  health = robust.sensor_health(loc, scale, mask)
  assert not health["alarm"].numpy()[1, 1] and health["weight"].numpy()[1, 1] == 0.
  assert np.isinf(health["score"].numpy()[1, 1])


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


def test_sensor_health_report_runs_on_a_trained_pendulum(pendulum_run, tmp_path):
  from msnvi_tf.experiments import pendulum_sensors  # pylint: disable=g-import-not-at-top
  paths = pendulum_sensors.run_experiment(
      pendulum_run, str(tmp_path), faults=("noise", "shift"), frames_per_rotation=12,
      num_samples=4, num_healthy=2, calibration_size=100)
  names = sorted(p.rsplit("/", 1)[-1] for p in paths)
  assert names == ["fig5_noise.png", "fig5_shift.png", "results.md", "roc.png"]
  text = (tmp_path / "results.md").read_text()
  assert "False alarms" in text and "| shift |" in text and "robust, tau = 1" in text
  assert text.startswith("Model: run (L_ind, 40 steps);")  # the checkpoint evaluated


def test_bin_plot_of_a_pendulum_run_draws_fig5_per_fault(pendulum_run, tmp_path):
  paths = dispatch.plot([pendulum_run], str(tmp_path), faults=["black"],
                        frames_per_rotation=12, num_samples=4)
  assert paths == [str(tmp_path / "fig5_black.png")]
  assert os.path.getsize(paths[0]) > 10_000


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
  assert health_report.false_alarm_rate(alarm) == 0.4


@pytest.mark.parametrize("kind", mnist_health.CORRUPTIONS)
def test_mnist_corruptions_are_deterministic_binary_and_change_the_source(kind):
  rng = np.random.default_rng(0)
  values = (rng.random((50, 196)) < 0.2).astype(np.float32)
  labels = np.arange(50) % 10
  a = mnist_health.corrupt(values, kind, 3, labels)
  b = mnist_health.corrupt(values, kind, 3, labels)
  np.testing.assert_array_equal(a, b)
  assert a.shape == values.shape and set(np.unique(a)) <= {0., 1.}
  assert np.any(a != values)
  images, out = values.reshape(50, 14, 14), a.reshape(50, 14, 14)
  if kind == "shift":
    np.testing.assert_array_equal(out[:, :, 3:], images[:, :, :11])
  elif kind == "rotate":
    np.testing.assert_array_equal(out, np.rot90(images, 1, axes=(1, 2)))
  elif kind == "swap":  # another example's source, with a different label
    rows = [np.flatnonzero((values == row).all(1)) for row in a]
    assert all(len(r) and np.all(labels[r] != labels[i]) for i, r in enumerate(rows))


def test_mnist_corrupt_rejects_bad_input():
  with pytest.raises(ValueError, match="Unknown corruption"):
    mnist_health.corrupt(np.zeros((2, 4)), "melt", 0)
  with pytest.raises(ValueError, match="square"):
    mnist_health.corrupt(np.zeros((2, 5)), "blank", 0)
  with pytest.raises(ValueError, match="labels"):
    mnist_health.corrupt(np.zeros((2, 4)), "swap", 0)


def test_windowed_log_score_is_the_causal_mean_of_log_scores():
  scores = np.array([[1., np.e, np.e ** 2, np.e ** 3], [0., 1., 1., 1.]])
  out = monitor.windowed_log_scores(scores, 2)
  np.testing.assert_allclose(out[0], [0., 0.5, 1.5, 2.5])  # frame 0 fills the window
  assert out[1, 0] == pytest.approx(math.log(1e-6))  # a zero score counts as eps
  np.testing.assert_allclose(monitor.windowed_log_scores(scores, 1), np.log(
      np.maximum(scores, 1e-6)))
  with pytest.raises(ValueError, match="window"):
    monitor.windowed_log_scores(scores, 0)


def test_monitor_sees_a_small_lasting_rise_that_single_frames_miss():
  rng = np.random.default_rng(0)
  healthy = [rng.lognormal(-1., 1., (3, 400)) for _ in range(20)]
  mon = monitor.calibrate_monitor(healthy, window=10, target_rate=0.01)
  assert mon.false_alarm_rate <= 0.01 and mon.num_frames == 8000
  fresh = [rng.lognormal(-1., 1., (3, 400)) for _ in range(20)]
  fresh_rate = np.mean(np.concatenate([monitor.monitor_alarms(s, mon) for s in fresh],
                                      1).any(0))
  assert fresh_rate < 0.03
  # Source 0 scores e^1.5 times higher from frame 200 on: inside the healthy
  # spread frame by frame, but not over a window.
  faulty = rng.lognormal(-1., 1., (3, 400))
  faulty[0, 200:] *= math.exp(1.5)
  alarms = monitor.monitor_alarms(faulty, mon)
  assert alarms[0, 200:].mean() > 0.6 and not alarms[0, :200].any()
  single = monitor.calibrate_monitor(healthy, window=1, target_rate=0.01)
  assert monitor.monitor_alarms(faulty, single)[0, 200:].mean() < 0.4


@pytest.mark.usefixtures("no_export")
def test_mnist_sensor_health_report_runs_on_a_tiny_trained_model(tmp_path):
  workdir = str(tmp_path / "qu")
  config = configs.get_config("mnist_qu").override([
      "train_size=256", "eval_size=256", "batch_size=32", "eval_batch_size=128",
      "num_samples=2", "eval_num_samples=2", "hidden=[16]", "latent_dim=4",
      "num_steps=20", "steps_per_call=10", "log_every=10", "eval_every=20",
      "checkpoint_every=20", "export_num_samples=2"])
  training.train_and_evaluate(config, workdir)
  # What bin/evaluate --sensor_health runs: the Table 1 grid, then the report.
  paths = dispatch.evaluate([workdir], str(tmp_path / "out"), sensor_health=True,
                            faults=["swap", "blank"], num_samples=2, eval_size=1000, large_k=0)
  assert sorted(os.path.relpath(p, tmp_path / "out") for p in paths) == [
      "large_k.csv", "large_k_proposals.csv", "results.json", "sensor_health/results.md",
      "sensor_health/roc.png", "table1.csv", "table1.md"]
  assert "MNIST-QU" in (tmp_path / "out" / "table1.md").read_text()
  text = (tmp_path / "out" / "sensor_health" / "results.md").read_text()
  assert "test images 0-499" in text and "| swap |" in text and "| blank |" in text
  assert "500 images" in text
  script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bin", "evaluate")
  refused = subprocess.run([sys.executable, script, f"--workdirs={workdir}",
                            "--sensor_health", "--faults=melt"],
                           capture_output=True, text=True, timeout=600)
  assert refused.returncode != 0
  assert refused.stderr.strip().splitlines()[-1] == (
      f"bin/evaluate: faults: choose from {list(mnist_health.CORRUPTIONS)}; got ['melt'].")


def test_bad_calibration_data_and_workdirs_are_clear_errors(pendulum_run, tmp_path):
  model, _ = workdir_lib.load_trained(pendulum_run)
  with pytest.raises(ValueError, match="dataset is empty"):
    model.calibrate_conflict([])
  workdir = tmp_path / "toy"
  workdir.mkdir()
  (workdir / "config.json").write_text(configs.get_config("toy").to_json())
  with pytest.raises(ValueError, match=r"sensor_health needs mnist_qu or mnist_no .*\(toy\)"):
    dispatch.evaluate([str(workdir)], str(tmp_path / "out"), sensor_health=True)
