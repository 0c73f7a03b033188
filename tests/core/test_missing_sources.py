"""Objectives and the model on incomplete data: presence masks (issue 26)."""
import numpy as np
import pytest
import tensorflow as tf

from linear_gaussian import LinearGaussian
from msnvi_tf.core import objectives

NUM_SOURCES, LATENT, BATCH, K = 3, 2, 7, 5
# Every pattern of present sources of three, one example each (the last complete).
PRESENT = np.array([[1, 0, 0, 1, 1, 0, 1],
                    [0, 1, 0, 1, 0, 1, 1],
                    [0, 0, 1, 0, 1, 1, 1]], np.float32)  # [M, B]


def _fixed_normal(arrays):
  """A `normal` that returns `arrays` in turn (the noise of one `importance_bounds` call)."""
  queue = list(arrays)

  def normal(shape):
    value = queue.pop(0)
    assert tuple(value.shape) == tuple(int(n) for n in shape), (value.shape, shape)
    return tf.constant(value)

  return normal


def _masked_log_joint(model, x, present):
  """ln p(z) + sum_m present_m ln p(x_m | z): the linear-Gaussian log joint of the
  present sources of each example, written out here."""
  a, b, sigma = (tf.constant(v[:, None], tf.float32) for v in (model.a, model.b, model.sigma))
  x, present = tf.constant(x, tf.float32), tf.constant(present)

  def log_joint(z):
    z = z[..., None, :, :]  # [..., 1, B, Dz]
    log_lik = -0.5 * tf.reduce_sum(tf.square((x - a * z - b) / sigma)
                                   + 2. * tf.math.log(sigma) + np.log(2 * np.pi), -1)
    log_prior = -0.5 * tf.reduce_sum(tf.square(z[..., 0, :, :]) + np.log(2 * np.pi), -1)
    return log_prior + tf.reduce_sum(present * log_lik, -2)  # [..., B]

  return log_joint


@pytest.fixture(scope="module")
def problem():
  """A linear-Gaussian model, data, beliefs (noisy posteriors) and fixed noise."""
  model = LinearGaussian(NUM_SOURCES, LATENT, seed=3)
  x = model.sample(BATCH, seed=4)  # [M, B, Dz]
  rng = np.random.default_rng(5)
  loc = np.stack([model.posterior(x, [m])[0] for m in range(NUM_SOURCES)])
  loc = (loc + 0.3 * rng.normal(size=loc.shape)).astype(np.float32)
  scale = rng.uniform(0.3, 1.1, loc.shape).astype(np.float32)
  experts_eps = rng.normal(size=(NUM_SOURCES, K, BATCH, LATENT)).astype(np.float32)
  poe_eps = rng.normal(size=(1, K, BATCH, LATENT)).astype(np.float32)
  return model, x, loc, scale, experts_eps, poe_eps


def test_all_present_mask_gives_the_unmasked_bounds_bit_for_bit(problem):
  model, x, loc, scale, experts_eps, poe_eps = problem
  log_joint = model.log_joint(x)
  unmasked = objectives.importance_bounds(loc, scale, log_joint, K,
                                          normal=_fixed_normal([experts_eps, poe_eps]))
  masked = objectives.importance_bounds(
      loc, scale, log_joint, K, normal=_fixed_normal([experts_eps, poe_eps]),
      present=np.ones((NUM_SOURCES, BATCH), np.float32))
  for name in objectives.INTEGRATED_BOUNDS:
    np.testing.assert_array_equal(masked[name].numpy(), unmasked[name].numpy(), name)


def test_each_examples_bound_is_the_bound_of_its_present_sources_alone(problem):
  model, x, loc, scale, experts_eps, poe_eps = problem
  masked = objectives.importance_bounds(
      loc, scale, _masked_log_joint(model, x, PRESENT), K,
      normal=_fixed_normal([experts_eps, poe_eps]), present=PRESENT)
  for b in range(BATCH):
    sources = np.flatnonzero(PRESENT[:, b])
    alone = objectives.importance_bounds(
        loc[sources][:, b:b + 1], scale[sources][:, b:b + 1],
        model.log_joint(x[:, b:b + 1], sources), K,
        normal=_fixed_normal([experts_eps[sources][:, :, b:b + 1],
                              poe_eps[:, :, b:b + 1]]))
    for name in objectives.INTEGRATED_BOUNDS:
      np.testing.assert_allclose(masked[name][b], alone[name][0], rtol=2e-6, atol=2e-5,
                                 err_msg=f"{name}, example {b}, sources {sources}")


def test_masked_poe_of_exact_posteriors_is_the_exact_log_marginal_of_the_present_sources():
  # With beliefs the exact single-source posteriors, the PoE with the prior
  # correction for |S| experts is p(z | x_S): every weight equals p(x_S).
  model = LinearGaussian(NUM_SOURCES, LATENT, seed=7)
  x = model.sample(BATCH, seed=8)
  posteriors = [model.posterior(x, [m]) for m in range(NUM_SOURCES)]
  loc = np.stack([p[0] for p in posteriors]).astype(np.float32)
  scale = np.stack([p[1] for p in posteriors]).astype(np.float32)
  bound = objectives.importance_bounds(loc, scale, _masked_log_joint(model, x, PRESENT), 3,
                                       which=("poe",), present=PRESENT)["poe"]
  exact = [model.log_marginal(x[:, b:b + 1], np.flatnonzero(PRESENT[:, b]))[0]
           for b in range(BATCH)]
  np.testing.assert_allclose(bound.numpy(), exact, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("objective", sorted(set(objectives.OBJECTIVES) - {"iwae"}))
def test_absent_sources_get_exactly_zero_gradient_and_present_ones_do_not(problem, objective):
  model, x, loc, scale, experts_eps, poe_eps = problem
  present = PRESENT.copy()
  present[0] = 0.  # source 0 absent from every example
  present[1, 2] = 1.  # (example 2 then still has a source)
  present[2, 0] = 1.
  loc, scale = tf.Variable(loc), tf.Variable(scale)
  with tf.GradientTape() as tape:
    bound, _ = objectives.objective_bound(
        objective, loc, scale, _masked_log_joint(model, x, present), K,
        normal=_fixed_normal([poe_eps] if objective == "poe" else [experts_eps, poe_eps]),
        present=present)
    loss = -tf.reduce_sum(bound)
  grad_loc, grad_scale = tape.gradient(loss, [loc, scale])
  for grad in (grad_loc, grad_scale):
    assert np.all(np.isfinite(grad.numpy()))
    np.testing.assert_array_equal(grad.numpy()[present == 0.], 0.)
    assert np.all(np.abs(grad.numpy()[present == 1.]).sum(-1) > 0.)
