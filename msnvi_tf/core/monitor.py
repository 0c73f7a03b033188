"""Sequential sensor-health monitor for streams of frames (beyond the paper).

The per-frame alarm of Eq. (R6) (`msnvi_tf.core.robust`) sees one frame at a time.
A fault that keeps the frames plausible (a camera slightly moved, a delayed
stream) raises a source's score s_m a little on most frames rather than a lot
on one, so it hides in the healthy tail frame by frame. A stream reveals it:
the monitor averages the log score over the last W frames,

    L_m(t) = 1/W sum_{u = t-W+1}^{t} ln max(s_m(u), eps),                  (S1)

(frames before the first count as the first: the window is full from t = 0)
and raises source m's alarm when L_m(t) > eta_m. The thresholds are calibrated
as the per-frame ones (`msnvi_tf.core.calibration`, Eqs. K1-K2), on healthy
sequences: eta_m is the q-quantile of source m's L_m over their frames, at the
smallest common level q whose rate of frames with any alarm is <= alpha.

The per-frame scores come from `MultiSourceVAE.sensor_health` or the export's
`sensor_health` signature (its `score` output), so a deployed model stays
stateless and the client keeps the window. The average trades delay for
sensitivity: an alarm comes at the earliest after the fault has filled enough
of the window.
"""
import dataclasses
from typing import Sequence

import numpy as np

from msnvi_tf.core import calibration

__all__ = ["WINDOW", "MonitorCalibration", "windowed_log_scores", "calibrate_monitor",
           "monitor_alarms"]

WINDOW = 5  # W of Eq. (S1), frames.
_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class MonitorCalibration:
  """Result of `calibrate_monitor`.

  Attributes:
    thresholds: `[M]` eta_m.
    window: W.
    level: the quantile level q.
    false_alarm_rate: fraction of the healthy frames with any alarm.
    num_frames: healthy frames used.
  """
  thresholds: np.ndarray
  window: int
  level: float
  false_alarm_rate: float
  num_frames: int


def windowed_log_scores(scores, window: int = WINDOW) -> np.ndarray:
  """L_m(t) of Eq. (S1): per-frame scores `[M, T]` of one sequence -> `[M, T]`."""
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2 or scores.shape[1] == 0:
    raise ValueError(f"scores must have shape [M, T] with T >= 1; got {scores.shape}.")
  if window < 1:
    raise ValueError(f"window must be >= 1; got {window}.")
  logs = np.log(np.maximum(scores, _EPS))
  padded = np.concatenate([np.repeat(logs[:, :1], window, 1), logs], 1)  # [M, W + T]
  total = np.cumsum(padded, 1)
  return (total[:, window:] - total[:, :-window]) / window


def calibrate_monitor(healthy_scores: Sequence[np.ndarray], window: int = WINDOW,
                      target_rate: float = calibration.FALSE_ALARM_RATE
                      ) -> MonitorCalibration:
  """Thresholds eta_m of the monitor from healthy sequences (see module docstring).

  Args:
    healthy_scores: per-frame scores `[M, T_i]` of healthy sequences.
    window: W of Eq. (S1).
    target_rate: alpha, the accepted fraction of healthy frames with an alarm.

  Returns:
    A `MonitorCalibration`.
  """
  if not healthy_scores:
    raise ValueError("calibrate_monitor needs at least one healthy sequence.")
  values = np.concatenate([windowed_log_scores(s, window) for s in healthy_scores], 1)
  if np.isnan(values).any():
    raise ValueError("Healthy scores must not be NaN (every source present).")

  def thresholds_at(level):
    return np.quantile(values, level, axis=1, method="higher")  # [M]

  def rate_at(thresholds):  # frames with any L_m(t) > eta_m
    return calibration.false_alarm_rate(values > thresholds[:, None])

  level = calibration.smallest_level(lambda q: rate_at(thresholds_at(q)), target_rate)
  thresholds = thresholds_at(level)
  return MonitorCalibration(thresholds, window, level, rate_at(thresholds),
                            values.shape[1])


def monitor_alarms(scores, monitor: MonitorCalibration) -> np.ndarray:
  """`[M, T]` bool alarms of one sequence's per-frame scores `[M, T]`."""
  return windowed_log_scores(scores, monitor.window) > monitor.thresholds[:, None]
