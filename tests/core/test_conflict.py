"""The conflict measure c(m || m') of Eq. (2) against independent computations."""
import math

import numpy as np
import pytest

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import conflict


def _kl_full_covariance(loc_a, scale_a, loc_b, scale_b):
  """KL(N_a || N_b) via the general multivariate formula with dense matrices."""
  cov_a, cov_b = np.diag(scale_a ** 2), np.diag(scale_b ** 2)
  inv_b = np.linalg.inv(cov_b)
  diff = loc_b - loc_a
  return 0.5 * (np.trace(inv_b @ cov_a) + diff @ inv_b @ diff - len(loc_a)
                + np.linalg.slogdet(cov_b)[1] - np.linalg.slogdet(cov_a)[1])


def _beliefs(locs, scales):
  return {f"s{i}": beliefs_lib.make_belief(loc, scale)
          for i, (loc, scale) in enumerate(zip(locs, scales))}


def test_conflict_is_zero_on_diagonal_and_for_identical_beliefs():
  rng = np.random.default_rng(0)
  loc = rng.normal(size=(4, 2))
  scale = rng.uniform(0.2, 0.9, (4, 2))
  prior_loc, prior_scale = np.zeros((4, 2)), np.ones((4, 2))
  # s0 == s1; s2 differs; s3 and s4 both equal the prior (0 / 0 must give 0).
  beliefs = _beliefs([loc, loc, loc + 1., prior_loc, prior_loc],
                     [scale, scale, 0.5 * scale, prior_scale, prior_scale])
  c = conflict.conflict_matrix(beliefs).numpy()  # [B, 5, 5]
  assert c.shape == (4, 5, 5)
  np.testing.assert_allclose(np.diagonal(c, axis1=1, axis2=2), 0., atol=1e-6)
  np.testing.assert_allclose(c[:, 0, 1], 0., atol=1e-6)
  np.testing.assert_allclose(c[:, 1, 0], 0., atol=1e-6)
  np.testing.assert_array_equal(c[:, 3, 4], 0.)
  assert np.all(np.isinf(c[:, 0, 3]))  # q_j is the prior, q_i is not: documented inf
  assert np.all(c[:, 0, 2] > 0.) and np.all(c[:, 2, 0] > 0.)


def test_kl_diag_gaussians_matches_monte_carlo_estimate():
  rng = np.random.default_rng(1)
  num = 200_000
  for _ in range(4):
    loc_a, loc_b = rng.normal(size=3), rng.normal(size=3)
    scale_a, scale_b = rng.uniform(0.3, 1.5, 3), rng.uniform(0.3, 1.5, 3)
    z = loc_a + scale_a * rng.normal(size=(num, 3))
    log_ratio = np.sum(
        np.log(scale_b / scale_a) - 0.5 * ((z - loc_a) / scale_a) ** 2
        + 0.5 * ((z - loc_b) / scale_b) ** 2, -1)
    stderr = log_ratio.std() / math.sqrt(num)
    kl = float(conflict.kl_diag_gaussians(loc_a, scale_a, loc_b, scale_b))
    assert abs(kl - log_ratio.mean()) < 4. * stderr + 1e-4, (kl, log_ratio.mean(), stderr)


def test_conflict_matrix_is_kl_ratio_of_eq_2():
  rng = np.random.default_rng(2)
  num_sources, batch, latent_dim = 3, 5, 4
  locs = rng.normal(size=(num_sources, batch, latent_dim))
  scales = rng.uniform(0.1, 1., (num_sources, batch, latent_dim))
  c = conflict.conflict_matrix(_beliefs(locs, scales)).numpy()
  zeros, ones = np.zeros(latent_dim), np.ones(latent_dim)
  for b in range(batch):
    for i in range(num_sources):
      for j in range(num_sources):
        kl_ji = _kl_full_covariance(locs[j, b], scales[j, b], locs[i, b], scales[i, b])
        kl_jp = _kl_full_covariance(locs[j, b], scales[j, b], zeros, ones)
        assert c[b, i, j] == pytest.approx(kl_ji / kl_jp, rel=1e-4, abs=1e-6), (b, i, j)


def test_conflict_matrix_follows_the_order_of_sources():
  rng = np.random.default_rng(3)
  beliefs = _beliefs(rng.normal(size=(3, 2, 2)), rng.uniform(0.2, 1., (3, 2, 2)))
  c = conflict.conflict_matrix(beliefs).numpy()
  reordered = conflict.conflict_matrix(beliefs, ["s2", "s0"]).numpy()
  np.testing.assert_allclose(reordered[:, 0, 1], c[:, 2, 0], rtol=1e-6)
  np.testing.assert_allclose(reordered[:, 1, 0], c[:, 0, 2], rtol=1e-6)


def test_certain_disagreeing_belief_is_in_conflict_with_vague_one():
  # q_0 is confident and far from q_1; q_1 is vague and near the prior.
  beliefs = _beliefs([np.array([[2., -1.5]]), np.array([[-0.3, 0.2]])],
                     [np.array([[0.1, 0.1]]), np.array([[0.8, 0.9]])])
  c = conflict.conflict_matrix(beliefs).numpy()[0]
  assert c[0, 1] > 1.
  assert c[0, 1] > c[1, 0]
