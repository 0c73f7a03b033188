"""Conflict thresholds calibrated on healthy data (beyond the paper).

The robust integration (`msnvi_tf.core.robust`) measures every conflict c(m || m')
of Eq. (2) in units of a threshold tau_mm' (its Eq. R2). The fixed tau = 1
catches loud failures, but healthy sources of a well-trained model disagree far
less than that (the pendulum's cameras around 0.2), so a fault that yields
plausible frames with wrong content can stay below 1 while lying far outside
anything healthy sources show. Calibration sets the thresholds from held-out
healthy data instead:

    tau_mm'(q) = Q_q[c(m || m')]   for every ordered pair m != m',           (K1)

the q-quantile of the pair's conflicts on the N healthy examples (an observed
value: the smallest c with at least a fraction q of the conflicts at or below
it). One level q serves all pairs, because what a user controls is the rate of
false alarms, not a per-pair quantile:

    FA(q) = 1/N sum_n [exists m: s_m(n) > 1],                               (K2)

the fraction of healthy examples on which any source raises its alarm (R6)
under the thresholds tau(q) (`false_alarm_rate`, the one rate of the package:
the monitor's and the sensor-health reports' too). FA is non-increasing in q (every threshold grows
with q), and FA(1) = 0, so the smallest q with FA(q) <= alpha exists; it is
found by bisection. Per-pair quantiles need no distributional assumption and
adapt to pairs of different scale (the pendulum's camera 0 sees a circle, the
tilted cameras ellipses); the common level spends the false-alarm budget alpha
on the examples, where a user counts it. The achieved rate on the calibration
data is <= alpha; on new healthy data it is alpha plus the sampling error of a
quantile estimated from N examples, so alpha is set below the rate a user can
accept (the default 0.5 % for a 1 % goal) and N should hold many more than
1 / alpha examples.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from msnvi_tf.core import robust

__all__ = ["FALSE_ALARM_RATE", "MIN_THRESHOLD", "Calibration", "pair_quantiles",
           "false_alarm_rate", "smallest_level", "calibrate"]

FALSE_ALARM_RATE = 0.005  # alpha of Eq. (K2), the default target.
MIN_THRESHOLD = 1e-6  # thresholds are positive even if healthy pairs never conflict.


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Result of `calibrate`.

  Attributes:
    thresholds: `[M, M]` float32 tau of Eq. (K1), ones on the diagonal.
    level: the quantile level q.
    false_alarm_rate: FA(q) of Eq. (K2) on the calibration examples.
    num_examples: N.
  """
  thresholds: np.ndarray
  level: float
  false_alarm_rate: float
  num_examples: int


def _check(conflicts) -> np.ndarray:
  conflicts = np.asarray(conflicts, np.float64)
  if conflicts.ndim != 3 or conflicts.shape[1] != conflicts.shape[2]:
    raise ValueError(f"conflicts must have shape [N, M, M]; got {conflicts.shape}.")
  if conflicts.shape[0] == 0 or conflicts.shape[1] < 2:
    raise ValueError("Calibration needs at least one example and two sources; got "
                     f"conflicts of shape {conflicts.shape}.")
  if np.isnan(conflicts).any() or (conflicts < 0).any():
    raise ValueError("Calibration conflicts must be >= 0 and not NaN (healthy data "
                     "with every source present).")
  return conflicts


def pair_quantiles(conflicts, level: float) -> np.ndarray:
  """Thresholds tau_mm'(q) of Eq. (K1).

  Args:
    conflicts: `[N, M, M]` conflict measures of healthy examples.
    level: q in [0, 1].

  Returns:
    `[M, M]` float32, ones on the diagonal, off-diagonal >= `MIN_THRESHOLD`.
  """
  conflicts = _check(conflicts)
  tau = np.quantile(conflicts, level, axis=0, method="higher")  # [M, M]
  tau = np.maximum(tau, MIN_THRESHOLD)
  np.fill_diagonal(tau, 1.)
  return tau.astype(np.float32)


def false_alarm_rate(alarm) -> float:
  """FA of Eq. (K2): the fraction of examples on which any source raises an alarm.

  Args:
    alarm: `[M, N]` bool, source m's alarm on example n (Eq. R6:
      `robust.sensor_health_stacked`'s "alarm", or `robust.conflict_scores` > 1).

  Returns:
    The fraction in [0, 1], float64.
  """
  return float(np.mean(np.any(np.asarray(alarm, bool), 0)))


def _rate_at(conflicts, thresholds) -> float:
  """FA of Eq. (K2) of `[N, M, M]` conflicts under `thresholds` (a number or `[M, M]`)."""
  scores = robust.conflict_scores(tf.constant(conflicts, tf.float32), thresholds)  # [M, N]
  return false_alarm_rate(scores.numpy() > 1.)  # alarms of Eq. (R6)


def smallest_level(rate_at, target_rate: float, tolerance: float = 1e-6) -> float:
  """The smallest q in [0, 1] with `rate_at(q) <= target_rate`, by bisection.

  Args:
    rate_at: q -> false-alarm rate, non-increasing in q with `rate_at(1) = 0`.
    target_rate: alpha in [0, 1).
    tolerance: the bracket of q at which bisection stops.
  """
  if not 0. <= target_rate < 1.:
    raise ValueError(f"target_rate must be in [0, 1); got {target_rate}.")
  if rate_at(0.) <= target_rate:
    return 0.
  low, high = 0., 1.  # rate_at(low) > alpha >= rate_at(high)
  while high - low > tolerance:
    mid = 0.5 * (low + high)
    if rate_at(mid) <= target_rate:
      high = mid
    else:
      low = mid
  return high


def calibrate(conflicts, target_rate: float = FALSE_ALARM_RATE,
              tolerance: float = 1e-6) -> Calibration:
  """The thresholds of the smallest level q with FA(q) <= `target_rate`, Eqs. (K1)-(K2).

  Args:
    conflicts: `[N, M, M]` conflict measures c(m || m') of healthy examples
      (`MultiSourceVAE.conflict`), every source present.
    target_rate: alpha in [0, 1): the accepted fraction of healthy examples
      with an alarm.
    tolerance: bisection stops when the bracket of q is this narrow.

  Returns:
    A `Calibration`.

  Raises:
    ValueError: a bad shape, NaN or negative conflicts, or alpha outside [0, 1).
  """
  conflicts = _check(conflicts)
  level = smallest_level(
      lambda q: _rate_at(conflicts, pair_quantiles(conflicts, q)), target_rate, tolerance)
  thresholds = pair_quantiles(conflicts, level)
  return Calibration(thresholds, level, _rate_at(conflicts, thresholds), conflicts.shape[0])
