"""Conflict thresholds calibrated on healthy data, and the windowed monitor over time."""
import math

import numpy as np
import pytest

from msnvi_tf.core import calibration
from msnvi_tf.core import monitor
from msnvi_tf.core import robust

# Healthy conflicts of three sources: c(i || j) ~ scale_ij * Exponential(1), pairs
# of very different scale (as cameras with different views).
SCALES = np.array([[1., 0.2, 0.5], [0.1, 1., 2.], [0.3, 0.05, 1.]])


def _healthy_conflicts(num, seed):
  c = np.random.default_rng(seed).exponential(size=(num, 3, 3)) * SCALES
  c[:, np.arange(3), np.arange(3)] = 0.
  return c.astype(np.float32)


def _rate(conflicts, thresholds):
  """False-alarm rate (Eq. K2) of the alarms (Eq. R6) under `thresholds`."""
  return calibration.false_alarm_rate(robust.conflict_scores(conflicts, thresholds) > 1.)


def test_calibration_meets_the_false_alarm_target_on_new_healthy_data():
  alpha = 0.01
  result = calibration.calibrate(_healthy_conflicts(20_000, 0), alpha)
  assert result.num_examples == 20_000
  # On the calibration data at most alpha, and the smallest level that is.
  assert alpha - 5e-4 <= result.false_alarm_rate <= alpha
  lower = calibration.pair_quantiles(_healthy_conflicts(20_000, 0), result.level - 1e-3)
  assert _rate(_healthy_conflicts(20_000, 0), lower) > alpha
  # On fresh healthy data within sampling error (4 binomial std).
  fresh = _rate(_healthy_conflicts(20_000, 1), result.thresholds)
  assert abs(fresh - alpha) < 4. * math.sqrt(alpha * (1. - alpha) / 20_000)
  # Per-pair quantiles of exponentials: the thresholds scale like the pairs.
  off = ~np.eye(3, dtype=bool)
  ratio = result.thresholds[off] / SCALES[off]
  np.testing.assert_allclose(ratio / ratio.mean(), 1., rtol=0.1)
  np.testing.assert_array_equal(np.diag(result.thresholds), 1.)


def test_fixed_threshold_flags_healthy_pairs_that_calibration_accepts():
  conflicts = _healthy_conflicts(5_000, 2)
  # tau = 1 raises alarms on the large-scale pair (1 -> 2) far beyond 1 %.
  assert _rate(conflicts, 1.) > 0.05
  result = calibration.calibrate(conflicts, 0.01)
  assert _rate(conflicts, result.thresholds) <= 0.01


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
