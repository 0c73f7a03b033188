"""Importance-weighted objectives on a linear-Gaussian model with known ln p(x)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf.core import objectives
from linear_gaussian import LinearGaussian

NUM_SOURCES, LATENT_DIM = 3, 2


@pytest.fixture
def model():
  return LinearGaussian(NUM_SOURCES, LATENT_DIM, seed=0)


def _per_source_posteriors(model, x):
  """Exact p(z | x_m) of every source, stacked: `([M, B, Dz], [M, B, Dz])`."""
  locs, scales = zip(*[model.posterior(x, [m]) for m in range(NUM_SOURCES)])
  return np.stack(locs), np.stack(scales)


def _proposals(name, model, x, exact):
  """Beliefs `[M, B, Dz]` for objective `name`: exact ones make every weight p(x).

  Exact: ind / moe / iwae use the joint posterior p(z | x) (for every expert),
  poe the single-source posteriors p(z | x_m). Inexact: shifted and widened
  versions of those, or (ind / moe) the single-source posteriors.
  """
  loc, scale = model.posterior(x)
  if name in ("ind", "moe"):
    if exact:
      return np.stack([loc] * NUM_SOURCES), np.stack([scale] * NUM_SOURCES)
    return _per_source_posteriors(model, x)
  if name == "iwae":
    if exact:
      return loc[None], scale[None]
    return loc[None] + 0.8 * scale[None], 1.7 * scale[None]
  locs, scales = _per_source_posteriors(model, x)
  if exact:
    return locs, scales
  return locs + 0.5 * scales, 0.95 * scales


@pytest.mark.parametrize("name", ["iwae", "ind", "moe", "poe"])
def test_bound_increases_with_num_samples_and_stays_below_log_marginal(name, model):
  replicates = 20_000
  x = np.repeat(model.sample(1, seed=1), replicates, axis=1)  # one x, many replicates
  log_px = model.log_marginal(x[:, :1])[0]
  loc, scale = _proposals(name, model, x, exact=False)
  means, stderrs = [], []
  for k in (1, 4, 16, 64):
    bound, _ = objectives.objective_bound(
        name, loc, scale, model.log_joint(x), k,
        normal=tf.random.Generator.from_seed(k).normal)
    bound = bound.numpy()
    means.append(bound.mean())
    stderrs.append(bound.std() / math.sqrt(replicates))
  for k_index in range(3):
    gain = means[k_index + 1] - means[k_index]
    noise = math.hypot(stderrs[k_index], stderrs[k_index + 1])
    assert gain > 3. * noise, (name, means, stderrs)
  gaps = log_px - np.array(means)
  assert np.all(gaps > 3. * np.array(stderrs)), (name, gaps, stderrs)


@pytest.mark.parametrize("name", ["iwae", "ind", "moe", "poe"])
@pytest.mark.parametrize("num_samples", [1, 7])
def test_bound_equals_log_marginal_for_every_example_with_exact_posterior(
    name, num_samples, model):
  x = model.sample(64, seed=2)
  log_px = model.log_marginal(x)
  loc, scale = _proposals(name, model, x, exact=True)
  bound, _ = objectives.objective_bound(name, loc, scale, model.log_joint(x),
                                        num_samples)
  np.testing.assert_allclose(bound, log_px, rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize("weight", [0.25, 0.5])
def test_hybrid_is_weighted_sum_of_ind_and_poe_from_the_same_samples(weight, model):
  x = model.sample(32, seed=3)
  loc, scale = _proposals("poe", model, x, exact=False)
  hybrid, parts = objectives.objective_bound(
      "hybrid", loc, scale, model.log_joint(x), 5, hybrid_weight=weight,
      normal=tf.random.Generator.from_seed(4).normal)
  reference = objectives.importance_bounds(
      loc, scale, model.log_joint(x), 5, ("ind", "poe"),
      normal=tf.random.Generator.from_seed(4).normal)
  np.testing.assert_allclose(parts["ind"], reference["ind"], rtol=1e-6)
  np.testing.assert_allclose(parts["poe"], reference["poe"], rtol=1e-6)
  expected = weight * reference["ind"].numpy() + (1. - weight) * reference["poe"].numpy()
  np.testing.assert_allclose(hybrid, expected, rtol=1e-6, atol=1e-6)


def test_moe_and_ind_weights_use_mixture_and_expert_densities_by_hand():
  loc = np.array([[[0.5, -1.]], [[-0.7, 0.3]], [[1.2, 0.8]]])  # [M=3, B=1, Dz=2]
  scale = np.array([[[0.6, 0.9]], [[0.4, 0.7]], [[1., 0.5]]])
  eps = np.array([[[[0.3, -1.1]], [[1.4, 0.2]]],
                  [[[-0.5, 0.9]], [[0.1, -0.4]]],
                  [[[2.0, 0.6]], [[-1.3, -0.2]]]])  # [M, K=2, B, Dz]
  target = np.array([0.2, -0.3])

  def normal(shape):
    assert tuple(shape.numpy()) == eps.shape
    return tf.constant(eps, tf.float32)

  def log_joint(z):  # an unnormalised Gaussian "posterior" centred on `target`
    return -tf.reduce_sum(tf.square(z - target), -1)

  def density(z, m):
    return math.prod(
        math.exp(-0.5 * ((z[d] - loc[m, 0, d]) / scale[m, 0, d]) ** 2)
        / (scale[m, 0, d] * math.sqrt(2. * math.pi)) for d in range(2))

  expected = {"ind": 0., "moe": 0.}
  for m in range(3):
    weights = {"ind": [], "moe": []}
    for k in range(2):
      z = loc[m, 0] + scale[m, 0] * eps[m, k, 0]
      joint = math.exp(-np.sum((z - target) ** 2))
      weights["ind"].append(joint / density(z, m))
      weights["moe"].append(joint / (sum(density(z, j) for j in range(3)) / 3.))
    for key in expected:
      expected[key] += math.log(sum(weights[key]) / 2.) / 3.
  got = objectives.importance_bounds(loc, scale, log_joint, 2, ("ind", "moe"), normal)
  for key, value in expected.items():
    assert float(got[key][0]) == pytest.approx(value, rel=1e-5, abs=1e-5), key


def test_unknown_objective_or_bound_raises_value_error(model):
  x = model.sample(2, seed=5)
  loc, scale = _per_source_posteriors(model, x)
  with pytest.raises(ValueError, match="Unknown objective 'elbo'"):
    objectives.objective_bound("elbo", loc, scale, model.log_joint(x), 2)
  with pytest.raises(ValueError, match="sum"):
    objectives.importance_bounds(loc, scale, model.log_joint(x), 2, ("poe", "sum"))
