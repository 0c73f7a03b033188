"""Sensor-health report: false alarms, detection, delay and ROC of the conflict alarms.

Generic over data sets with M >= 3 sources: the experiments
(`msnvi_tf.experiments.pendulum.sensors`, `msnvi_tf.experiments.mnist.health`) compute the scores
s_m of `msnvi_tf.core.robust` (Eqs. R2-R3) on healthy examples and on examples with
one faulty source, with and without calibrated thresholds, and this module
turns them into the report's numbers:

  false alarms  fraction of healthy examples on which any source's alarm is
                raised (s_m > 1, Eq. R6): `calibration.false_alarm_rate`;
  detection     fraction of faulty examples on which the faulty source's alarm
                is raised;
  delay         for a sequence, frames from the failure to the first alarm of
                the faulty source;
  misattributed fraction of faulty examples on which a healthy source's alarm
                is raised;
  ROC           the faulty source's score as a detector: true-positive rate on
                faulty examples against false-positive rate on healthy ones,
                over every threshold, and its area (AUC).
"""
from typing import Optional

import numpy as np
import tensorflow as tf

from msnvi_tf.core import robust

__all__ = ["CALIBRATED", "FIXED", "health_both", "detection", "roc_curve", "roc_auc",
           "format_rate", "format_delay"]


CALIBRATED, FIXED = "calibrated", "tau = 1"


def health_both(model, loc, scale):
  """`robust.sensor_health_stacked` with the model's thresholds and with tau = 1.

  Args:
    model: a `MultiSourceVAE` (its `conflict_thresholds`).
    loc, scale: `[M, N, Dz]` beliefs of all its sources.

  Returns:
    `{CALIBRATED | FIXED: {"score", "alarm", "weight": [M, N] numpy}}`.
  """
  thresholds = tf.convert_to_tensor(model.conflict_thresholds)
  return {key: {k: v.numpy()
                for k, v in robust.sensor_health_stacked(loc, scale, None, t).items()}
          for key, t in ((CALIBRATED, thresholds), (FIXED, robust.THRESHOLD))}


def detection(alarm, faulty: int, start: int = 0) -> dict:
  """Detection numbers of the faulty source after the failure.

  Args:
    alarm: `[M, T]` bool alarms over the examples (frames) of one sequence.
    faulty: index of the faulty source.
    start: first faulty example.

  Returns:
    `{"rate": float, "delay": int or None (never raised), "misattributed": float}`.
  """
  alarm = np.asarray(alarm, bool)
  after = alarm[faulty, start:]
  healthy = np.delete(alarm, faulty, 0)[:, start:]
  return {"rate": float(after.mean()) if after.size else float("nan"),
          "delay": int(np.argmax(after)) if after.any() else None,
          "misattributed": float(healthy.any(0).mean()) if after.size else float("nan")}


def roc_curve(negative, positive):
  """ROC of a score that should be higher on positives.

  Args:
    negative: `[N]` scores of healthy examples.
    positive: `[P]` scores of faulty examples.

  Returns:
    `(fpr, tpr)`, each `[U + 1]`, from (0, 0) to (1, 1) over every distinct
    threshold ("alarm when score >= threshold").
  """
  negative = np.asarray(negative, np.float64).ravel()
  positive = np.asarray(positive, np.float64).ravel()
  if not negative.size or not positive.size:
    raise ValueError("roc_curve needs at least one negative and one positive score.")
  thresholds = np.unique(np.concatenate([negative, positive]))[::-1]  # descending
  neg = np.sort(negative)
  pos = np.sort(positive)
  fpr = 1. - np.searchsorted(neg, thresholds, side="left") / neg.size
  tpr = 1. - np.searchsorted(pos, thresholds, side="left") / pos.size
  return np.concatenate([[0.], fpr]), np.concatenate([[0.], tpr])


def roc_auc(negative, positive) -> float:
  """Area under `roc_curve`: P(positive > negative) + P(tie) / 2."""
  fpr, tpr = roc_curve(negative, positive)
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.))


def format_rate(value: float) -> str:
  """A fraction as a percentage for the tables."""
  return "n/a" if value != value else f"{100. * value:.1f} %"


def format_delay(delay: Optional[int]) -> str:
  """A delay in frames ("never" when the alarm was not raised)."""
  return "never" if delay is None else str(delay)
