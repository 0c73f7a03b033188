"""Likelihood heads and kernels: fast log-probabilities equal TFP's, samples broadcast."""
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import kernels
from msnvi_tf.core import likelihoods


@pytest.mark.parametrize("head,x", [
    (likelihoods.BernoulliHead((3, 4)), lambda rng: (rng.random((5, 3, 4)) < .4)),
    (likelihoods.NormalHead((6,), scale="dense"), lambda rng: rng.normal(size=(5, 6))),
    (likelihoods.NormalHead((3, 4), init_scale=.5), lambda rng: rng.normal(size=(5, 3, 4))),
    (likelihoods.NormalHead((3, 4), scale_shape=(4,), init_scale=.5),
     lambda rng: rng.normal(size=(5, 3, 4))),
    (likelihoods.CategoricalHead(10), lambda rng: np.eye(10)[rng.integers(10, size=5)]),
])
def test_head_log_prob_equals_tfp_log_prob_with_samples_broadcast(head, x):
  rng = np.random.default_rng(0)
  decoder = likelihoods.Decoder([keras.layers.Dense(8, activation="tanh")], head,
                                latent_dim=2)
  z = tf.constant(rng.normal(size=(7, 5, 2)), tf.float32)  # [K, B, Dz]
  data = tf.constant(x(rng), tf.float32)  # [B, *event]
  params = decoder._apply(z)  # pylint: disable=protected-access
  expected = head.distribution(params).log_prob(data)  # TFP, [K, B]
  got = decoder.log_prob(z, data)
  assert got.shape == (7, 5)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("compiled", [False, True])
def test_bernoulli_log_prob_value_and_gradient_equal_tfp_even_for_extreme_logits(compiled):
  rng = np.random.default_rng(1)
  logits = np.concatenate([rng.normal(scale=3., size=(4, 5, 6)),
                           np.full((4, 5, 2), 80.), np.full((4, 5, 2), -80.)], -1)
  logits = tf.constant(logits, tf.float32)  # [K, B, 10]
  x = tf.constant(rng.random((5, 10)) < .5, tf.float32)  # [B, 10]
  weights = tf.constant(rng.normal(size=(4, 5)), tf.float32)  # upstream gradient

  def value_and_grad(fn):
    with tf.GradientTape() as tape:
      tape.watch(logits)
      value = fn(logits)
      total = tf.reduce_sum(weights * value)
    return value, tape.gradient(total, logits)

  expected, expected_grad = value_and_grad(lambda l: tf.reduce_sum(
      tfp.distributions.Bernoulli(logits=l).log_prob(x), -1))
  with kernels.compiled_kernels(compiled):
    got, grad = tf.function(lambda: value_and_grad(
        lambda l: kernels.bernoulli_log_prob(l, x, 1)))()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(grad))
  # The +-80 logits give the right answer: -80 nats per mismatched pixel.
  assert np.min(got) < -80.


def test_compiled_kernels_are_per_context_and_restore_the_previous_setting():
  assert not getattr(kernels._KERNELS, "enabled", False)  # pylint: disable=protected-access
  with kernels.compiled_kernels():
    assert kernels._KERNELS.enabled  # pylint: disable=protected-access
    with kernels.compiled_kernels(False):
      assert not kernels._KERNELS.enabled  # pylint: disable=protected-access
    assert kernels._KERNELS.enabled  # pylint: disable=protected-access
  assert not kernels._KERNELS.enabled  # pylint: disable=protected-access


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("scale_shape", [(4, 5, 3), (1, 1, 1), (1, 1, 3)])
def test_normal_log_prob_value_and_gradients_equal_tfp(compiled, scale_shape):
  # A dense std, a global scalar std and a global per-channel std.
  rng = np.random.default_rng(2)
  loc = tf.constant(rng.normal(size=(4, 5, 3)), tf.float32)  # [K, B, 3]
  scale = tf.constant(rng.uniform(.1, 2., size=scale_shape), tf.float32)
  x = tf.constant(rng.normal(size=(5, 3)), tf.float32)  # [B, 3]
  weights = tf.constant(rng.normal(size=(4, 5)), tf.float32)

  def value_and_grads(fn):
    with tf.GradientTape() as tape:
      tape.watch([loc, scale])
      value = fn(loc, scale)
      total = tf.reduce_sum(weights * value)
    return [value] + tape.gradient(total, [loc, scale])

  expected = value_and_grads(lambda l, s: tf.reduce_sum(
      tfp.distributions.Normal(l, s).log_prob(x), -1))
  with kernels.compiled_kernels(compiled):
    got = tf.function(lambda: value_and_grads(
        lambda l, s: kernels.normal_log_prob(l, s, x, 1)))()
  assert got[2].shape == scale_shape
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
