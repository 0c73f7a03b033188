"""Integration of the beliefs of any subset of sources: PoE, MoE, and PMI.

Every function takes beliefs as a dict `{source: tfd.MultivariateNormalDiag}` and
the subset of source names to integrate. Integration methods are registered by
name in `INTEGRATIONS`; `integrate` dispatches on that name, so a new method is
one function plus one registry entry.
"""
import math
from typing import Callable, Dict, Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf import beliefs as beliefs_lib

tfd = tfp.distributions

__all__ = [
    "INTEGRATIONS",
    "integrate",
    "poe",
    "poe_stacked",
    "moe",
    "moe_stacked",
    "pmi",
    "check_subset",
]


def check_subset(beliefs: Mapping[str, tfd.Distribution],
                 sources: Optional[Sequence[str]]):
  """Validates a subset of sources and returns it as a list (default: all).

  Raises:
    ValueError: the subset is empty or names a source without a belief.
  """
  if sources is None:
    sources = list(beliefs)
  sources = list(sources)
  if not sources:
    raise ValueError(
        "Cannot integrate an empty subset of sources: name at least one of "
        f"{sorted(beliefs)}.")
  missing = [s for s in sources if s not in beliefs]
  if missing:
    raise ValueError(
        f"No belief for source(s) {missing}; beliefs are available for "
        f"{sorted(beliefs)}. Encode those sources first (their data must be "
        "in the batch).")
  return sources


def poe_stacked(loc, scale, mask=None):
  """Product of Gaussian experts with prior correction, on stacked parameters.

  Eq. (3) with Gaussian experts (App. C), prior N(0, I) so Lambda_0 = 1, eta_0 = 0:
    Lambda_* = sum_m Lambda_m - (M - 1) Lambda_0 = Lambda_0 + sum_m (Lambda_m - Lambda_0)
    eta_*    = sum_m eta_m    - (M - 1) eta_0    = sum_m eta_m
  With a mask, an absent source contributes nothing: its expert is the prior.

  Args:
    loc: `[M, B, Dz]` means of the M experts.
    scale: `[M, B, Dz]` standard deviations.
    mask: optional `[M, B]`, 1 where a source is present, 0 where absent.

  Returns:
    `(loc_*, scale_*)`, each `[B, Dz]`.
  """
  precision = tf.math.reciprocal(tf.square(scale))  # [M, B, Dz]
  eta = precision * loc  # [M, B, Dz]
  excess = precision - 1.  # [M, B, Dz]
  if mask is not None:
    mask = tf.cast(mask, precision.dtype)[..., None]  # [M, B, 1]
    excess *= mask
    eta *= mask
  precision_star = 1. + tf.reduce_sum(excess, 0)  # [B, Dz]
  eta_star = tf.reduce_sum(eta, 0)  # [B, Dz]
  return eta_star / precision_star, tf.math.rsqrt(precision_star)


def poe(beliefs: Mapping[str, tfd.Distribution],
        sources: Optional[Sequence[str]] = None):
  """Integrated belief q_*(z | x_S): product of experts with prior correction (Eq. 3).

  q_*(z) ~ p(z) prod_{m in S} q_m(z | x_m) / p(z); for Gaussians see `poe_stacked`.

  Args:
    beliefs: `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`.
    sources: the subset S to integrate (default: all beliefs).

  Returns:
    `tfd.MultivariateNormalDiag` with batch shape `[B]`.
  """
  sources = check_subset(beliefs, sources)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, sources)  # [M, B, Dz]
  return beliefs_lib.make_belief(*poe_stacked(loc, scale))


def moe_stacked(loc, scale, mask=None):
  """Uniform mixture of Gaussian experts on stacked parameters (App. B).

  q_*(z) = sum_m pi_m q_m(z), pi_m = 1 / |S| over the present sources.

  Args:
    loc: `[M, B, Dz]`; scale: `[M, B, Dz]`; mask: optional `[M, B]`.

  Returns:
    `tfd.MixtureSameFamily` with batch shape `[B]` and event shape `[Dz]`. Use it
    for `log_prob`; objectives sample each expert separately (reparameterised).
  """
  logits = tf.zeros(tf.shape(loc)[:2], loc.dtype)  # [M, B]
  if mask is not None:
    logits = tf.where(tf.cast(mask, tf.bool), logits, -math.inf)
  return tfd.MixtureSameFamily(
      mixture_distribution=tfd.Categorical(logits=tf.transpose(logits)),  # [B, M]
      components_distribution=tfd.MultivariateNormalDiag(
          loc=tf.transpose(loc, [1, 0, 2]),  # [B, M, Dz]
          scale_diag=tf.transpose(scale, [1, 0, 2])))


def moe(beliefs: Mapping[str, tfd.Distribution],
        sources: Optional[Sequence[str]] = None):
  """Integrated belief as a uniform mixture of experts (App. B).

  Args:
    beliefs: `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`.
    sources: the subset to integrate (default: all).

  Returns:
    `tfd.MixtureSameFamily` with batch shape `[B]`, event shape `[Dz]`.
  """
  sources = check_subset(beliefs, sources)
  return moe_stacked(*beliefs_lib.stack_beliefs(beliefs, sources))


def pmi(beliefs: Mapping[str, tfd.Distribution],
        sources: Optional[Sequence[str]] = None):
  """Pointwise mutual information between the sources of a subset (App. D).

  PMI = ln p(x_S) / prod_m p(x_m)
      = ln Z(mu_*, Lambda_*) + (M - 1) ln Z(mu_0, Lambda_0) - sum_m ln Z(mu_m, Lambda_m),
  with Z the Gaussian partition function of Eq. (7) and * the PoE of Eq. (3).
  Exact when the beliefs are the exact single-source posteriors.

  Args:
    beliefs: `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`.
    sources: the subset (default: all).

  Returns:
    `[B]` float32.
  """
  sources = check_subset(beliefs, sources)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, sources)  # [M, B, Dz]
  precision = tf.math.reciprocal(tf.square(scale))  # [M, B, Dz]
  log_z = beliefs_lib.log_partition(precision, precision * loc)  # [M, B]
  loc_star, scale_star = poe_stacked(loc, scale)  # [B, Dz]
  precision_star = tf.math.reciprocal(tf.square(scale_star))
  log_z_star = beliefs_lib.log_partition(precision_star, precision_star * loc_star)
  # ln Z_0 with Lambda_0 = 1, eta_0 = 0.
  log_z0 = 0.5 * tf.cast(tf.shape(loc)[-1], tf.float32) * math.log(2. * math.pi)
  num = float(len(sources))
  return log_z_star + (num - 1.) * log_z0 - tf.reduce_sum(log_z, 0)


INTEGRATIONS: Dict[str, Callable[..., tfd.Distribution]] = {
    "poe": poe,
    "moe": moe,
}


def integrate(beliefs: Mapping[str, tfd.Distribution], method: str = "poe",
              sources: Optional[Sequence[str]] = None):
  """Integrates the beliefs of `sources` with a registered method.

  Args:
    beliefs: `{source: tfd.MultivariateNormalDiag}`.
    method: a key of `INTEGRATIONS` ("poe", "moe", ...).
    sources: subset of sources (default: all).

  Returns:
    A distribution over z with batch shape `[B]` and event shape `[Dz]`.

  Raises:
    ValueError: unknown method, empty subset or a source without a belief.
  """
  if method not in INTEGRATIONS:
    raise ValueError(f"Unknown integration method {method!r}; choose one of "
                     f"{sorted(INTEGRATIONS)}.")
  return INTEGRATIONS[method](beliefs, sources)
