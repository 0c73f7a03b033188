"""Conflict-aware ("robust") integration: a product of experts that mutes dissenters.

Beyond the paper (its Sec. 6 future work: integration "taking into account the
conflict between sources"). PoE (Eq. 3) assumes equally reliable sources, so a
single failing sensor with a confident, wrong belief drags the integrated belief
away. The robust integration is a tempered product of experts whose exponents
come from the conflict measure c(m || m') of Eq. (2):

    q_rob(z) ~ p(z) prod_{m in S} [q_m(z | x_m) / p(z)]^{w_m},  w_m in [0, 1].   (R1)

For Gaussian experts and p = N(0, I) this is `integration.poe_stacked` with the
weights as mask: Lambda_rob = 1 + sum_m w_m (Lambda_m - 1), eta_rob = sum_m w_m eta_m;
w_m = 1 for all m is exactly the PoE, w_m = 0 leaves source m out. The weights:

    C(m, m') = max{c(m || m') / tau_mm', c(m' || m) / tau_m'm},               (R2)
    s_m      = min_{m' in S, m' != m} C(m, m')   (0 if m has no partner),     (R3)
    s_ref    = max{1, min_{m in S} s_m},                                      (R4)
    w_m      = min{1, s_ref / s_m}^kappa,                                     (R5)
    alarm_m  = [s_m > 1].                                                     (R6)

(R2) symmetrises Eq. (2), which is only large when the first belief is the more
certain one: a failing sensor can be over-confident (c(fail || healthy) large)
or vague and elsewhere (c(healthy || fail) large). Each direction is measured
in units of its threshold tau_mm' > 0: tau = 1 for every pair (the default, an
uncalibrated model) is the decision criterion of the KL ratio of Bousquet
(2008) that Eq. (2) adapts ("a ratio greater than 1"); calibrated thresholds
(`msnvi_tf.core.calibration`) are high quantiles of c(m || m') on healthy data, so
C(m, m') > 1 means "larger than healthy sources of this pair ever disagree".
(R3) scores a source by its conflict with the source that agrees with it best:
a healthy source keeps a low score through its agreement with another healthy
source although it conflicts with the failing one, while a source that
conflicts with every other source scores high. (R4) raises the reference to the
lowest score when every source conflicts, so the most consistent sources always
keep weight 1 and the result never collapses to the prior. (R5) leaves every
source with s_m <= s_ref at full weight and decays the others continuously as
(1 / s_m)^kappa (kappa = 2: a source conflicting ten-fold beyond its threshold
keeps 1 % of its evidence; kappa = inf gives hard selection). (R6) raises an
alarm for a source that disagrees beyond its thresholds with every other source.

Properties: if no source conflicts (every s_m <= 1), q_rob equals the PoE of
S exactly. With one failure among M >= 3 sources, the healthy sources keep
weight ~1 and the failing one is muted, so q_rob is close to the PoE of the
healthy sources. Limits: a failure is only recognisable by disagreement. Two
sources have equal scores s_m = C(1, 2), so both keep weight 1 and the result
is their PoE: a conflict between two sources cannot be attributed (both raise
the alarm). Failures that agree with each other keep each other. A vague
healthy source (near the prior) may be down-weighted, which changes the product
little since its precision is close to Lambda_0 = 1.

The package registers `robust` as integration method "robust" (`msnvi_tf/__init__.py`),
so `integration.integrate(beliefs, "robust")` and
`MultiSourceVAE.integrate(beliefs, method="robust")` (which uses the model's
calibrated thresholds) select it.
"""
import math
from typing import Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import conflict as conflict_lib
from msnvi_tf.core import integration

tfd = tfp.distributions

__all__ = ["THRESHOLD", "SHARPNESS", "conflict_scores", "sensor_health_stacked",
           "robust_weights", "robust_stacked", "robust"]

THRESHOLD = 1.  # tau_mm' of an uncalibrated model, Eq. (R2).
SHARPNESS = 2.  # kappa of Eq. (R5).


def _present(num_sources, batch, mask):
  """`[B, M]` bool: where a source is present (all, without a `[M, B]` mask)."""
  if mask is None:
    return tf.ones(tf.stack([batch, num_sources]), tf.bool)
  return tf.transpose(tf.cast(mask, tf.bool))


def _scores(conflict, thresholds, present):
  """`[B, M]` scores s_m of Eqs. (R2)-(R3); absent sources: inf."""
  c = tf.cast(conflict, tf.float32) / tf.cast(thresholds, tf.float32)  # [B, M, M]
  symmetric = tf.maximum(c, tf.transpose(c, [0, 2, 1]))  # [B, M, M], Eq. (R2)
  others = tf.logical_not(tf.eye(tf.shape(c)[1], dtype=tf.bool))  # [M, M]
  partner = others & present[:, None, :]  # [B, M, M]: m' is a partner of m
  score = tf.reduce_min(tf.where(partner, symmetric, math.inf), -1)  # [B, M], Eq. (R3)
  score = tf.where(tf.reduce_any(partner, -1), score, 0.)
  return tf.where(present, score, math.inf)


def conflict_scores(conflict, thresholds=THRESHOLD, mask=None):
  """Score s_m of every source from its conflicts, Eqs. (R2)-(R3).

  Args:
    conflict: `[B, M, M]` conflict measures, `[b, i, j] = c(source i || source j)`
      (`conflict.conflict_stacked`).
    thresholds: tau, a positive number or a `[M, M]` matrix of per-pair
      thresholds `[i, j] = tau_ij` (the diagonal is not used).
    mask: optional `[M, B]`, 1 where a source is present, 0 where absent; absent
      sources are nobody's partner in Eq. (R3).

  Returns:
    `[M, B]` float32 scores: s_m > 1 raises source m's alarm (R6); inf for an
    absent source, 0 for a source without a present partner.
  """
  shape = tf.shape(conflict)
  present = _present(shape[1], shape[0], mask)  # [B, M]
  return tf.transpose(_scores(conflict, thresholds, present))


def sensor_health_stacked(loc, scale, mask=None, thresholds=THRESHOLD,
                          sharpness=SHARPNESS):
  """Scores, alarms and robust weights of every source, Eqs. (R2)-(R6), on stacked beliefs.

  Args:
    loc: `[M, B, Dz]` belief means.
    scale: `[M, B, Dz]` belief standard deviations.
    mask: optional `[M, B]`, 1 where a source is present, 0 where absent; absent
      sources get weight 0, no alarm, and are nobody's partner in Eq. (R3).
    thresholds: tau of Eq. (R2), a positive number or `[M, M]` per-pair matrix.
    sharpness: kappa of Eq. (R5); `math.inf` drops every source above s_ref.

  Returns:
    `{"score": [M, B] float32, "alarm": [M, B] bool, "weight": [M, B] float32}`.
  """
  loc = tf.cast(loc, tf.float32)
  scale = tf.cast(scale, tf.float32)
  present = _present(tf.shape(loc)[0], tf.shape(loc)[1], mask)  # [B, M]
  score = _scores(conflict_lib.conflict_stacked(loc, scale), thresholds, present)  # [B, M]
  reference = tf.maximum(1., tf.reduce_min(score, -1, keepdims=True))  # [B, 1], Eq. (R4)
  ratio = tf.where(score <= reference, 1., reference / score)  # [B, M]
  weight = tf.where(present, tf.pow(ratio, sharpness), 0.)  # Eq. (R5)
  alarm = present & (score > 1.)  # Eq. (R6)
  return {"score": tf.transpose(score), "alarm": tf.transpose(alarm),
          "weight": tf.transpose(weight)}


def robust_weights(loc, scale, mask=None, thresholds=THRESHOLD, sharpness=SHARPNESS):
  """Exponents w_m of the robust product of experts, Eqs. (R2)-(R5).

  Args: as `sensor_health_stacked`.

  Returns:
    `[M, B]` float32 weights in [0, 1].
  """
  return sensor_health_stacked(loc, scale, mask, thresholds, sharpness)["weight"]


def robust_stacked(loc, scale, mask=None, thresholds=THRESHOLD, sharpness=SHARPNESS):
  """Robust integration, Eq. (R1), on stacked (and masked) parameters.

  Args:
    loc: `[M, B, Dz]`; scale: `[M, B, Dz]`; mask: optional `[M, B]`;
    thresholds, sharpness: tau and kappa (see `sensor_health_stacked`).

  Returns:
    `(loc_rob, scale_rob, health)`: `[B, Dz]`, `[B, Dz]` and the
    `sensor_health_stacked` dict whose `[M, B]` "weight" are the exponents w_m.
  """
  health = sensor_health_stacked(loc, scale, mask, thresholds, sharpness)  # each [M, B]
  loc_rob, scale_rob = integration.poe_stacked(
      tf.cast(loc, tf.float32), tf.cast(scale, tf.float32), health["weight"])
  return loc_rob, scale_rob, health


def robust(beliefs: Mapping[str, tfd.Distribution],
           sources: Optional[Sequence[str]] = None, thresholds=THRESHOLD,
           sharpness=SHARPNESS):
  """Integrated belief of a subset, a product of experts that mutes conflicting sources.

  Eq. (R1) with the conflict-based weights of Eqs. (R2)-(R5); equals
  `integration.poe` when no source conflicts.

  Args:
    beliefs: `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`.
    sources: the subset S (default: all beliefs).
    thresholds: tau of Eq. (R2): a positive number, or a `[M, M]` matrix over
      `sources` in their order.
    sharpness: kappa of Eq. (R5).

  Returns:
    `tfd.MultivariateNormalDiag` with batch shape `[B]`.
  """
  sources = integration.check_subset(beliefs, sources)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, sources)  # [M, B, Dz]
  loc_rob, scale_rob, _ = robust_stacked(loc, scale, None, thresholds, sharpness)
  return beliefs_lib.make_belief(loc_rob, scale_rob)

