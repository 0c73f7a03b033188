"""Importance-weighted objectives: L_ind, L_MoE, L_PoE, L_hybrid and the IWAE.

Every objective is an importance-weighted bound (Sec. 2)
    ln (1/K) sum_k w_k,   w_k = p(x | z_k) p(z_k) / q(z_k),   z_k ~ q,
averaged over proposals. They differ only in the proposal q and its density:
  ind    (Eq. 1):  one bound per source m with z ~ q_m, q = q_m; averaged with
                   pi_m = 1/M.
  moe    (App. B): the same samples z ~ q_m (every component enumerated), but
                   q = sum_m' pi_m' q_m' (the mixture density).
  poe    (Eq. 4):  z ~ q_* (the PoE of Eq. 3), q = q_*.
  hybrid (Eq. 5):  lambda L_ind + (1 - lambda) L_PoE (lambda = 1/2 in the paper).
  iwae:            L_ind with a single encoder: one hard-wired encoder on the
                   concatenated sources, or one source on its own.

`importance_bounds` draws the samples needed for a set of integrations and runs
the generative model once on all of them, so an evaluation of the ind / MoE /
PoE bounds (Table 1) costs one decoder pass. Everything is float32.

Incomplete data: with a presence mask `present` `[M, B]` (1 = source m of
example b observed), each example's bounds are those of the model restricted to
its present sources S_b: L_ind averages the |S_b| present beliefs' bounds
(pi_m = 1 / |S_b|), L_MoE's mixture has the present components only, L_PoE
integrates the present beliefs with the prior correction for |S_b| experts
(Lambda_* = sum_{m in S_b} Lambda_m - (|S_b| - 1) Lambda_0), and the log joint
(`log_joint`) covers the present targets only. An absent source's belief gets
exactly zero gradient. With every source present the masked bounds equal the
unmasked ones bit for bit.

Shapes: M sources, K importance samples, B examples, Dz latent dimensions.
"""
import math
from typing import Callable, Dict, Iterable

import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import integration

__all__ = [
    "OBJECTIVES",
    "INTEGRATED_BOUNDS",
    "diag_normal_log_prob",
    "importance_bounds",
    "objective_bound",
    "check_objective",
]

INTEGRATED_BOUNDS = ("ind", "moe", "poe")


def _iw_bound(log_w):
  """ln (1/K) sum_k exp(log_w_k), stable: `[..., K, B]` -> `[..., B]`."""
  return tfp.math.reduce_logmeanexp(log_w, axis=-2)


def diag_normal_log_prob(z, loc, scale):
  """ln N(z; loc, diag(scale^2)) summed over the last axis (broadcasting)."""
  return -0.5 * tf.reduce_sum(
      tf.square((z - loc) / scale) + 2. * tf.math.log(scale)
      + math.log(2. * math.pi), -1)


def _mean_over_present(bounds, present):
  """Mean of `[M, B]` bounds over the axis of sources: all of them, or the present ones."""
  if present is None:
    return tf.reduce_mean(bounds, 0)
  return (tf.reduce_sum(tf.where(present > 0., bounds, 0.), 0)
          / tf.reduce_sum(present, 0))  # [B]


def importance_bounds(loc, scale, log_joint: Callable, num_samples: int,
                      which: Iterable[str] = INTEGRATED_BOUNDS,
                      normal=tf.random.normal, present=None) -> Dict[str, tf.Tensor]:
  """Importance-weighted bounds of several integrations from shared samples.

  Args:
    loc: `[M, B, Dz]` belief means of the M sources (or the single encoder).
    scale: `[M, B, Dz]` belief standard deviations.
    log_joint: callable z `[G, K, B, Dz]` -> ln p(x, z) `[G, K, B]` (all targets
      plus the prior), called once.
    num_samples: K.
    which: subset of ("ind", "moe", "poe").
    normal: callable shape -> standard normal samples (a seeded generator's
      `normal`, or `tf.random.normal`).
    present: optional `[M, B]` presence mask (1. present, 0. absent; at least
      one source per example): the bounds of the model restricted to each
      example's present sources (module docstring). The samples drawn are the
      same as without it.

  Returns:
    `{name: [B]}` for each requested bound.
  """
  which = set(which)
  unknown = which - set(INTEGRATED_BOUNDS)
  if unknown:
    raise ValueError(f"Unknown bound(s) {sorted(unknown)}; known: {INTEGRATED_BOUNDS}.")
  loc = tf.cast(loc, tf.float32)
  scale = tf.cast(scale, tf.float32)
  if present is not None:
    present = tf.cast(present, tf.float32)  # [M, B]
  num_sources = loc.shape[0]
  shape = tf.shape(loc)  # [M, B, Dz]
  groups = []
  if which & {"ind", "moe"}:
    eps = normal(tf.concat([shape[:1], [num_samples], shape[1:]], 0))  # [M, K, B, Dz]
    z_experts = loc[:, None] + scale[:, None] * eps  # [M, K, B, Dz]
    groups.append(z_experts)
  if "poe" in which:
    loc_star, scale_star = integration.poe_stacked(loc, scale, present)  # [B, Dz]
    eps = normal(tf.concat([[1, num_samples], shape[1:]], 0))  # [1, K, B, Dz]
    z_star = loc_star + scale_star * eps  # [1, K, B, Dz]
    groups.append(z_star)
  z = tf.concat(groups, 0) if len(groups) > 1 else groups[0]  # [G, K, B, Dz]
  log_p = log_joint(z)  # [G, K, B]
  bounds = {}
  if which & {"ind", "moe"}:
    log_p_experts = log_p[:num_sources]  # [M, K, B]
    if "ind" in which:
      log_q = diag_normal_log_prob(z_experts, loc[:, None], scale[:, None])  # [M, K, B]
      bounds["ind"] = _mean_over_present(_iw_bound(log_p_experts - log_q), present)
    if "moe" in which:
      # Density of every expert's samples under every component: [M, M', K, B].
      log_q_all = diag_normal_log_prob(
          z_experts[:, None], loc[None, :, None], scale[None, :, None])
      if present is None:
        log_q = tf.reduce_logsumexp(log_q_all, 1) - math.log(num_sources)  # [M, K, B]
      else:  # The mixture of the present components, pi_m' = 1 / |S_b|.
        log_q_all = tf.where(present[None, :, None] > 0., log_q_all, -math.inf)
        log_q = (tf.reduce_logsumexp(log_q_all, 1)
                 - tf.math.log(tf.reduce_sum(present, 0)))  # [M, K, B]
      bounds["moe"] = _mean_over_present(_iw_bound(log_p_experts - log_q), present)
  if "poe" in which:
    log_q = diag_normal_log_prob(z_star, loc_star, scale_star)  # [1, K, B]
    bounds["poe"] = _iw_bound(log_p[-1:] - log_q)[0]
  return bounds


# name -> (bounds it needs, how it combines them given hybrid_weight).
OBJECTIVES = {
    "ind": (("ind",), lambda b, lam: b["ind"]),
    "moe": (("moe",), lambda b, lam: b["moe"]),
    "poe": (("poe",), lambda b, lam: b["poe"]),
    "hybrid": (("ind", "poe"), lambda b, lam: lam * b["ind"] + (1. - lam) * b["poe"]),
    "iwae": (("ind",), lambda b, lam: b["ind"]),
}


def check_objective(name: str):
  """Raises a clear ValueError for an unknown objective name."""
  if name not in OBJECTIVES:
    raise ValueError(
        f"Unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}.")


def objective_bound(name: str, loc, scale, log_joint: Callable, num_samples: int,
                    hybrid_weight: float = 0.5, normal=tf.random.normal,
                    extra_bounds: Iterable[str] = (), present=None):
  """The bound of a training objective per example, plus other bounds on request.

  Args:
    name: a key of `OBJECTIVES`.
    loc, scale: `[M, B, Dz]` beliefs (M = 1 for the IWAE).
    log_joint: see `importance_bounds`.
    num_samples: K.
    hybrid_weight: lambda of Eq. (5): weight of L_ind, L_PoE gets 1 - lambda.
    normal: standard normal sampler.
    extra_bounds: further integrations to evaluate from the same samples.
    present: optional `[M, B]` presence mask (see `importance_bounds`).

  Returns:
    `(bound [B], {integration: [B]})`.
  """
  check_objective(name)
  needs, combine = OBJECTIVES[name]
  bounds = importance_bounds(loc, scale, log_joint, num_samples,
                             set(needs) | set(extra_bounds), normal, present)
  return combine(bounds, hybrid_weight), bounds
