"""Integration of the beliefs of any subset of sources: PoE, MoE, and PMI.

Every function takes beliefs as a dict `{source: tfd.MultivariateNormalDiag}` and
the subset of source names to integrate. Integration methods are registered by
name with `register` (into `INTEGRATIONS`); `integrate` dispatches on that name,
so a new method is one function plus one `register` call. "poe" and "moe" are
registered here, "robust" (`msnvi_tf.core.robust`) by the package's `__init__`.
"""
import math
from typing import Callable, Dict, Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import beliefs as beliefs_lib

tfd = tfp.distributions

__all__ = [
    "INTEGRATIONS",
    "register",
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


def _poe_natural(loc, scale, mask=None):
  """Natural parameters `(eta_*, Lambda_*)`, each `[B, Dz]`, of the PoE (see `poe_stacked`)."""
  precision = tf.math.reciprocal(tf.square(scale))  # [M, B, Dz]
  eta = precision * loc  # [M, B, Dz]
  excess = precision - 1.  # [M, B, Dz]
  if mask is not None:
    mask = tf.cast(mask, precision.dtype)[..., None]  # [M, B, 1]
    excess *= mask
    eta *= mask
  return tf.reduce_sum(eta, 0), 1. + tf.reduce_sum(excess, 0)


def _assert_positive_precision(precision_star, sources):
  """Raises `tf.errors.InvalidArgumentError` where Lambda_* <= 0 (App. C).

  Eagerly it raises at once; inside `tf.function` the assertion is a stateful op
  that runs with the function. The model's encoders cannot trigger it (every
  std <= 1 gives Lambda_m >= Lambda_0), so only the user-facing entry points
  check, never the training path (`poe_stacked`).

  Args:
    precision_star: `[B, Dz]` Lambda_* of the product of experts.
    sources: the integrated subset, named in the message.
  """
  tf.debugging.assert_positive(
      precision_star, summarize=4,
      message=(
          f"product of experts of sources {', '.join(map(str, sources))} has non-positive "
          "precision Lambda_* = sum_m Lambda_m - (M - 1) Lambda_0: some expert "
          "scale exceeds the prior scale (1). The PoE with prior correction "
          "(Eq. 3, App. C) needs Lambda_* > 0, which beliefs with every std <= 1 "
          "always satisfy"))


def poe_stacked(loc, scale, mask=None):
  """Product of Gaussian experts with prior correction, on stacked parameters.

  Eq. (3) with Gaussian experts (App. C), prior N(0, I) so Lambda_0 = 1, eta_0 = 0:
    Lambda_* = sum_m Lambda_m - (M - 1) Lambda_0 = Lambda_0 + sum_m (Lambda_m - Lambda_0)
    eta_*    = sum_m eta_m    - (M - 1) eta_0    = sum_m eta_m
  With a mask, an absent source contributes nothing: its expert is the prior.
  This is the training path, so it does not check Lambda_* > 0 (the encoders
  guarantee it); `poe` does.

  Args:
    loc: `[M, B, Dz]` means of the M experts.
    scale: `[M, B, Dz]` standard deviations.
    mask: optional `[M, B]`, 1 where a source is present, 0 where absent.

  Returns:
    `(loc_*, scale_*)`, each `[B, Dz]`.
  """
  eta_star, precision_star = _poe_natural(loc, scale, mask)  # [B, Dz]
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

  Raises:
    ValueError: empty subset or a source without a belief.
    tf.errors.InvalidArgumentError: Lambda_* <= 0 somewhere: the experts' stds
      exceed the prior's too much for a valid product (eagerly and inside
      `tf.function`).
  """
  sources = check_subset(beliefs, sources)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, sources)  # [M, B, Dz]
  eta_star, precision_star = _poe_natural(loc, scale)  # [B, Dz]
  _assert_positive_precision(precision_star, sources)
  return beliefs_lib.make_belief(eta_star / precision_star,
                                 tf.math.rsqrt(precision_star))


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

  Computed without the large, cancelling 1/2 Lambda mu^2 terms of ln Z (in
  float32 they cost hundreds of nats at std 1e-4). With Lambda_0 = 1, mu_0 = 0
  the ln(2 pi) terms cancel, and Lagrange's identity on the means weighted by
  Lambda_m and by the prior's -(M - 1) Lambda_0 gives, summed over dimensions d,
    PMI = 1/2 sum_d [ sum_m ln Lambda_m - ln Lambda_*
                      - sum_{m<m'} Lambda_m Lambda_m' (mu_m - mu_m')^2 / Lambda_*
                      + (M - 1) Lambda_0 sum_m Lambda_m mu_m^2 / Lambda_* ],
  each term a product of accurate factors; Lambda_m / Lambda_* <= 1 for valid
  experts, so nothing overflows either.

  Args:
    beliefs: `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`, in
      any float dtype (the PMI is computed in it).
    sources: the subset (default: all).

  Returns:
    `[B]` tensor in the beliefs' dtype.

  Raises:
    ValueError: empty subset or a source without a belief.
    tf.errors.InvalidArgumentError: Lambda_* <= 0 somewhere (see `poe`).
  """
  sources = check_subset(beliefs, sources)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, sources)  # [M, B, Dz]
  _, precision_star = _poe_natural(loc, scale)  # [B, Dz]
  _assert_positive_precision(precision_star, sources)
  log_det = (-2. * tf.reduce_sum(tf.math.log(scale), 0)
             - tf.math.log(precision_star))  # [B, Dz]
  precision = tf.math.reciprocal(tf.square(scale))  # [M, B, Dz]
  weight = precision / precision_star  # [M, B, Dz]: Lambda_m / Lambda_*
  # Over ordered pairs, each pair counted twice; the diagonal m = m' is 0.
  pairs = 0.5 * tf.reduce_sum(
      precision[:, None] * weight[None] * tf.square(loc[:, None] - loc[None]),
      [0, 1])  # [B, Dz]
  with_prior = (len(sources) - 1.) * tf.reduce_sum(weight * tf.square(loc), 0)
  return 0.5 * tf.reduce_sum(log_det - pairs + with_prior, -1)


INTEGRATIONS: Dict[str, Callable[..., tfd.Distribution]] = {
    "poe": poe,
    "moe": moe,
}


def register(name: str, method: Callable[..., tfd.Distribution]):
  """Registers `method(beliefs, sources) -> distribution` as integration `name`.

  Raises:
    ValueError: `name` is taken by another method.
  """
  if INTEGRATIONS.get(name, method) is not method:
    raise ValueError(f"Integration method {name!r} is already registered.")
  INTEGRATIONS[name] = method


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
