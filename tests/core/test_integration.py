"""Integration of beliefs (PoE, MoE, PMI) against independent closed forms."""
import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import integration
from linear_gaussian import LinearGaussian

NAMES = ("a", "b", "c", "d")


def _random_beliefs(rng, batch, latent_dim):
  """Beliefs with std in [0.3, 0.8] (precision >= 1, as the encoders guarantee)."""
  return {
      n: beliefs_lib.make_belief(rng.uniform(-2., 2., (batch, latent_dim)),
                                 rng.uniform(0.3, 0.8, (batch, latent_dim)))
      for n in NAMES}


def _normal_log_pdf(z, loc, scale):
  """ln N(z; loc, diag(scale^2)) summed over the last axis, numpy float64."""
  return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale)
                - 0.5 * math.log(2. * math.pi), -1)


def _logsumexp(v, axis):
  peak = np.max(v, axis, keepdims=True)
  return np.squeeze(peak, axis) + np.log(np.sum(np.exp(v - peak), axis))


def _all_subsets():
  return [list(s) for r in range(1, len(NAMES) + 1)
          for s in itertools.combinations(NAMES, r)]


def test_poe_equals_numerically_normalised_product_of_densities_on_2d_grid():
  rng = np.random.default_rng(0)
  beliefs = _random_beliefs(rng, batch=2, latent_dim=2)
  axis = np.linspace(-7., 7., 251)
  cell = (axis[1] - axis[0]) ** 2
  grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1)
  grid = grid.reshape(-1, 1, 2)  # [G, 1, 2]: every point for every example
  log_prior = _normal_log_pdf(grid, 0., 1.)  # [G, 1]
  for subset in _all_subsets():
    log_product = log_prior + sum(
        _normal_log_pdf(grid, beliefs[n].mean().numpy(), beliefs[n].stddev().numpy())
        - log_prior for n in subset)  # [G, B]
    expected = log_product - (_logsumexp(log_product, 0) + math.log(cell))  # [G, B]
    got = integration.poe(beliefs, subset).log_prob(grid.astype(np.float32)).numpy()
    relevant = expected > expected.max(0) - 25.
    np.testing.assert_allclose(got[relevant], expected[relevant], atol=2e-3,
                               err_msg=f"subset {subset}")


def test_poe_of_one_source_is_that_source_belief():
  rng = np.random.default_rng(1)
  beliefs = _random_beliefs(rng, batch=3, latent_dim=4)
  for name in NAMES:
    q = integration.poe(beliefs, [name])
    np.testing.assert_allclose(q.mean(), beliefs[name].mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.stddev(), beliefs[name].stddev(), rtol=1e-5)


def test_masked_poe_stacked_equals_poe_of_present_subset():
  rng = np.random.default_rng(2)
  batch, latent_dim = 16, 3
  beliefs = _random_beliefs(rng, batch, latent_dim)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, NAMES)  # [M, B, Dz]
  mask = rng.integers(0, 2, (len(NAMES), batch))
  mask[:, 0] = 0  # no source present: the prior
  mask[:, 1] = 1  # all present
  loc_star, scale_star = integration.poe_stacked(loc, scale, mask)
  for b in range(batch):
    subset = [n for n, present in zip(NAMES, mask[:, b]) if present]
    if subset:
      q = integration.poe(beliefs, subset)
      want_loc, want_scale = q.mean()[b], q.stddev()[b]
    else:
      want_loc, want_scale = np.zeros(latent_dim), np.ones(latent_dim)
    np.testing.assert_allclose(loc_star[b], want_loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale_star[b], want_scale, rtol=1e-5)


def test_masked_poe_has_exactly_zero_gradient_for_absent_sources():
  rng = np.random.default_rng(3)
  loc = tf.constant(rng.normal(size=(3, 4, 2)), tf.float32)
  scale = tf.constant(rng.uniform(0.3, 1., (3, 4, 2)), tf.float32)
  mask = np.array([[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 0, 1]])
  with tf.GradientTape() as tape:
    tape.watch([loc, scale])
    loc_star, scale_star = integration.poe_stacked(loc, scale, mask)
    out = tf.reduce_sum(loc_star ** 2) + tf.reduce_sum(tf.math.log(scale_star))
  grad_loc, grad_scale = tape.gradient(out, [loc, scale])
  absent = mask == 0
  np.testing.assert_array_equal(grad_loc.numpy()[absent], 0.)
  np.testing.assert_array_equal(grad_scale.numpy()[absent], 0.)
  assert np.all(np.abs(grad_scale.numpy()[~absent]) > 0.)


def _exact_single_source_beliefs(model, x):
  """{name: p(z | x_m)} of the linear-Gaussian model, as beliefs."""
  return {n: beliefs_lib.make_belief(*model.posterior(x, [m]))
          for m, n in enumerate(NAMES)}


@pytest.mark.smoke
def test_poe_of_exact_single_source_posteriors_is_exact_joint_posterior():
  model = LinearGaussian(num_sources=4, latent_dim=3, seed=4)
  x = model.sample(32, seed=5)
  beliefs = _exact_single_source_beliefs(model, x)
  for subset in _all_subsets():
    want_loc, want_scale = model.posterior(x, [NAMES.index(n) for n in subset])
    q = integration.poe(beliefs, subset)
    np.testing.assert_allclose(q.mean(), want_loc, rtol=1e-4, atol=1e-5,
                               err_msg=f"subset {subset}")
    np.testing.assert_allclose(q.stddev(), want_scale, rtol=1e-4,
                               err_msg=f"subset {subset}")


def test_moe_log_prob_matches_hand_written_uniform_mixture():
  rng = np.random.default_rng(6)
  beliefs = _random_beliefs(rng, batch=5, latent_dim=3)
  z = rng.normal(0., 2., (7, 5, 3))  # [N, B, Dz]
  for subset in _all_subsets():
    log_components = np.stack([
        _normal_log_pdf(z, beliefs[n].mean().numpy(), beliefs[n].stddev().numpy())
        for n in subset])  # [S, N, B]
    expected = _logsumexp(log_components, 0) - math.log(len(subset))
    got = integration.integrate(beliefs, "moe", subset).log_prob(z.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4,
                               err_msg=f"subset {subset}")


def test_masked_moe_stacked_equals_moe_of_present_subset():
  rng = np.random.default_rng(7)
  batch = 6
  beliefs = _random_beliefs(rng, batch, latent_dim=2)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, NAMES)
  mask = rng.integers(0, 2, (len(NAMES), batch))
  mask[0] = 1  # at least one source present per example
  z = rng.normal(size=(9, batch, 2)).astype(np.float32)
  got = integration.moe_stacked(loc, scale, mask).log_prob(z).numpy()  # [N, B]
  for b in range(batch):
    subset = [n for n, present in zip(NAMES, mask[:, b]) if present]
    want = integration.moe(beliefs, subset).log_prob(z).numpy()[:, b]
    np.testing.assert_allclose(got[:, b], want, rtol=1e-5, atol=1e-5)


def test_pmi_of_exact_posteriors_equals_log_marginal_ratio():
  model = LinearGaussian(num_sources=4, latent_dim=2, seed=8)
  x = model.sample(16, seed=9)
  beliefs = _exact_single_source_beliefs(model, x)
  for subset in _all_subsets():
    index = [NAMES.index(n) for n in subset]
    expected = model.log_marginal(x, index) - sum(
        model.log_marginal(x, [m]) for m in index)
    got = integration.pmi(beliefs, subset)
    np.testing.assert_allclose(got, expected, atol=2e-3 * len(subset),
                               err_msg=f"subset {subset}")


def _naive_pmi64(loc, scale):
  """ln Z_* + (M - 1) ln Z_0 - sum_m ln Z_m (Eq. 7) in numpy float64: `[B]`."""
  precision = scale ** -2.
  eta = precision * loc

  def log_z(lam, e):
    return 0.5 * math.log(2. * math.pi) - 0.5 * np.log(lam) + 0.5 * e ** 2 / lam

  num = loc.shape[0]
  precision_star = precision.sum(0) - (num - 1.)
  return np.sum(log_z(precision_star, eta.sum(0)) + (num - 1.) * log_z(1., 0.)
                - log_z(precision, eta).sum(0), -1)


def _small_scale_beliefs(rng, scale_floor, agree, dtype):
  """M = 3, B = 64, Dz = 8 beliefs with std in [s, 2 s] as `(beliefs, loc, scale)`.

  `agree`: means within a few std of a shared z (moderate PMI); otherwise means
  differ by O(1) (PMI ~ -Lambda (mu - mu')^2, tens of millions of nats at 1e-4).
  """
  shape = (3, 64, 8)
  z = rng.normal(size=shape[1:])
  scale = rng.uniform(scale_floor, 2. * scale_floor, shape).astype(dtype)
  offset = scale * rng.normal(size=shape) if agree else rng.uniform(-.5, .5, shape)
  loc = (z + offset).astype(dtype)
  beliefs = {n: tfp.distributions.MultivariateNormalDiag(loc[m], scale[m])
             for m, n in enumerate(NAMES[:3])}
  return beliefs, loc, scale


@pytest.mark.parametrize("agree", [True, False], ids=["agree", "conflict"])
@pytest.mark.parametrize("scale_floor", [3e-3, 1e-4])
def test_pmi_in_float32_matches_float64_reference_at_small_scales(scale_floor, agree):
  # The naive formula lost 0.3 nats at 3e-3 and 370 nats at 1e-4 here (relative
  # 3e-3 and 2.5 when the sources agree); the cancellation-free one is within
  # ~2e-7 relative, i.e. float32 rounding of the result.
  rng = np.random.default_rng(11)
  beliefs, loc, scale = _small_scale_beliefs(rng, scale_floor, agree, np.float32)
  want = _naive_pmi64(loc.astype(np.float64), scale.astype(np.float64))
  got = integration.pmi(beliefs)
  assert got.dtype == tf.float32
  error = np.abs(got.numpy() - want) / np.maximum(1., np.abs(want))
  assert error.max() < 2e-6, error.max()


def test_pmi_of_float64_beliefs_is_computed_in_float64():
  rng = np.random.default_rng(12)
  for scale_floor in (0.3, 1e-4):
    for agree in (True, False):
      beliefs, loc, scale = _small_scale_beliefs(rng, scale_floor, agree, np.float64)
      got = integration.pmi(beliefs)
      assert got.dtype == tf.float64
      # The naive float64 reference itself rounds its ~1e8-nat terms to ~1e-8.
      np.testing.assert_allclose(got, _naive_pmi64(loc, scale), rtol=1e-9, atol=1e-6)


def test_pmi_of_one_source_is_zero_and_of_identical_prior_experts_is_zero():
  rng = np.random.default_rng(13)
  beliefs = _random_beliefs(rng, batch=4, latent_dim=3)
  for name in NAMES:
    np.testing.assert_allclose(integration.pmi(beliefs, [name]), 0., atol=1e-5)
  prior = beliefs_lib.make_belief(np.zeros((4, 3)), np.ones((4, 3)))
  np.testing.assert_allclose(integration.pmi({"a": prior, "b": prior, "c": prior}),
                             0., atol=1e-6)


def _too_broad_beliefs():
  """M = 3 experts of std 2 in one example: Lambda_* = 3 / 4 - 2 < 0 there."""
  scale = np.full((3, 2, 2), 0.5)
  scale[:, 1] = 2.
  return {n: beliefs_lib.make_belief(np.zeros((2, 2)), scale[m])
          for m, n in enumerate(NAMES[:3])}


@pytest.mark.parametrize("call", [
    integration.poe,
    lambda b: integration.integrate(b, "poe"),
    integration.pmi,
], ids=["poe", "integrate", "pmi"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_non_positive_poe_precision_raises_clear_error(call, compiled):
  beliefs = _too_broad_beliefs()

  def run(b):
    out = call(b)
    return out if isinstance(out, tf.Tensor) else out.stddev()

  if compiled:
    run = tf.function(run)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"sources a, b, c has non-positive precision Lambda_\* = "
                           r"sum_m Lambda_m - \(M - 1\) Lambda_0: some expert scale "
                           r"exceeds the prior scale \(1\)"):
    run(beliefs)


def test_precision_check_passes_valid_beliefs_unchanged_and_spares_training_path():
  rng = np.random.default_rng(14)
  beliefs = _random_beliefs(rng, batch=3, latent_dim=2)
  # An expert equal to the prior (std 1, Lambda_* = 1 at the boundary) is valid.
  beliefs["d"] = beliefs_lib.make_belief(np.zeros((3, 2)), np.ones((3, 2)))
  loc, scale = beliefs_lib.stack_beliefs(beliefs, NAMES)
  want_loc, want_scale = integration.poe_stacked(loc, scale)
  for q in (integration.poe(beliefs),
            tf.function(lambda b: integration.poe(b).stddev())(beliefs)):
    got_scale = q if isinstance(q, tf.Tensor) else q.stddev()
    np.testing.assert_array_equal(got_scale, want_scale)
  np.testing.assert_array_equal(integration.poe(beliefs).mean(), want_loc)
  # The training path (objectives, export) uses poe_stacked: no assertion ops.
  def assertions(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return [op.name for op in graph.get_operations() if "assert" in op.name.lower()]

  spec = tf.TensorSpec([4, None, 2])
  assert not assertions(integration.poe_stacked, spec, spec)
  assert assertions(lambda b: integration.poe(b).mean(), beliefs)


@pytest.mark.parametrize("call, message", [
    (lambda b: integration.integrate(b, "poe", []), "empty subset"),
    (lambda b: integration.integrate(b, "moe", []), "empty subset"),
    (lambda b: integration.pmi(b, []), "empty subset"),
    (lambda b: integration.integrate(b, "poe", ["a", "zz"]), r"\['zz'\]"),
    (lambda b: integration.integrate(b, "moe", ["zz"]), r"\['zz'\]"),
    (lambda b: integration.pmi(b, ["zz"]), r"\['zz'\]"),
    (lambda b: integration.integrate(b, "sum"), "Unknown integration method 'sum'"),
])
def test_bad_subsets_and_methods_raise_clear_value_errors(call, message):
  beliefs = _random_beliefs(np.random.default_rng(10), batch=2, latent_dim=2)
  with pytest.raises(ValueError, match=message):
    call(beliefs)


def test_registered_methods_dispatch_and_names_cannot_be_taken_twice():
  from msnvi_tf.core import robust  # pylint: disable=g-import-not-at-top
  assert integration.INTEGRATIONS["robust"] is robust.robust
  beliefs = {"a": beliefs_lib.make_belief(tf.zeros([2, 3]), tf.ones([2, 3])),
             "b": beliefs_lib.make_belief(tf.ones([2, 3]), tf.ones([2, 3]))}

  def first(beliefs, sources):
    return beliefs[integration.check_subset(beliefs, sources)[0]]

  integration.register("first_source", first)
  try:
    integration.register("first_source", first)  # the same method again: fine
    assert integration.integrate(beliefs, "first_source", ["b", "a"]) is beliefs["b"]
    with pytest.raises(ValueError, match="already registered"):
      integration.register("poe", first)
  finally:
    del integration.INTEGRATIONS["first_source"]
  with pytest.raises(ValueError, match="Unknown integration method"):
    integration.integrate(beliefs, "first_source")
