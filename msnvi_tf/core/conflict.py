"""The conflict measure c(m || m') between the beliefs of two sources (Eq. 2)."""
from typing import Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import integration

tfd = tfp.distributions

__all__ = ["kl_diag_gaussians", "conflict_stacked", "conflict_matrix"]


def kl_diag_gaussians(loc_a, scale_a, loc_b, scale_b):
  """KL(N(loc_a, scale_a^2) || N(loc_b, scale_b^2)) for diagonal Gaussians, closed form.

  KL = 1/2 sum_i [ (s_a/s_b)^2 + (mu_b - mu_a)^2 / s_b^2 - 1 + 2 ln(s_b / s_a) ],
  TFP's Normal-Normal KL summed over the last axis.

  Args:
    loc_a, scale_a, loc_b, scale_b: broadcastable `[..., Dz]` tensors (or numbers).

  Returns:
    `[...]` tensor.
  """
  loc_a = tf.convert_to_tensor(loc_a)
  dtype = loc_a.dtype
  a = tfd.Normal(loc_a, tf.cast(scale_a, dtype))
  b = tfd.Normal(tf.cast(loc_b, dtype), tf.cast(scale_b, dtype))
  return tf.reduce_sum(tfd.kl_divergence(a, b), -1)


def conflict_stacked(loc, scale):
  """All ordered pairs of conflict measures from stacked beliefs (Eq. 2).

  c(m || m') = KL(q_m' || q_m) / KL(q_m' || p), prior p = N(0, I).
  High when q_m is much more certain than q_m' and disagrees with it.
  The diagonal is 0; a zero denominator (q_m' equal to the prior) gives inf
  off the diagonal unless the numerator is also 0.

  Args:
    loc: `[M, B, Dz]`; scale: `[M, B, Dz]`.

  Returns:
    `[B, M, M]` with `[b, i, j] = c(source i || source j)`.
  """
  loc_m, scale_m = loc[:, None], scale[:, None]  # q_m at axis 0: [M, 1, B, Dz]
  loc_n, scale_n = loc[None], scale[None]  # q_m' at axis 1: [1, M, B, Dz]
  numerator = kl_diag_gaussians(loc_n, scale_n, loc_m, scale_m)  # [M, M, B]
  denominator = kl_diag_gaussians(loc, scale, 0., 1.)[None]  # [1, M, B]
  ratio = tf.math.divide_no_nan(numerator, denominator)
  ratio = tf.where((denominator == 0.) & (numerator > 0.), float("inf"), ratio)
  return tf.transpose(ratio, [2, 0, 1])  # [B, M, M]


def conflict_matrix(beliefs: Mapping[str, tfd.Distribution],
                    sources: Optional[Sequence[str]] = None):
  """Conflict measures c(m || m') of Eq. (2) for all ordered pairs of `sources`.

  Args:
    beliefs: `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`.
    sources: the sources to compare, in the order of the matrix axes (default:
      all beliefs in dict order).

  Returns:
    `[B, M, M]` float32 with `[b, i, j] = c(sources[i] || sources[j])`.
  """
  sources = integration.check_subset(beliefs, sources)
  return conflict_stacked(*beliefs_lib.stack_beliefs(beliefs, sources))
