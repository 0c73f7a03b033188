"""The large-K estimate `MultiSourceVAE.log_likelihood`: exact, traced once, ordered."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from linear_gaussian import LinearGaussian
from msnvi_tf.core import beliefs
from msnvi_tf.core import kernels
from msnvi_tf.core import likelihoods
from msnvi_tf.core import model as model_lib
from msnvi_tf.runtime import hardware
from msnvi_tf.architectures import toy
from msnvi_tf.data import toy as toy_data


tfd = tfp.distributions


PIXELS, DZ = 6, 3


def _bernoulli_model(policy="float32"):
  """MNIST-TB in miniature: sources top / bottom of 6 binary pixels, elu stems."""
  keras.utils.set_random_seed(0)

  def stem(name):
    return [keras.layers.Dense(8, activation="elu", name=f"{name}_0")]

  with hardware.policy(policy):
    encoders = {s: beliefs.Encoder(stem(f"enc_{s}"), DZ, (PIXELS,), name=f"encoder_{s}")
                for s in ("top", "bottom")}
    decoders = {s: likelihoods.Decoder(stem(f"dec_{s}"), likelihoods.BernoulliHead((PIXELS,)),
                                       DZ, name=f"decoder_{s}")
                for s in ("top", "bottom")}
    return model_lib.MultiSourceVAE(encoders, decoders, DZ)


def _bernoulli_batch(size=16, seed=0):
  rng = np.random.default_rng(seed)
  return {s: (rng.random((size, PIXELS)) < .4).astype(np.float32) for s in ("top", "bottom")}


def _toy_model(toy_config):
  return toy.build_model(toy_config.override(["decoder_init_scale=1.0"]))


def _reference(model, x, num_samples, chunk_size, seed, sources=None, method="poe"):
  """The estimate from the same samples by plain TFP, log-sum-exp in float64 numpy."""
  q = model.integrate(model.encode(x, sources), method)
  log_w = []
  for start in range(0, num_samples, chunk_size):  # the samples log_likelihood draws
    z = q.sample(min(chunk_size, num_samples - start),
                 seed=tf.random.experimental.stateless_fold_in([seed, 0], start))
    log_p = tfd.MultivariateNormalDiag(tf.zeros(model.latent_dim),
                                       tf.ones(model.latent_dim)).log_prob(z)
    for target, decoder in model.decoders.items():
      log_p += decoder.distribution(z).log_prob(tf.cast(x[target], tf.float32))
    log_w.append(np.float64(log_p) - np.float64(q.log_prob(z)))  # [n, B]
  log_w = np.concatenate(log_w)  # [K, B]
  high = log_w.max(0)
  return high + np.log(np.exp(log_w - high).sum(0)) - math.log(num_samples)


@pytest.mark.parametrize("kind,policy,proposal,atol", [
    ("toy", "float32", "poe", 1e-4),  # Normal heads
    ("bernoulli", "float32", "single", 1e-4),
    ("toy", "float32", "moe", 1e-4),
    # bf16 matmuls (the fused decoder path) against TFP on the same bf16 layers.
    ("bernoulli", "mixed_bfloat16", "poe", 0.05)])
def test_estimate_equals_float64_reference_from_the_same_samples(
    kind, policy, proposal, atol, toy_config):
  if kind == "toy":
    model, x = _toy_model(toy_config), toy_data.sample(16, 0)[0]
  else:
    model, x = _bernoulli_model(policy), _bernoulli_batch()
  sources, method = {"poe": (None, "poe"), "single": ([model.sources[0]], "poe"),
                     "moe": (None, "moe")}[proposal]
  # K = 50 in chunks of 16: three full chunks and a remainder of 2.
  got = model.log_likelihood(x, 50, sources, method, chunk_size=16, seed=5).numpy()
  expected = _reference(model, x, 50, 16, 5, sources, method)
  assert got.shape == (16,) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=atol)
  if policy != "float32":
    assert model.decoders["top"].fused_layers() is not None


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_decoder_log_prob_equals_keras_log_prob_in_float32(compiled, toy_config):
  model, x = _bernoulli_model(), _bernoulli_batch()
  z = tf.random.stateless_normal([4, 16, DZ], [1, 2]) * 3.
  decoder = model.decoders["top"]
  with kernels.compiled_kernels(compiled):
    fused = decoder.fused_log_prob(z, x["top"])
    keras_path = decoder.log_prob(z, x["top"])
    # float32: the fused path does not pay, so evaluation takes log_prob.
    np.testing.assert_array_equal(decoder.evaluation_log_prob(z, x["top"]), keras_path)
  np.testing.assert_allclose(fused, keras_path, rtol=1e-5, atol=1e-4)
  assert _toy_model(toy_config).decoders["x"].fused_layers() is None  # Normal head


def test_no_retrace_for_new_data_or_seed_and_seeded_estimates_repeat(toy_config):
  model = _toy_model(toy_config)
  fn = model.log_likelihood_function()
  runs = {}
  for seed, data_seed in ((3, 0), (3, 0), (4, 0), (None, 0), (None, 0), (3, 1)):
    if seed:
      tf.random.set_seed(seed * len(runs))  # must not matter with a seed
    runs.setdefault((seed, data_seed), []).append(model.log_likelihood(
        toy_data.sample(16, data_seed)[0], 30, chunk_size=7, seed=seed).numpy())
  assert fn.experimental_get_tracing_count() == 1
  np.testing.assert_array_equal(*runs[3, 0])
  assert not np.array_equal(runs[3, 0][0], runs[4, 0][0])
  # Without a seed every call draws a new one from TF's global RNG.
  assert not np.array_equal(*runs[None, 0])
  # Another batch size traces once more, with the batch axis relaxed to None,
  # which then serves every batch size.
  for size in (32, 24):
    model.log_likelihood(toy_data.sample(size, 0)[0], 30, chunk_size=7, seed=1)
  assert fn.experimental_get_tracing_count() == 2
  assert model.log_likelihood_function() is fn


def _linear_gaussian_vae(lg: LinearGaussian):
  """A MultiSourceVAE whose encoders give the exact single-source posteriors and
  whose decoders are the linear-Gaussian likelihoods of `lg`."""
  names = [f"s{m}" for m in range(lg.num_sources)]
  encoders, decoders = {}, {}
  min_scale = 1e-4
  for m, name in enumerate(names):
    a, b, var = lg.a[m], lg.b[m], lg.sigma[m] ** 2
    prec = 1. + a ** 2 / var  # p(z | x_m): loc = a (x - b) / var / prec, scale prec^-1/2
    encoder = beliefs.Encoder([], lg.latent_dim, (lg.latent_dim,), min_scale,
                              name=f"encoder_{name}")
    head = encoder.head
    head.loc_layer.kernel.assign(np.diag(a / var / prec))
    head.loc_layer.bias.assign(-a * b / var / prec)
    head.scale_layer.kernel.assign(np.zeros((lg.latent_dim,) * 2))
    unit = (prec ** -0.5 - min_scale) / (1. - min_scale)
    head.scale_layer.bias.assign(np.log(unit / (1. - unit)))
    normal = likelihoods.NormalHead((lg.latent_dim,), scale_shape=(lg.latent_dim,),
                                    min_scale=1e-3)
    decoder = likelihoods.Decoder([], normal, lg.latent_dim, name=f"decoder_{name}")
    dense = normal.param_layer.layers[0]
    dense.kernel.assign(np.diag(a))
    dense.bias.assign(b)
    normal.raw_scale.assign(np.log(np.expm1(lg.sigma[m] - 1e-3)))
    encoders[name], decoders[name] = encoder, decoder
  return model_lib.MultiSourceVAE(encoders, decoders, lg.latent_dim)


def test_linear_gaussian_estimates_are_exact_with_poe_and_ordered_in_k_alone():
  lg = LinearGaussian(num_sources=2, latent_dim=2, seed=3)
  model = _linear_gaussian_vae(lg)
  obs = lg.sample(256, seed=4)  # [M, B, Dz]
  x = {f"s{m}": obs[m].astype(np.float32) for m in range(2)}
  exact = lg.log_marginal(obs)  # [B]
  # The PoE of exact single-source posteriors is the exact posterior (App. C):
  # every importance weight is p(x).
  np.testing.assert_allclose(model.log_likelihood(x, 10, seed=0), exact, atol=1e-4)
  # One source's posterior as proposal: E[estimate_1] < E[estimate_K] <= ln p(x)
  # (here 3 nats below, then within 0.02 nats).
  k1 = model.log_likelihood(x, 1, ["s0"], seed=0).numpy().mean()
  k100 = model.log_likelihood(x, 100, ["s0"], seed=0).numpy().mean()
  assert k1 < k100 - 1. and exact.mean() - 0.1 < k100 < exact.mean() + 0.05, (
      k1, k100, exact.mean())
