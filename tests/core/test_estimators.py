"""The one importance-weighted estimator (`core.estimators`) and its users agree."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from linear_gaussian import LinearGaussian
from msnvi_tf.architectures import toy
from msnvi_tf.core import estimators
from msnvi_tf.core import imputation
from msnvi_tf.data import toy as toy_data
from msnvi_tf.runtime import export

tfd = tfp.distributions

def _log_mean_exp64(log_w):
  """ln (1/K) sum_k exp(log_w_k) over axis 0, in float64 numpy."""
  log_w = np.float64(log_w)
  high = log_w.max(0)
  return high + np.log(np.exp(log_w - high).mean(0))

def _linear_gaussian(exact):
  """(proposal q, log_joint, exact ln p(x)) of a 2-source linear-Gaussian model."""
  lg = LinearGaussian(num_sources=2, latent_dim=3, seed=1)
  obs = lg.sample(32, seed=2)  # [M, B, Dz]
  loc, scale = lg.posterior(obs)  # exact p(z | x), [B, Dz]
  if not exact:
    loc, scale = loc + 0.5 * scale, 1.5 * scale
  q = tfd.MultivariateNormalDiag(np.float32(loc), np.float32(scale))
  return q, lg.log_joint(obs), lg.log_marginal(obs)

@pytest.mark.parametrize("chunk_size", [1, 7, 50, 64])
def test_chunked_estimate_equals_float64_log_mean_exp_of_the_same_samples(chunk_size):
  q, log_joint, _ = _linear_gaussian(exact=False)
  seed = estimators.as_seed(3)
  got = estimators.log_likelihood(q, log_joint, 50, seed, chunk_size).numpy()
  chunk = min(chunk_size, 50)
  z = tf.concat([estimators.draw(q, min(chunk, 50 - k0), seed, k0)
                 for k0 in range(0, 50, chunk)], 0)  # the convention's samples
  expected = _log_mean_exp64(np.float64(log_joint(z)) - np.float64(q.log_prob(z)))
  assert got.shape == (32,) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
  if chunk >= 50:  # one chunk draws what draw(q, K, seed) draws
    np.testing.assert_array_equal(z, estimators.draw(q, 50, seed))

def test_exact_proposal_gives_log_marginal_and_an_inexact_one_a_bound():
  q, log_joint, exact = _linear_gaussian(exact=True)
  np.testing.assert_allclose(
      estimators.log_likelihood(q, log_joint, 20, estimators.as_seed(0), 8), exact,
      atol=1e-4)
  q, log_joint, exact = _linear_gaussian(exact=False)
  means = [float(np.mean(estimators.log_likelihood(q, log_joint, k, estimators.as_seed(0))))
           for k in (1, 1000)]
  assert means[0] < means[1] < exact.mean() + 0.02, (means, exact.mean())
  assert means[1] > exact.mean() - 0.1

def test_stable_for_large_log_weights():
  q, _, _ = _linear_gaussian(exact=False)
  seed = estimators.as_seed(0)
  small = estimators.log_mean_exp(q, lambda z: -tf.reduce_sum(z ** 2, -1), 30, seed, 7)
  large = estimators.log_mean_exp(q, lambda z: -1e4 - tf.reduce_sum(z ** 2, -1), 30,
                                  seed, 7)
  np.testing.assert_allclose(large, small - 1e4, rtol=1e-6)

def test_int_seeds_repeat_whatever_the_global_seed_and_none_draws_new_ones():
  q, log_joint, _ = _linear_gaussian(exact=False)
  runs = []
  for global_seed, seed in ((1, 5), (2, 5), (3, 6), (4, None), (5, None)):
    tf.random.set_seed(global_seed)
    runs.append(estimators.log_likelihood(q, log_joint, 9, estimators.as_seed(seed),
                                          4).numpy())
  np.testing.assert_array_equal(runs[0], runs[1])
  for i, j in ((0, 2), (0, 3), (3, 4)):
    assert not np.array_equal(runs[i], runs[j])
  np.testing.assert_array_equal(estimators.as_seed(5), [5, 0])
  np.testing.assert_array_equal(estimators.as_seed(tf.constant([5, 0])), [5, 0])

def test_chunk_size_defaults_to_rows_per_batch_and_is_checked():
  assert estimators.chunk_size_for(10_000, 100) == estimators.DEFAULT_ROWS // 100
  assert estimators.chunk_size_for(50, 100) == 50
  assert estimators.chunk_size_for(50, None, 8) == 8
  with pytest.raises(ValueError, match="num_samples must be >= 1"):
    estimators.chunk_size_for(0, 10)

@pytest.fixture
def toy_model_and_batch(toy_config):
  model = toy.build_model(toy_config.override(["decoder_init_scale=1.0"]))
  return model, toy_data.sample(16, 0)[0]

def test_model_export_sir_and_predict_share_the_samples_of_one_seed(toy_model_and_batch):
  model, x = toy_model_and_batch
  num_samples, seed = 12, 4
  module = export.ServingModule(model, num_samples, seed)
  present = tf.ones([16, len(model.sources)])
  np.testing.assert_allclose(
      module.log_likelihood(x, present),
      model.log_likelihood(x, num_samples, chunk_size=num_samples, seed=seed),
      rtol=1e-5, atol=1e-4)
  predicted = model.predict_targets(x, num_samples=num_samples, seed=seed)
  for target, mean in module.predict(x, present).items():
    np.testing.assert_allclose(mean, predicted[target], rtol=1e-5, atol=1e-5)
  # SIR's proposals are the samples of log_likelihood's one chunk.
  proposals, _ = model.sir(x, num_samples=num_samples, seed=seed)
  q = model.integrate(model.encode(x))
  np.testing.assert_array_equal(
      proposals, estimators.draw(q, num_samples, estimators.as_seed(seed)))

def test_predictive_mean_averages_the_decoder_means_at_draws_samples(toy_model_and_batch):
  model, x = toy_model_and_batch
  q = model.integrate(model.encode(x))
  seed = estimators.as_seed(4)
  means, terms = estimators.predictive_mean(q, model.decoders, 12, seed)
  z = estimators.draw(q, 12, seed)  # [K, B, Dz]
  for target, decoder in model.decoders.items():
    np.testing.assert_array_equal(terms[target], decoder.mean(z))
    np.testing.assert_array_equal(means[target], tf.reduce_mean(terms[target], 0))

def test_predictive_log_likelihood_is_the_estimator_on_p_of_the_missing_part(
    toy_model_and_batch):
  model, x = toy_model_and_batch
  got = imputation.predictive_log_likelihood(model, x, ["x"], ["y"], num_samples=10,
                                             seed=2)
  q = model.integrate(model.encode(x, ["x"]))
  z = estimators.draw(q, 10, estimators.as_seed(2))
  expected = _log_mean_exp64(model.decoders["y"].log_prob(z, x["y"]))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
  assert not np.array_equal(got, imputation.predictive_log_likelihood(
      model, x, ["x"], ["y"], num_samples=10, seed=3))
