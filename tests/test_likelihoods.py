"""Likelihood heads: fast log-probabilities equal TFP's, broadcasting over samples."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf import likelihoods


@pytest.mark.parametrize("head,x", [
    (likelihoods.BernoulliHead((3, 4)), lambda rng: (rng.random((5, 3, 4)) < .4)),
    (likelihoods.NormalHead((6,), scale="dense"), lambda rng: rng.normal(size=(5, 6))),
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
