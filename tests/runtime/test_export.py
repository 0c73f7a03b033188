"""The export describes itself, shows its spread, checks requests, serves Keras and TF
Serving, streams frames through the latent filter (filter_step); it holds no XLA
function and nothing half-written."""
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.core.protobuf import saved_model_pb2

from msnvi_tf import architectures
from msnvi_tf.core import estimators
from msnvi_tf.core import filtering
from msnvi_tf.core import robust
from msnvi_tf.data import mnist
from msnvi_tf.data import toy
from msnvi_tf.runtime import export as export_lib
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import make_mnist_config, make_toy_config

NUM_SAMPLES = 100
SEED = 3

# Run in a fresh process on the export (argv[1]); prints one JSON line.
FRESH_PROCESS = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras

path = sys.argv[1]
loaded = tf.saved_model.load(path)
out = {"signatures": sorted(loaded.signatures)}
def tensors(d): return {k: tf.constant(v, tf.float32) for k, v in d.items()}
def listed(d): return {k: v.numpy().tolist() for k, v in d.items()}
def request(name, rows, present):
  keys = loaded.signatures[name].structured_input_signature[1]
  r = {k: np.zeros([rows, *spec.shape[1:]], np.float32) for k, spec in keys.items()}
  if "present" in r: r["present"][:] = present
  return tensors(r)

out["metadata"] = loaded.signatures["metadata"](ignored=tf.constant(0.))["contract"]
out["metadata"] = out["metadata"].numpy().decode()
out["specs"] = {name: {k: [s.dtype.name, s.shape.as_list()] for k, s in
                       fn.structured_outputs.items()} for name, fn in loaded.signatures.items()}
# x = 0.7 alone (y absent), a row with both, a row with neither.
mixed = tensors({"x": [[0.7], [0.7], [0.7]], "y": [[0.], [0.7], [0.]],
                 "present": [[1., 0.], [1., 1.], [0., 0.]]})
out["served"] = {name: listed(loaded.signatures[name](**(
    {k: v for k, v in mixed.items() if k != "present"} if name == "encode" else mixed)))
    for name in ("encode", "integrate_poe", "integrate_moe", "integrate_robust", "predict",
                 "sensor_health", "conflict", "log_likelihood")}
out["alone"] = listed(loaded.signatures["predict"](
    **tensors({"x": [[0.7]], "y": [[0.]], "present": [[1., 0.]]})))
out["zero_rows"] = {name: {k: v.shape.as_list() for k, v in
                           loaded.signatures[name](**request(name, 0, 1.)).items()}
                    for name in out["served"]}
bad = {"present 0.5": {"present": [[0.5, 0.]]}, "present 2": {"present": [[2., 0.]]},
       "present -1": {"present": [[-1., 1.]]}, "present NaN": {"present": [[np.nan, 1.]]},
       "x inf": {"x": [[np.inf]]}, "y NaN": {"y": [[np.nan]]},
       "x shape": {"x": [[0.7, 0.1]]}}
out["errors"] = {}
for label, change in bad.items():
  r = tensors(dict({"x": [[0.7]], "y": [[0.]], "present": [[1., 1.]]}, **change))
  try:
    loaded.signatures["predict"](**r)
    out["errors"][label] = None
  except tf.errors.InvalidArgumentError as e:
    out["errors"][label] = e.message
layer = keras.layers.TFSMLayer(path, call_endpoint="predict")
out["keras_predict"] = listed(layer(dict(mixed)))
out["keras_default"] = listed(keras.layers.TFSMLayer(path)(dict(mixed)))
print(json.dumps(out))
"""


def toy_sequence(index, frames=30):
  """A toy sequence: x = y moving along 0.8 sin(0.15 t + index)."""
  x = (0.8 * np.sin(0.15 * np.arange(frames) + index)).astype(np.float32)[:, None]
  return {"x": x, "y": x.copy()}


@pytest.fixture(scope="module")
def model():
  """A toy model trained 400 steps (fast learning rate): x = 0.7 has y = +-0.7; with a
  latent filter fitted on toy sequences."""
  config = make_toy_config().override(["learning_rate=5e-3", "train_size=4096"])
  model = optimizers.compile_model(architectures.build_model(config), config)
  train, evaluation = toy.make_datasets(config)
  model.fit(train, steps_per_epoch=400, epochs=1, verbose=0, shuffle=False)
  model.calibrate_conflict(evaluation)
  model.calibrate_filter([toy_sequence(i) for i in range(4)],
                         [toy_sequence(4 + i) for i in range(4)])
  return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
  return export_lib.export(model, str(tmp_path_factory.mktemp("export")), 1,
                           NUM_SAMPLES, SEED)


@pytest.fixture(scope="module")
def fresh(exported):
  """What a fresh process gets from the export (`FRESH_PROCESS`)."""
  result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, exported],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_contract_is_an_asset_and_a_signature_that_names_mask_order_and_outputs(
    model, exported, fresh):
  with open(os.path.join(exported, "assets", export_lib.CONTRACT_FILE)) as f:
    contract = json.load(f)
  assert json.loads(fresh["metadata"]) == contract
  assert contract["sources"] == model.sources and contract["targets"] == model.targets
  assert contract["inputs"]["x"]["shape"] == [None, 1]
  assert contract["inputs"]["present"]["shape"] == [None, 2]
  assert (contract["num_samples"], contract["seed"]) == (NUM_SAMPLES, SEED)
  assert contract["chunk_rows"] == 200  # estimators.DEFAULT_ROWS / K
  assert contract["conflict_thresholds_calibrated"]
  np.testing.assert_array_equal(contract["conflict_thresholds"],
                                model.conflict_thresholds.numpy())
  np.testing.assert_array_equal(contract["filter"]["transition"]["matrix"],
                                model.transition_matrix.numpy())
  np.testing.assert_array_equal(contract["filter"]["prediction_thresholds"],
                                model.prediction_thresholds.numpy())
  assert contract["inputs"]["state_cov"]["shape"] == [None, 2, 2]
  assert sorted(fresh["signatures"]) == sorted(
      export_lib.SIGNATURES + export_lib.FILTER_SIGNATURES + ("serving_default",))
  # Every output the signatures return is in the contract, with its dtype and shape.
  for name, described in contract["signatures"].items():
    assert {k: [v["dtype"], v["shape"]] for k, v in described["outputs"].items()} == {
        k: [dtype, shape] for k, (dtype, shape) in fresh["specs"][name].items()}, name
    assert all(v["meaning"] for v in described["outputs"].values())


@pytest.mark.slow
def test_predict_keeps_its_mean_and_shows_the_two_modes_of_y_given_x(model, fresh):
  predict = fresh["alone"]  # x = 0.7, y absent
  x = {"x": np.array([[0.7]], np.float32)}
  mean = model.predict_targets(x, sources=["x"], num_samples=NUM_SAMPLES, seed=SEED)
  np.testing.assert_allclose(predict["y"][0], mean["y"][0], atol=1e-5)
  # The mean is between y = -0.7 and +0.7, where the data never is; the spread says so.
  assert predict["y_q05"][0][0] < -0.5 and predict["y_q95"][0][0] > 0.5
  assert predict["y_std"][0][0] > 0.4 > abs(predict["y"][0][0])
  assert predict["y_q05"][0] <= predict["y_q50"][0] <= predict["y_q95"][0]


@pytest.mark.slow
def test_no_output_is_nan_or_inf_absent_sources_are_flagged_and_no_source_marked(fresh):
  served = fresh["served"]
  for name, outputs in served.items():
    for key, value in outputs.items():
      assert np.all(np.isfinite(np.asarray(value, float))), (name, key)
    if name != "encode":
      assert outputs["no_source"] == [False, False, True], name
  health, conflict = served["sensor_health"], served["conflict"]
  assert health["valid"] == [[True, False], [True, True], [False, False]]
  assert health["score"][0][1] == 0. and not health["alarm"][0][1]
  assert health["weights"][0][1] == 0. and health["weights"][2] == [0., 0.]
  assert conflict["valid"][0] == [[True, False], [False, False]]
  assert conflict["conflict"][0][0][1] == 0. and conflict["conflict"][0][1][0] == 0.
  assert conflict["valid"][1] == [[True, True], [True, True]]
  # A row without a source is the prior's: N(0, I), MoE weights 0.
  np.testing.assert_allclose(served["integrate_poe"]["loc"][2], [0., 0.])
  np.testing.assert_allclose(served["integrate_poe"]["scale"][2], [1., 1.])
  assert served["integrate_moe"]["weights"][2] == [0., 0.]


@pytest.mark.slow
def test_bad_requests_are_invalid_argument_errors_naming_the_input(fresh):
  errors = fresh["errors"]
  for label in ("present 0.5", "present 2", "present -1", "present NaN"):
    assert "input present must be 0 (absent) or 1 (sent)" in errors[label], label
    assert "one column per source in the order (x, y)" in errors[label]
  assert "input x must be finite" in errors["x inf"]
  assert "input y must be finite" in errors["y NaN"]
  assert "input x must have shape [batch, 1]" in errors["x shape"]


@pytest.mark.slow
def test_zero_rows_get_zero_rows_back_from_every_signature(fresh):
  for name, shapes in fresh["zero_rows"].items():
    assert shapes and all(shape[0] == 0 for shape in shapes.values()), name
  assert fresh["zero_rows"]["predict"]["y_std"] == [0, 1]
  assert fresh["zero_rows"]["conflict"]["conflict"] == [0, 2, 2]


@pytest.mark.slow
def test_keras_tfsm_layer_gives_the_serving_signatures_answers(fresh):
  for keras_name in ("keras_predict", "keras_default"):  # call_endpoint="predict", "serve"
    assert fresh[keras_name].keys() == fresh["served"]["predict"].keys()
    for key, value in fresh[keras_name].items():
      np.testing.assert_array_equal(value, fresh["served"]["predict"][key], err_msg=key)


def test_a_long_request_is_answered_as_its_chunks_would_be(model):
  module = export_lib.ServingModule(model, num_samples=8, seed=1, chunk_rows=5)
  rng = np.random.default_rng(0)
  request = {"x": rng.uniform(-1, 1, [12, 1]).astype(np.float32),
             "y": rng.uniform(-1, 1, [12, 1]).astype(np.float32),
             "present": rng.integers(0, 2, [12, 2]).astype(np.float32)}
  for name in ("predict", "log_likelihood"):
    endpoint = module.endpoints()[name]
    whole = endpoint({k: tf.constant(v) for k, v in request.items()})
    parts = [endpoint({k: tf.constant(v[a:b]) for k, v in request.items()})
             for a, b in ((0, 5), (5, 10), (10, 12))]
    for key, value in whole.items():
      np.testing.assert_array_equal(value, np.concatenate([p[key] for p in parts]), key)
  # A chunk is the unchunked computation.
  first = {k: tf.constant(v[:5]) for k, v in request.items()}
  np.testing.assert_array_equal(module.endpoints()["predict"](first)["y"],
                                module.predict(first, first["present"])["y"])


@pytest.mark.slow
def test_saved_model_cli_fetches_the_contract(exported):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run(
      [cli, "run", "--dir", exported, "--tag_set", "serve", "--signature_def", "metadata",
       "--input_exprs", "ignored=0.0"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "Result for output key contract" in result.stdout
  assert '"sources": [' in result.stdout.replace("\\n", "\n")


def _xla_compiled_functions(graph_def):
  return [f.signature.name for f in graph_def.library.function
          if f.attr["_XlaMustCompile"].b]


@pytest.mark.slow
@pytest.mark.usefixtures("keras_seed")
def test_training_step_uses_fused_kernels_but_the_export_has_no_xla(tmp_path):
  # TF Serving's CPU build runs no XLA-compiled functions by default.
  config = make_mnist_config("mnist_tb")
  model = architectures.build_model(config)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  batch = next(iter(mnist.make_datasets(config)[0]))
  step = tf.function(model.train_step).get_concrete_function(batch)
  compiled = _xla_compiled_functions(step.graph.as_graph_def())
  assert any("bernoulli_value" in name for name in compiled)
  assert any("bernoulli_grad" in name for name in compiled)  # the backward pass too
  path = export_lib.export(model, str(tmp_path), version=1, num_samples=4)
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    saved.ParseFromString(f.read())
  graph = saved.meta_graphs[0]
  assert "log_likelihood" in graph.signature_def  # it runs the Bernoulli heads
  assert graph.graph_def.library.function
  assert not _xla_compiled_functions(graph.graph_def)


def test_an_export_that_fails_or_is_interrupted_leaves_nothing_half_written(
    tmp_path, monkeypatch):
  config = make_toy_config()
  model = optimizers.compile_model(architectures.build_model(config), config)
  # What is saved does not matter here: nothing is traced (seconds per export).
  monkeypatch.setattr(export_lib, "_SavedRoot", lambda module, contract_path: None)
  monkeypatch.setattr(export_lib.ServingModule, "signatures", lambda self: {})
  for error in (tf.errors.ResourceExhaustedError(None, None, "p; No space left on device"),
                KeyboardInterrupt()):
    def half_save(module, path, error=error, **kwargs):
      del module, kwargs
      os.makedirs(os.path.join(path, "variables"))
      open(os.path.join(path, "saved_model.pb"), "w").close()
      raise error

    monkeypatch.setattr(tf.saved_model, "save", half_save)
    with pytest.raises(type(error)):
      export_lib.export(model, str(tmp_path), 20)
    assert os.listdir(tmp_path) == []  # neither 20/ nor 20.tmp/


# The latent filter served: filter_init, filter_step.
@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported)


def _state(rows, seed):
  """Random filtered beliefs: loc `[rows, 2]`, cov `[rows, 2, 2]` positive definite,
  and trends `[rows, M = 2, 2]`, row 0's first source's far out."""
  rng = np.random.default_rng(seed)
  factor = rng.normal(0., 0.3, (rows, 2, 2))
  cov = factor @ factor.transpose(0, 2, 1) + 0.01 * np.eye(2)
  trend = rng.normal(0., 0.3, (rows, 2, 2))
  trend[0, 0] = 3.
  return {"state_loc": tf.constant(rng.normal(0., 1., (rows, 2)), tf.float32),
          "state_cov": tf.constant(cov, tf.float32),
          "state_trend": tf.constant(trend, tf.float32)}


def _frames(rows, seed):
  rng = np.random.default_rng(seed)
  return {k: tf.constant(rng.uniform(-1., 1., (rows, 1)), tf.float32) for k in ("x", "y")}


def test_filter_step_is_the_core_filters_predict_and_update_with_the_robust_weights(
    model, loaded):
  state, frames = _state(6, 0), _frames(6, 1)
  present = tf.constant([[1., 1.]] * 4 + [[1., 0.], [0., 1.]])
  out = loaded.signatures["filter_step"](present=present, **frames, **state)
  # The same frame through msnvi_tf.core: predict, conflicts, weights, update.
  loc, scale = model.encode_stacked(frames, model.sources)  # [M, B, Dz]
  mask = tf.transpose(present)
  pred_loc, pred_cov = filtering.predict(state["state_loc"], state["state_cov"],
                                         model.transition)
  health = filtering.prediction_weights(
      filtering.prediction_conflict(pred_loc, pred_cov, loc, scale),
      model.prediction_thresholds, mask)
  frame_weights = robust.robust_weights(loc, scale, mask, model.conflict_thresholds)
  weight = tf.minimum(health["weight"], frame_weights)
  # The trend test: the others' update leaves out sources flagged before.
  trend = tf.transpose(state["state_trend"], [1, 0, 2])  # [M, B, Dz]
  flagged = filtering.trend_scores(trend, model.trend_thresholds) > 1.
  trend = filtering.trend_update(trend, filtering.trend_innovations(
      pred_loc, pred_cov, loc, scale, tf.where(flagged, 0., weight)), mask)
  trend_score = filtering.trend_scores(trend, model.trend_thresholds)
  by_trend = filtering.prediction_weights(trend_score[None], tf.ones([1, 2]), mask)
  weight = tf.minimum(weight, by_trend["weight"])
  new_loc, new_cov = filtering.update(pred_loc, pred_cov, loc, scale, weight)
  close = lambda a, b, key: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                                        err_msg=key)
  close(out["predicted_loc"], pred_loc, "predicted_loc")
  close(out["predicted_cov"], pred_cov, "predicted_cov")
  close(out["state_loc"], new_loc, "state_loc")
  close(out["state_cov"], new_cov, "state_cov")
  close(out["weights"], tf.transpose(weight), "weights")
  close(out["score"], tf.transpose(health["score"]), "score")
  close(out["state_trend"], tf.transpose(trend, [1, 0, 2]), "state_trend")
  close(out["trend_score"], tf.where(present > 0., tf.transpose(trend_score), 0.),
        "trend_score")
  np.testing.assert_array_equal(out["alarm"], tf.transpose(health["alarm"]
                                                           | by_trend["alarm"]))
  assert out["trend_score"].numpy()[0, 0] > 1. and not out["alarm"].numpy().all()
  # Frames far from confident predictions: muted and flagged, while others agree.
  assert tf.transpose(health["alarm"]).numpy().any()
  assert 0. < out["weights"].numpy()[present.numpy() > 0.].min() < 1.
  assert not out["start"].numpy().any() and not out["no_source"].numpy().any()
  # The prediction of y is from the filtered belief with its full covariance.
  means, _ = estimators.predictive_mean(
      tfp.distributions.MultivariateNormalTriL(new_loc, tf.linalg.cholesky(new_cov)),
      model.decoders, NUM_SAMPLES, estimators.as_seed(SEED))
  close(out["y"], means["y"], "y")
  assert np.all(out["y_q05"].numpy() <= out["y_q95"].numpy())


def test_streaming_frames_through_filter_step_is_the_robust_filter_of_the_sequence(
    model, exported, loaded):
  step = keras.layers.TFSMLayer(exported, call_endpoint="filter_step")  # Keras's way
  frames = 8
  sequence = [toy_sequence(10), toy_sequence(11)]  # two streams side by side
  x = {k: np.stack([s[k][:frames] for s in sequence], 1) for k in ("x", "y")}  # [T, 2, 1]
  x["x"][5, 0] = -x["x"][5, 0] + 0.5  # a frame that contradicts the motion
  present = np.ones((frames, 2, 2), np.float32)  # [T, B, M]
  present[3, 0, 1] = present[4, 1, 0] = 0.  # y absent in stream 0, x in stream 1
  present[7, 1] = 0.  # no source in stream 1 (last: see below)
  state = loaded.signatures["filter_init"](present=tf.constant(present[0]))  # TF Serving's
  for value in state.values():
    np.testing.assert_array_equal(value, 0.)
  served = []
  for t in range(frames):
    out = step({"present": present[t], "x": x["x"][t], "y": x["y"][t], **state})
    state = {k: out[k] for k in export_lib.STATE_INPUTS}
    served.append(out)
  # The whole sequence through msnvi_tf.core.
  loc, scale = zip(*[model.encode_stacked({k: v[t] for k, v in x.items()}, model.sources)
                     for t in range(frames)])
  loc, scale = tf.stack(loc), tf.stack(scale)  # [T, M, B, Dz]
  mask = np.transpose(present, [0, 2, 1])  # [T, M, B]
  frame_weights = tf.stack([robust.robust_weights(loc[t], scale[t], mask[t],
                                                  model.conflict_thresholds)
                            for t in range(frames)])
  (f_loc, f_cov), (p_loc, p_cov), health = filtering.robust_filter_sequence(
      loc, scale, model.transition, model.prediction_thresholds, mask,
      frame_weights=frame_weights, trend_thresholds=model.trend_thresholds)
  # Without a message filter_step returns the prediction itself, which
  # robust_filter_sequence rounds through its update (relative error up to 1e-3
  # with this model's nearly singular Q): compared on the last frame, it does
  # not propagate.
  silent = present.sum(-1) == 0.  # [T, B]
  f_loc = tf.where(silent[..., None], p_loc, f_loc)
  f_cov = tf.where(silent[..., None, None], p_cov, f_cov)
  for t, out in enumerate(served):
    for key, value in (("state_loc", f_loc[t]), ("state_cov", f_cov[t]),
                       ("predicted_loc", p_loc[t]), ("predicted_cov", p_cov[t]),
                       ("weights", tf.transpose(health["weight"][t])),
                       ("trend_score", tf.transpose(health["trend_score"][t])),
                       ("state_trend", tf.transpose(health["trend"][t], [1, 0, 2]))):
      np.testing.assert_allclose(out[key], value, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{key}, frame {t}")
    np.testing.assert_array_equal(out["alarm"], tf.transpose(health["alarm"][t]))
    np.testing.assert_array_equal(out["start"], [t == 0] * 2)
    np.testing.assert_array_equal(out["no_source"], [False, t == 7])
  assert served[5]["alarm"].numpy()[0, 0]  # the contradicting frame is flagged


def test_a_row_without_sources_is_the_prediction_and_a_zero_state_starts_the_stream(
    model, loaded):
  state = _state(3, 2)
  zero = tf.zeros([2, 2])
  state = {"state_loc": state["state_loc"], "state_trend": state["state_trend"],
           "state_cov": tf.stack([state["state_cov"][0], zero, zero])}
  present = tf.constant([[0., 0.], [0., 0.], [1., 1.]])
  out = loaded.signatures["filter_step"](present=present, **_frames(3, 3), **state)
  np.testing.assert_array_equal(out["no_source"], [True, True, False])
  np.testing.assert_array_equal(out["start"], [False, True, True])
  pred_loc, pred_cov = filtering.predict(state["state_loc"][:1], state["state_cov"][:1],
                                         model.transition)
  np.testing.assert_allclose(out["predicted_loc"][0], pred_loc[0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(out["predicted_cov"][0], pred_cov[0], rtol=1e-6, atol=1e-7)
  # No source: the new state is the prediction itself, no weight, no alarm.
  for key in ("loc", "cov"):
    np.testing.assert_array_equal(out[f"state_{key}"][:2], out[f"predicted_{key}"][:2])
  np.testing.assert_array_equal(out["weights"][:2], 0.)
  assert not out["alarm"].numpy().any()
  # A zero state is the start: the prior N(0, I), then the frame's robust PoE.
  np.testing.assert_array_equal(out["predicted_loc"][1:], 0.)
  np.testing.assert_array_equal(out["predicted_cov"][1:], [np.eye(2)] * 2)
  np.testing.assert_array_equal(out["state_cov"][1], np.eye(2))
  np.testing.assert_array_equal(out["score"][2], 0.)
  robust_loc, _, _ = robust.robust_stacked(
      *model.encode_stacked({k: v[2:] for k, v in _frames(3, 3).items()}, model.sources),
      None, model.conflict_thresholds)
  np.testing.assert_allclose(out["state_loc"][2:], robust_loc, rtol=1e-5, atol=1e-6)


def test_bad_filter_requests_are_invalid_argument_errors_naming_the_input(loaded):
  good = {"present": tf.ones([1, 2]), **_frames(1, 4), **_state(1, 5)}
  bad = {
      "input state_cov must have shape [batch, 2, 2]": {"state_cov": tf.eye(3)[None]},
      "input state_loc must have shape [batch, 2]": {"state_loc": tf.zeros([2, 2])},
      "input state_trend must have shape [batch, 2, 2]": {"state_trend": tf.zeros([1, 3, 2])},
      "input state_cov must hold covariances": {
          "state_cov": tf.constant([[[1., 0.5], [0., 1.]]])},  # not symmetric
      "input state_cov must hold covariances: symmetric positive semi-definite": {
          "state_cov": tf.constant([[[1., 2.], [2., 1.]]])},  # an eigenvalue -1
      "input state_cov must be finite": {"state_cov": tf.constant([[[np.nan, 0.], [0., 1.]]])},
      "input present must be 0 (absent) or 1 (sent)": {"present": tf.constant([[0.5, 1.]])},
      "input x must be finite": {"x": tf.constant([[np.nan]])},
  }
  for message, change in bad.items():
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
      loaded.signatures["filter_step"](**{**good, **change})
  loaded.signatures["filter_step"](**good)  # the good request passes
