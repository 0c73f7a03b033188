"""MultiSourceVAE on the toy architecture: training steps, gradients, errors, tools."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import objectives
from msnvi_tf.architectures import toy
from msnvi_tf.data import toy as toy_data

BATCH = 16


def _compiled_model(config, *overrides):
  model = toy.build_model(config.override(list(overrides)))
  model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
  model.optimizer.build(model.trainable_variables)
  return model


def _batch(size=BATCH, seed=0):
  return toy_data.sample(size, seed)[0]


def _values(variables):
  return [np.array(v.numpy()) for v in variables]


@pytest.mark.smoke
def test_train_step_changes_every_trainable_weight(toy_config):
  model = _compiled_model(toy_config)
  kernels = [v.path for v in model.trainable_variables if v.path.endswith("kernel")]
  assert {path.split("/")[0] for path in kernels} == {
      "encoder_x", "encoder_y", "decoder_x", "decoder_y"}
  before = _values(model.trainable_variables)
  model.train_step(_batch())
  for variable, old in zip(model.trainable_variables, before):
    assert np.all(variable.numpy() != old), f"{variable.path} not (fully) updated"


def test_test_step_changes_no_weight(toy_config):
  model = _compiled_model(toy_config)
  before = _values(model.weights)
  logs = model.test_step(_batch())
  assert set(objectives.INTEGRATED_BOUNDS) <= set(logs)
  for variable, old in zip(model.weights, before):
    np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)


@pytest.mark.parametrize("objective", ["ind", "moe", "poe", "hybrid", "iwae"])
def test_loss_gradients_are_finite_for_every_objective(objective, toy_config):
  model = _compiled_model(toy_config, f"objective={objective}")
  x = _batch()
  with tf.GradientTape() as tape:
    bound, _ = model._bounds(x, 4, training=True)  # pylint: disable=protected-access
    loss = -tf.reduce_mean(bound)
  grads = tape.gradient(loss, model.trainable_variables)
  assert np.isfinite(loss.numpy())
  for variable, grad in zip(model.trainable_variables, grads):
    assert grad is not None, f"{objective}: no gradient for {variable.path}"
    assert np.all(np.isfinite(grad.numpy())), f"{objective}: {variable.path}"


def test_poe_bound_of_subset_without_y_has_zero_gradient_for_encoder_y(toy_config):
  model = _compiled_model(toy_config)
  x = _batch()
  enc_x = model.encoders["x"].trainable_variables
  enc_y = model.encoders["y"].trainable_variables
  with tf.GradientTape() as tape:
    beliefs = model.encode(x)  # runs both encoders
    loc, scale = beliefs_lib.stack_beliefs(beliefs, ["x"])
    bound = objectives.importance_bounds(
        loc, scale, lambda z: model.log_joint(x, z), 8, ("poe",),
        normal=model.rng.normal)["poe"]
    loss = -tf.reduce_mean(bound)
  grads_x, grads_y = tape.gradient(
      loss, [enc_x, enc_y], unconnected_gradients=tf.UnconnectedGradients.ZERO)
  for variable, grad in zip(enc_y, grads_y):
    np.testing.assert_array_equal(grad.numpy(), 0., err_msg=variable.path)
  for variable, grad in zip(enc_x, grads_x):
    assert np.any(grad.numpy() != 0.), variable.path


def test_batch_missing_a_source_raises_key_error_naming_it(toy_config):
  model = _compiled_model(toy_config)
  x = {"x": _batch()["x"]}
  for call in (model.test_step, model.train_step, lambda x: model.encode(x, ["x", "y"])):
    with pytest.raises(KeyError, match=r"missing \['y'\]"):
      call(x)


def test_wrong_shape_raises_value_error_naming_entry_and_expected_shape(toy_config):
  model = _compiled_model(toy_config)
  x = _batch()
  x["x"] = np.concatenate([x["x"], x["x"]], -1)  # [B, 2], expected [B, 1]
  with pytest.raises(ValueError, match=r"'x'.*\(2,\).*expected \(1,\)"):
    model.test_step(x)
  with pytest.raises(ValueError, match=r"'x'.*expected \(1,\)"):
    model.encode(x)


def test_unknown_objective_raises_value_error_at_construction(toy_config):
  with pytest.raises(ValueError, match="Unknown objective 'elbo'"):
    toy.build_model(toy_config.override(["objective=elbo"]))


def test_empty_subset_raises_value_error(toy_config):
  model = _compiled_model(toy_config)
  x = _batch()
  with pytest.raises(ValueError, match="[Ee]mpty subset"):
    model.encode(x, [])
  with pytest.raises(ValueError, match="[Ee]mpty subset"):
    model.integrate(model.encode(x), "poe", [])


@pytest.mark.parametrize("method", ["test_step", "train_step", "encode", "predict_targets"])
def test_non_dict_batch_raises_type_error(method, toy_config):
  model = _compiled_model(toy_config)
  x = np.zeros((BATCH, 1), np.float32)
  for batch in (x, tf.constant(x)):
    with pytest.raises(TypeError, match="must be a dict"):
      getattr(model, method)(batch)


def test_paper_tools_return_documented_shapes(toy_config):
  model = _compiled_model(toy_config)
  x = _batch()
  dz = toy_config.latent_dim
  means = model.predict_targets(x, num_samples=5)
  shapes = {k: tuple(v.shape) for k, v in means.items()}
  assert shapes == {"x": (BATCH, 1), "y": (BATCH, 1)}
  means, samples = model.predict_targets({"x": x["x"]}, targets=["y"], method="moe",
                                         num_samples=5, return_samples=True)
  assert tuple(means["y"].shape) == (BATCH, 1) and set(means) == {"y"}
  assert tuple(samples["y"].shape) == (5, BATCH, 1)
  assert tuple(model.conflict(x).shape) == (BATCH, 2, 2)
  assert tuple(model.pmi(x).shape) == (BATCH,)
  # Keras's own predict works as in Keras: `call`'s belief parameters per example.
  params = model.predict(tf.data.Dataset.from_tensor_slices(x).batch(3), verbose=0)
  loc, scale = model.encode_stacked(x, model.sources)
  for i, s in enumerate(model.sources):
    np.testing.assert_allclose(params[s][0], loc[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params[s][1], scale[i], rtol=1e-5, atol=1e-6)
  proposals, resampled = model.sir(x, num_samples=7, num_resamples=3)
  assert tuple(proposals.shape) == (7, BATCH, dz)
  assert tuple(resampled.shape) == (3, BATCH, dz)
  log_px = model.log_likelihood(x, num_samples=30, chunk_size=8)
  assert tuple(log_px.shape) == (BATCH,) and np.all(np.isfinite(log_px))


def test_large_k_log_likelihood_is_at_least_k16_poe_bound(toy_config):
  model = _compiled_model(toy_config, "eval_num_samples=16", "decoder_init_scale=1.0")
  x = _batch(32, seed=1)
  for _ in range(4):  # the metric averages the four draws
    logs = model.test_step(x)
  log_px = model.log_likelihood(x, num_samples=2000, chunk_size=500)
  assert float(tf.reduce_mean(log_px)) >= float(logs["poe"]) - 0.05


def test_log_likelihood_agrees_across_chunk_sizes(toy_config):
  model = _compiled_model(toy_config, "decoder_init_scale=1.0")
  x = _batch(32, seed=2)
  estimates = []
  for chunk_size in (500, 2000):
    tf.random.set_seed(7)
    estimates.append(model.log_likelihood(x, num_samples=2000, chunk_size=chunk_size))
  diff = (estimates[0] - estimates[1]).numpy()
  assert abs(diff.mean()) <= 4. * diff.std() / np.sqrt(diff.size) + 0.02, diff


@pytest.mark.parametrize("method", ["poe", "moe"])
def test_seeded_predict_sir_and_log_likelihood_repeat_exactly(method, toy_config):
  model = _compiled_model(toy_config)
  x = _batch()
  runs = {}
  for seed in (3, 3, 4):
    tf.random.set_seed(seed * 11)  # the global RNG must not matter
    _, samples = model.predict_targets(x, method=method, num_samples=5, return_samples=True,
                               seed=seed)
    proposals, resampled = model.sir(x, method=method, num_samples=6, seed=seed)
    log_px = model.log_likelihood(x, num_samples=20, chunk_size=8, method=method,
                                  seed=seed)
    runs.setdefault(seed, []).append(
        [samples["y"].numpy(), proposals.numpy(), resampled.numpy(), log_px.numpy()])
  for same, other in zip(runs[3][0], runs[3][1]):
    np.testing.assert_array_equal(same, other)
  for same, other in zip(runs[3][0], runs[4][0]):
    assert not np.array_equal(same, other)
