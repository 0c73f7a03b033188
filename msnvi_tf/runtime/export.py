"""SavedModel export in the TF Serving layout: named signatures, Keras endpoints, a contract.

`export(model, export_dir, version)` writes `<export_dir>/<version>/`, a SavedModel
that `tensorflow_model_server --model_base_path=<export_dir>` serves (named
signatures, keyword inputs: `loaded.signatures[name](**inputs)`, `saved_model_cli
run`) and that Keras 3 reloads as a layer (`keras.layers.TFSMLayer(path,
call_endpoint=name)`: endpoints of the same names taking one dict of inputs;
`serve`, Keras's default endpoint, is `predict`). Signatures:

  encode           sources -> `<s>_loc`, `<s>_scale` [B, Dz] per source s
  integrate_poe    sources, present -> loc, scale [B, Dz]                (Eq. 3)
  integrate_moe    sources, present -> loc, scale [B, M, Dz], weights [B, M] (App. B)
  integrate_robust sources, present -> loc, scale [B, Dz], weights [B, M]
                   (conflict-aware PoE, `msnvi_tf.core.robust`)
  predict          sources, present -> per target t, over the K latent samples
                   z_k of the PoE: the mean `<t>` of E[t | z_k] (Eq. 6), its
                   spread `<t>_std` and quantiles `<t>_q05`, `<t>_q50`, `<t>_q95`
  sensor_health    sources, present -> per source weights, alarm (bool), score,
                   valid (bool) [B, M] (`robust.sensor_health_stacked`, Eqs.
                   R2-R6), and predict's outputs from the robust integration
  conflict         sources, present -> conflict, valid (bool) [B, M, M]  (Eq. 2)
  log_likelihood   sources, targets, present -> log_likelihood [B]
  metadata         ignored -> contract: the JSON contract (a string)
  serving_default = predict

and, for a model with a latent filter (`MultiSourceVAE.transition`: fitted in
training for a data set with sequences, `msnvi_tf.core.filtering`):

  filter_init      present -> state_loc [B, Dz], state_cov [B, Dz, Dz],
                   state_trend [B, M, Dz]: zeros, the state of streams before
                   their first frame
  filter_step      state_loc, state_cov, state_trend, sources, present -> the
                   new state (state_loc, state_cov: the filtered belief
                   N(loc, cov) of this frame; state_trend: the trend test's
                   d), predicted_loc, predicted_cov (the prediction it was
                   updated from), per source weights, alarm (bool), score and
                   trend_score [B, M], predict's outputs from the filtered
                   belief, start (bool) [B], no_source [B]

`filter_step` is one frame of `filtering.robust_filter_sequence` with the
per-frame robust weights (`filtering.robust_filter_step`): the prediction
N(A mu + b, A P A^T + Q) of the state is updated by the present sources'
messages, each weighted by the smallest of its prediction-conflict weight (the
model's `prediction_thresholds`), its trend-test weight (`trend_thresholds`;
`filtering`'s module docstring) and its per-frame robust weight (its
`conflict_thresholds`); `score` is the conflict with the prediction,
`trend_score` the trend test's, `alarm` either above 1. A client streams frames
by passing each answer's `state_loc`, `state_cov` and `state_trend` back with
the next frame. A row whose `state_cov` is all zero
(`filter_init`'s) starts its stream: its prediction is the prior N(0, I) and
its sources get no prediction-conflict weight, so its first frame is the
robust PoE (`state_loc` is ignored there); zero a row's state to restart it.
A row with no source present is the prediction alone (`no_source`).

Inputs are float32 tensors named after the batch entries, plus `present`, a
`[B, M]` mask with one column per source in the order of the contract's
`sources` (`model.sources`): 1 where the source is sent, 0 where it is absent
(send zeros; its expert becomes the prior). Every signature with `present` also
returns `no_source` [B] (bool): true where no source is present, and that row is
answered from the prior p(z) = N(0, I) alone (PoE and robust loc 0, scale 1,
MoE weights 0, predictions of the prior, zero scores and conflicts, no alarm).

The contract (`contract()`: source and target names in mask order, input
shapes, K, seed, chunk size, quantiles, the conflict thresholds, every output's
dtype, shape and meaning) is `assets/contract.json` and the `metadata` signature
(whose `ignored` input exists because TF Serving's REST API refuses a signature
without inputs; `loaded.metadata()` takes none).

Requests are checked: a wrong shape, a batch size that differs between inputs,
a NaN or infinite input, a `present` entry other than 0 or 1, or a `state_cov`
that is not a covariance (symmetric positive semi-definite, up to rounding) is
answered with an InvalidArgument error naming the input. No output is NaN or
infinite: the scores and conflicts of an absent source are 0 with `valid` false (its MoE
weight is 0), and an infinite value (a conflict with a belief equal to the
prior) is the largest float32. A batch
of 0 rows gets 0 rows back. Requests run in chunks of `chunk_rows` rows, one at
a time, so memory stays bounded: a request of at most `chunk_rows` rows is
computed at once, a longer one as its chunks would be one by one. `predict`,
`sensor_health` and `log_likelihood` draw their K latent samples with a fixed
seed (`msnvi_tf.core.estimators`' convention: the predictions are
`estimators.predictive_mean`, as `MultiSourceVAE.predict_targets`, and
`log_likelihood` is `estimators.log_likelihood`, both with that seed), so the
same request gives the same answer.
The robust integration and the alarms use the conflict thresholds stored with
the model (calibrated on healthy data by `MultiSourceVAE.calibrate_conflict`,
else tau = 1).
"""
import contextlib
import json
import os
import re
from typing import Dict

import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import conflict as conflict_lib
from msnvi_tf.core import estimators
from msnvi_tf.core import filtering
from msnvi_tf.core import integration
from msnvi_tf.core import robust

__all__ = ["ServingModule", "export", "SIGNATURES", "FILTER_SIGNATURES", "STATE_INPUTS",
           "QUANTILES", "CONTRACT_FILE"]

tfd = tfp.distributions

SIGNATURES = ("encode", "integrate_poe", "integrate_moe", "integrate_robust",
              "predict", "sensor_health", "conflict", "log_likelihood", "metadata")
# Also exported for a model with a latent filter (`model.transition`).
FILTER_SIGNATURES = ("filter_init", "filter_step")
STATE_INPUTS = ("state_loc", "state_cov", "state_trend")  # filter_step's state, in and out
QUANTILES = (0.05, 0.5, 0.95)  # of the predictive outputs `<t>_q05`, `<t>_q50`, `<t>_q95`
CONTRACT_FILE = "contract.json"  # in the SavedModel's assets/


def _safe(name):
  return re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)


def _quantile_name(target, q):
  return f"{_safe(target)}_q{round(100 * q):02d}"


def _unique(pairs, what):
  """`dict(pairs)`, refusing a name given twice (safe names of two batch keys may collide)."""
  out = {}
  for name, value in pairs:
    if name in out:
      raise ValueError(f"Cannot export: two {what} would be named {name!r}.")
    out[name] = value
  return out


class ServingModule:
  """Wraps a trained `MultiSourceVAE` in serving functions (see module docstring).

  Args:
    model: the trained model.
    num_samples: K, latent samples of `predict`, `sensor_health` and `log_likelihood`.
    seed: stateless seed of those samples.
    chunk_rows: rows per chunk of a request (default: `estimators.DEFAULT_ROWS`
      / K, so a chunk runs the decoders on about that many rows).
  """

  def __init__(self, model, num_samples=100, seed=0, chunk_rows=None):
    self.model = model
    self.model_variables = [v.value for v in model.variables]  # tf.Variables
    self.num_samples = int(num_samples)
    self.seed = int(seed)
    self.chunk_rows = int(chunk_rows or max(1, estimators.DEFAULT_ROWS // self.num_samples))
    if self.num_samples < 1 or self.chunk_rows < 1:
      raise ValueError(f"Cannot export: num_samples and chunk_rows must be >= 1; got "
                       f"{self.num_samples}, {self.chunk_rows}.")
    shapes = model.data_shapes()
    self.source_keys = sorted({k for keys in model.encoder_inputs.values() for k in keys})
    missing = [k for k in self.source_keys + model.targets if k not in shapes]
    if missing:
      raise ValueError(f"Cannot export: unknown per-example shape of {missing}.")
    # The latent filter, if the model has one: filter_init and filter_step.
    self.has_filter = model.transition is not None
    dim = model.latent_dim
    state = [("state_loc", tf.TensorSpec([None, dim], tf.float32, name="state_loc")),
             ("state_cov", tf.TensorSpec([None, dim, dim], tf.float32, name="state_cov")),
             ("state_trend", tf.TensorSpec([None, len(model.sources), dim], tf.float32,
                                           name="state_trend"))]
    self._specs = _unique(
        [(k, tf.TensorSpec([None, *shapes[k]], tf.float32, name=_safe(k)))
         for k in sorted(set(self.source_keys) | set(model.targets))]
        + [("present", tf.TensorSpec([None, len(model.sources)], tf.float32,
                                     name="present"))]
        + (state if self.has_filter else []), "inputs")
    _unique([(_safe(k), k) for k in self._specs], "inputs")
    self._outputs = self.outputs()  # checks that output names do not collide
    self._endpoints = None

  # Core computations, shared by the signatures and by tests.
  def _stacked_beliefs(self, inputs):
    """`([M, B, Dz], [M, B, Dz])` beliefs of all sources."""
    return self.model.encode_stacked(inputs, self.model.sources)

  def poe(self, inputs, present):
    """`(loc, scale)` `[B, Dz]` of the PoE of the present sources (Eq. 3)."""
    loc, scale = self._stacked_beliefs(inputs)
    return integration.poe_stacked(loc, scale, tf.transpose(present))  # [B, Dz]

  def robust(self, inputs, present):
    """`robust.robust_stacked` of the present sources with the model's thresholds.

    Returns:
      `(loc, scale, health)`: the robust belief `[B, Dz]` (Eq. R1) and the
      sources' "score", "alarm" and "weight" `[M, B]` (Eqs. R2-R6).
    """
    loc, scale = self._stacked_beliefs(inputs)  # [M, B, Dz]
    return robust.robust_stacked(loc, scale, tf.transpose(present),
                                 tf.convert_to_tensor(self.model.conflict_thresholds))

  def _predictive_mean(self, loc, scale):
    """`estimators.predictive_mean` of every target from N(loc, scale) `[B, Dz]` (Eq. 6)."""
    return self._predictive_of(beliefs_lib.make_belief(loc, scale))

  def _predictive_of(self, belief):
    """`estimators.predictive_mean` of every target from `belief` (batch `[B]`, Eq. 6)."""
    return estimators.predictive_mean(  # [B, ...], [K, B, ...]
        belief, self.model.decoders, self.num_samples, estimators.as_seed(self.seed))

  def predict(self, inputs, present, method="poe"):
    """Predictive means `{target: [B, ...]}` of the present sources (Eq. 6).

    `method`: "poe" (the `predict` signature) or "robust" (`sensor_health`'s).
    """
    if method not in ("poe", "robust"):
      raise ValueError(f"Unknown method {method!r}; the export predicts from 'poe' or "
                       "'robust'.")
    belief = self.poe(inputs, present) if method == "poe" else self.robust(
        inputs, present)[:2]
    return self._predictive_mean(*belief)[0]

  def filter_step(self, inputs, present, state_loc, state_cov, state_trend):
    """One frame of the robust latent filter (module docstring): `robust_filter_step`.

    Args:
      inputs: the frame's batch `{key: [B, ...]}`.
      present: `[B, M]` presence.
      state_loc, state_cov: `[B, Dz]`, `[B, Dz, Dz]` the filtered belief of each
        stream's previous frame; a row of zero `state_cov` starts its stream.
      state_trend: `[B, M, Dz]` the trend test's d of each stream's previous frame.

    Returns:
      `(filtered, predicted, health, start)`: `(loc, cov)` twice, the sources'
      "score", "trend_score", "weight", "alarm" `[M, B]` and "trend"
      `[M, B, Dz]`, and the starting rows `[B]` bool.
    """
    model = self.model
    mask = tf.transpose(present)  # [M, B]
    loc, scale = self._stacked_beliefs(inputs)  # [M, B, Dz]
    frame_weights = robust.robust_weights(
        loc, scale, mask, tf.convert_to_tensor(model.conflict_thresholds))  # [M, B]
    transition = filtering.Transition(*(tf.convert_to_tensor(v) for v in (
        model.transition_matrix, model.transition_offset, model.transition_noise_cov)))
    start = tf.reduce_all(state_cov == 0., [-2, -1])  # [B]
    filtered, predicted, health = filtering.robust_filter_step(
        state_loc, state_cov, loc, scale, transition,
        tf.convert_to_tensor(model.prediction_thresholds), mask, robust.SHARPNESS,
        frame_weights, start, tf.transpose(state_trend, [1, 0, 2]),
        tf.convert_to_tensor(model.trend_thresholds))
    return filtered, predicted, health, start

  def log_likelihood(self, inputs, present):
    """ln (1/K) sum_k p(x, z_k) / q(z_k), z_k ~ q the PoE of the present sources.

    One chunk of K samples: with every source present, `model.log_likelihood(
    inputs, K, chunk_size=K, seed=seed)` (up to float error and the fused kernels).
    """
    q = beliefs_lib.make_belief(*self.poe(inputs, present))  # batch [B]
    return estimators.log_likelihood(
        q, lambda z: self.model.log_joint(inputs, z), self.num_samples,
        estimators.as_seed(self.seed), chunk_size=self.num_samples)

  # What the export answers.
  def outputs(self):
    """`{signature: {output: (dtype, shape, meaning)}}`, None for the batch axis."""
    model = self.model
    m, dz = len(model.sources), model.latent_dim
    no_source = ("bool", [None], "true where present is all 0: the row is answered "
                 "from the prior p(z) = N(0, I) alone (PoE and robust loc 0, scale 1, "
                 "MoE weights 0, predictions of the prior, no alarm)")
    valid = ("bool", [None, m], "present > 0: the source's entries mean something")

    def predictive(belief):
      pairs = []
      for t in model.targets:
        shape = [None, *self._specs[t].shape[1:]]
        pairs += [(_safe(t), ("float32", shape, f"predictive mean of {t} (Eq. 6): the "
                              f"mean of E[{t} | z_k] over K samples z_k of {belief}")),
                  (f"{_safe(t)}_std", ("float32", shape, f"standard deviation of those "
                                       f"E[{t} | z_k]: the spread of the prediction"))]
        pairs += [(_quantile_name(t, q), ("float32", shape, f"{q:g} quantile of those "
                                          f"E[{t} | z_k]")) for q in QUANTILES]
      return pairs

    encode = []
    for s in model.sources:
      encode += [(f"{_safe(s)}_loc", ("float32", [None, dz], f"mean of q(z | {s})")),
                 (f"{_safe(s)}_scale", ("float32", [None, dz], f"std of q(z | {s})"))]
    weights = ("float32", [None, m], "robust weight w_m in [0, 1] of each source "
               "(Eq. R5); 0 where absent")
    table = {
        "encode": encode,
        "integrate_poe": [
            ("loc", ("float32", [None, dz], "mean of the PoE of the present sources")),
            ("scale", ("float32", [None, dz], "std of that PoE")),
            ("no_source", no_source)],
        "integrate_moe": [
            ("loc", ("float32", [None, m, dz], "mean of every source's belief (from "
                     "what was sent, also where absent)")),
            ("scale", ("float32", [None, m, dz], "std of every source's belief")),
            ("weights", ("float32", [None, m], "mixture weight of each source: "
                         "1 / (number present) where present, 0 where absent")),
            ("no_source", no_source)],
        "integrate_robust": [
            ("loc", ("float32", [None, dz], "mean of the robust PoE (Eq. R1)")),
            ("scale", ("float32", [None, dz], "std of the robust PoE")),
            ("weights", weights), ("no_source", no_source)],
        "predict": predictive("the PoE of the present sources") + [
            ("no_source", no_source)],
        "sensor_health": [
            ("weights", weights),
            ("alarm", ("bool", [None, m], "true where the source disagrees with every "
                       "other present source beyond its thresholds (Eq. R6)")),
            ("score", ("float32", [None, m], "conflict score s_m (Eq. R3), > 1 raises "
                       "the alarm; 0 where absent")),
            ("valid", valid)] + predictive("the robust PoE") + [
                ("no_source", no_source)],
        "conflict": [
            ("conflict", ("float32", [None, m, m], "[b, i, j] = c(source i || source "
                          "j) (Eq. 2); 0 where either is absent")),
            ("valid", ("bool", [None, m, m], "true where both sources are present")),
            ("no_source", no_source)],
        "log_likelihood": [
            ("log_likelihood", ("float32", [None], "ln p(targets), importance-weighted "
                                "estimate with K samples of the PoE of the present "
                                "sources (nats)")),
            ("no_source", no_source)],
        "metadata": [("contract", ("string", [], "this contract as JSON"))],
    }
    if self.has_filter:
      state = [("state_loc", ("float32", [None, dz], "mean of the filtered belief of "
                              "this frame: the state to send with the next frame")),
               ("state_cov", ("float32", [None, dz, dz], "covariance of the filtered "
                              "belief: the state to send with the next frame")),
               ("state_trend", ("float32", [None, m, dz], "the trend test's exponential "
                                "average of each source's whitened innovation: the "
                                "state to send with the next frame"))]
      table["filter_init"] = [
          (name, (dtype, shape, "zeros: the state of a stream before its first frame"))
          for name, (dtype, shape, _) in state]
      table["filter_step"] = state + [
          ("predicted_loc", ("float32", [None, dz], "mean of the prediction the frame "
                             "updated: N(A mu + b, A P A^T + Q) of the state, the prior "
                             "N(0, I) where the stream starts")),
          ("predicted_cov", ("float32", [None, dz, dz], "covariance of that prediction")),
          ("weights", ("float32", [None, m], "message weight of each source in [0, 1]: "
                       "the smallest of its prediction-conflict weight, its trend-test "
                       "weight and its per-frame robust weight (Eq. R5); 0 where absent")),
          ("alarm", ("bool", [None, m], "true where the source conflicts with the "
                     "prediction beyond its prediction thresholds (score > 1) or its "
                     "trend passes its trend threshold (trend_score > 1); never where "
                     "the stream starts or the source is absent")),
          ("score", ("float32", [None, m], "conflict score with the prediction, "
                     "max over both directions of c / tau; 0 where absent or starting")),
          ("trend_score", ("float32", [None, m], "trend-test score g / tau (a bias that "
                           "lasts over frames); 0 where absent, starting or untested")),
      ] + predictive("the filtered belief (full covariance)") + [
          ("start", ("bool", [None], "true where state_cov was all zero: the stream "
                     "starts here, from the prior N(0, I), without prediction weights")),
          ("no_source", ("bool", [None], "true where present is all 0: the filtered "
                         "belief is the prediction alone"))]
    return {name: _unique(pairs, f"outputs of {name}") for name, pairs in table.items()}

  def _inputs(self, name):
    """Batch keys (and "present") of signature `name`, in the order of its contract."""
    if name == "encode":
      return list(self.source_keys)
    if name == "log_likelihood":
      return sorted(set(self.source_keys) | set(self.model.targets)) + ["present"]
    if name == "filter_init":
      return ["present"]
    if name == "filter_step":
      return list(self.source_keys) + ["present"] + list(STATE_INPUTS)
    return list(self.source_keys) + ["present"]

  def contract(self) -> dict:
    """What the export answers and how, as JSON-ready data (module docstring)."""
    model = self.model
    sources = model.sources
    inputs = {}
    for key, spec in self._specs.items():
      if key == "present":
        meaning = (f"exactly 0 or 1 per source, columns in the order of sources "
                   f"{sources}: 1 = sent, 0 = absent (send zeros)")
        if self.has_filter:
          meaning += "; filter_init reads its number of rows only"
      elif key == "state_loc":
        meaning = ("filter_step: mean of the previous frame's filtered belief (its "
                   "state_loc; ignored where state_cov is all zero)")
      elif key == "state_cov":
        meaning = ("filter_step: covariance of the previous frame's filtered belief (its "
                   "state_cov), symmetric positive (semi-)definite; all zero where a "
                   "stream starts (filter_init)")
      elif key == "state_trend":
        meaning = ("filter_step: the trend test's state of the previous frame (its "
                   f"state_trend), one row per source in the order of {sources}; "
                   "ignored where state_cov is all zero")
      else:
        readers = [s for s, keys in model.encoder_inputs.items() if key in keys]
        meaning = "; ".join(
            ([f"read by source(s) {readers}"] if readers else [])
            + (["a target (log_likelihood's input)"] if key in model.targets else []))
      inputs[_safe(key)] = {"batch_key": None if key in STATE_INPUTS else key,
                            "dtype": "float32", "shape": spec.shape.as_list(),
                            "meaning": meaning}
    return {
        "format": "msnvi_tf export contract, version 1",
        "sources": sources,
        "targets": model.targets,
        "latent_dim": model.latent_dim,
        "num_samples": self.num_samples,
        "seed": self.seed,
        "chunk_rows": self.chunk_rows,
        "quantiles": list(QUANTILES),
        "conflict_thresholds": tf.convert_to_tensor(
            model.conflict_thresholds).numpy().tolist(),
        "conflict_thresholds_calibrated": model.conflict_calibrated,
        "robust_sharpness": robust.SHARPNESS,
        "filter": self._filter_contract(),
        "inputs": inputs,
        "signatures": {
            name: {"inputs": ([_safe(k) for k in self._inputs(name)]
                              if name != "metadata" else ["ignored"]),
                   "outputs": {out: {"dtype": dtype, "shape": shape, "meaning": meaning}
                               for out, (dtype, shape, meaning) in outputs.items()}}
            for name, outputs in self._outputs.items()},
        "serving_default": "predict",
        "errors": ("InvalidArgument naming the input: a wrong shape, batch sizes that "
                   "differ, a NaN or infinite input, present not 0 or 1, state_cov "
                   "not symmetric positive semi-definite"),
        "no_nan": ("scores and conflicts of an absent source are 0 with valid false; "
                   "an infinite value saturates at the largest float32"),
        "chunks": (f"requests run {self.chunk_rows} rows at a time; a longer request is "
                   "answered as its chunks would be one by one"),
    }

  def _filter_contract(self):
    """The latent filter's part of the contract (None: no filter_step)."""
    if not self.has_filter:
      return None
    model = self.model
    listed = lambda v: tf.convert_to_tensor(v).numpy().tolist()
    return {
        "transition": {"matrix": listed(model.transition_matrix),
                       "offset": listed(model.transition_offset),
                       "noise_cov": listed(model.transition_noise_cov),
                       "meaning": "z_t = A z_{t-1} + b + N(0, Q): matrix A, offset b, "
                                  "noise_cov Q (full covariances)"},
        "prediction_thresholds": listed(model.prediction_thresholds),
        "prediction_sharpness": robust.SHARPNESS,
        "trend_thresholds": listed(model.trend_thresholds),
        "trend_rate": filtering.TREND_RATE,
        "start_state": ("state_loc, state_cov and state_trend all zero (filter_init): "
                        "the stream starts from the prior N(0, I)"),
        "weights": ("min(prediction-conflict weight with prediction_thresholds [2, M], "
                    "trend-test weight with trend_thresholds [M] (0: no test), "
                    "per-frame robust weight with conflict_thresholds)"),
    }

  def contract_json(self) -> str:
    """`contract()` as the JSON text of `assets/contract.json` and `metadata`."""
    return json.dumps(self.contract(), indent=1)

  def _serving_functions(self):
    """`{signature: fn}`, fn mapping `{batch key or "present": [n, ...]}` to its outputs."""
    model = self.model

    def encode(inputs):
      loc, scale = self._stacked_beliefs(inputs)  # [M, n, Dz]
      out = {}
      for i, s in enumerate(model.sources):
        out[f"{_safe(s)}_loc"] = loc[i]
        out[f"{_safe(s)}_scale"] = scale[i]
      return out

    def integrate_poe(inputs):
      loc, scale = self.poe(inputs, inputs["present"])
      return {"loc": loc, "scale": scale, "no_source": _no_source(inputs["present"])}

    def integrate_moe(inputs):
      loc, scale = self._stacked_beliefs(inputs)  # [M, n, Dz]
      mask = inputs["present"] > 0.  # [n, M]
      count = tf.reduce_sum(tf.cast(mask, tf.float32), -1, keepdims=True)
      weights = tf.where(mask, 1. / tf.maximum(count, 1.), 0.)  # [n, M]
      return {"loc": tf.transpose(loc, [1, 0, 2]),
              "scale": tf.transpose(scale, [1, 0, 2]), "weights": weights,
              "no_source": _no_source(inputs["present"])}

    def integrate_robust(inputs):
      loc, scale, health = self.robust(inputs, inputs["present"])
      return {"loc": loc, "scale": scale, "weights": tf.transpose(health["weight"]),
              "no_source": _no_source(inputs["present"])}

    def predict(inputs):
      predictive = self._predictive_mean(*self.poe(inputs, inputs["present"]))
      return {**_predictive(*predictive), "no_source": _no_source(inputs["present"])}

    def sensor_health(inputs):
      loc, scale, health = self.robust(inputs, inputs["present"])
      valid = inputs["present"] > 0.  # [n, M]
      return {"weights": tf.transpose(health["weight"]),
              "alarm": tf.transpose(health["alarm"]),
              "score": tf.where(valid, tf.transpose(health["score"]), 0.),
              "valid": valid, **_predictive(*self._predictive_mean(loc, scale)),
              "no_source": _no_source(inputs["present"])}

    def conflict(inputs):
      present = inputs["present"] > 0.  # [n, M]
      valid = present[:, :, None] & present[:, None, :]  # [n, M, M]
      c = conflict_lib.conflict_stacked(*self._stacked_beliefs(inputs))  # [n, M, M]
      return {"conflict": tf.where(valid, c, 0.), "valid": valid,
              "no_source": _no_source(inputs["present"])}

    def log_likelihood(inputs):
      return {"log_likelihood": self.log_likelihood(inputs, inputs["present"]),
              "no_source": _no_source(inputs["present"])}

    def filter_init(inputs):
      rows = tf.shape(inputs["present"])[0]
      dim = model.latent_dim
      return {"state_loc": tf.zeros([rows, dim]), "state_cov": tf.zeros([rows, dim, dim]),
              "state_trend": tf.zeros([rows, len(model.sources), dim])}

    def filter_step(inputs):
      present = inputs["present"]  # [n, M]
      (loc, cov), (pred_loc, pred_cov), health, start = self.filter_step(
          inputs, present, inputs["state_loc"], inputs["state_cov"], inputs["state_trend"])
      belief = tfd.MultivariateNormalTriL(loc, tf.linalg.cholesky(cov))
      # Scores are 0 where a source is absent (filtering's weights zero them).
      return {"state_loc": loc, "state_cov": cov,
              "state_trend": tf.transpose(health["trend"], [1, 0, 2]),
              "predicted_loc": pred_loc,
              "predicted_cov": pred_cov, "weights": tf.transpose(health["weight"]),
              "alarm": tf.transpose(health["alarm"]),
              "score": tf.transpose(health["score"]),
              "trend_score": tf.transpose(health["trend_score"]),
              **_predictive(*self._predictive_of(belief)), "start": start,
              "no_source": _no_source(present)}

    functions = {"encode": encode, "integrate_poe": integrate_poe,
                 "integrate_moe": integrate_moe, "integrate_robust": integrate_robust,
                 "predict": predict, "sensor_health": sensor_health, "conflict": conflict,
                 "log_likelihood": log_likelihood}
    if self.has_filter:
      functions.update(filter_init=filter_init, filter_step=filter_step)
    return functions

  def endpoints(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """`{signature: function of one dict {input name: tensor}}` (Keras `TFSMLayer`).

    Traced once: the signatures call them, so the SavedModel holds each graph once.
    """
    if self._endpoints is None:
      self._endpoints = {}
      for name, fn in self._serving_functions().items():
        specs = {k: self._specs[k] for k in self._inputs(name)}
        self._endpoints[name] = tf.function(
            _served(fn, specs, self.model.sources, self.chunk_rows)).get_concrete_function(
                {_safe(k): spec for k, spec in specs.items()})
      text = self.contract_json()
      self._endpoints["metadata"] = tf.function(
          lambda: {"contract": tf.constant(text)}).get_concrete_function()
    return self._endpoints

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """Concrete functions with keyword inputs (TF Serving), keyed by signature name."""
    endpoints = dict(self.endpoints())
    metadata = endpoints.pop("metadata")
    out = {name: tf.function(_keyword_call(endpoint)).get_concrete_function(
        **endpoint.structured_input_signature[0][0])
           for name, endpoint in endpoints.items()}
    # An input that is not used: TF Serving's REST API refuses a signature without.
    out["metadata"] = tf.function(lambda ignored: metadata()).get_concrete_function(
        ignored=tf.TensorSpec(None, tf.float32, name="ignored"))
    out["serving_default"] = out["predict"]
    return out


def _keyword_call(endpoint):
  """`endpoint(dict)` as a function of keyword arguments (a signature's inputs)."""
  def call(**request):
    return endpoint(request)
  return call


def _no_source(present):
  """`[B]` bool: no source present."""
  return tf.reduce_all(present == 0., -1)


def _predictive(means, terms):
  """Outputs of a prediction: `{output: [B, ...]}`.

  Args:
    means: `{target: [B, ...]}` predictive means (`estimators.predictive_mean`).
    terms: `{target: [K, B, ...]}` the E[x_t | z_k] they average; their std and
      `QUANTILES` over K are the spread.
  """
  out = {}
  for t, m in terms.items():
    out[_safe(t)] = means[t]
    out[f"{_safe(t)}_std"] = tf.math.reduce_std(m, 0)
    quantiles = tfp.stats.percentile(m, [100. * q for q in QUANTILES], axis=0,
                                     interpolation="linear")  # [Q, B, ...]
    for q, value in zip(QUANTILES, tf.unstack(quantiles)):
      out[_quantile_name(t, q)] = tf.ensure_shape(value, m.shape[1:])
  return out


def _served(fn, specs, sources, rows):
  """`fn` as a request handler: checked inputs, chunks of `rows` rows, finite outputs.

  Args:
    fn: `{batch key or "present": [n, ...]}` -> `{output: [n, ...]}`, row by row.
    specs: `{batch key or "present": tf.TensorSpec}` of the request.
    sources: the columns of `present` (named in its error message).
    rows: rows per chunk.

  Returns:
    A function of `{input name: tensor}` (the specs' names) -> `{output: [B, ...]}`.
  """
  names = {_safe(k): k for k in specs}

  def served(request):
    inputs = _checked({names[k]: v for k, v in request.items()}, specs, sources)
    return {k: _finite(v) for k, v in _in_chunks(fn, inputs, rows).items()}

  return served


def _checked(inputs, specs, sources):
  """`inputs` once their shapes, values and masks are checked.

  Placeholders of shape [None, ...] only fix the rank, so every request is
  checked: a wrong per-example shape, a batch size that differs between the
  inputs, a NaN or infinite value, or a `present` entry other than 0 or 1 fails
  with an InvalidArgument error whose message names the input.

  Args:
    inputs: `{batch key or "present": [B, ...]}`.
    specs: `{batch key or "present": tf.TensorSpec}`.
    sources: the columns of `present`.
  """
  batch = tf.shape(next(iter(inputs.values())))[0]
  checks = []
  for key, value in inputs.items():
    expected = specs[key].shape[1:].as_list()
    message = (f"input {key} must have shape [batch, "
               f"{', '.join(map(str, expected))}], one batch for all inputs")
    checks.append(tf.debugging.assert_equal(
        tf.shape(value), tf.stack([batch, *expected]), message=message))
    if key == "present":
      condition = tf.reduce_all((value == 0.) | (value == 1.))
      message = (f"input present must be 0 (absent) or 1 (sent) in every entry, one "
                 f"column per source in the order ({', '.join(sources)})")
    else:
      condition = tf.reduce_all(tf.math.is_finite(value))
      message = (f"input {key} must be finite (no NaN or inf); send an absent "
                 "source as zeros with present = 0")
    checks.append(tf.debugging.Assert(condition, [message]))
    if key == "state_cov":
      checks.append(tf.debugging.Assert(_covariances(value, expected), [
          "input state_cov must hold covariances: symmetric positive semi-definite "
          "(the state_cov filter_step returned), all zero where a stream starts "
          "(filter_init)"]))
  # Every computation waits for the checks: a bad request fails with the
  # messages above, never first inside a layer.
  with tf.control_dependencies([c for c in checks if c is not None]):
    return {key: tf.identity(value) for key, value in inputs.items()}


def _covariances(value, shape):
  """Scalar bool: every `[Dz, Dz]` matrix of `value` is symmetric positive
  semi-definite, up to float32 rounding (True when `value` is not `[B] + shape`:
  the shape check reports that). The filter adds Q to the state's A P A^T, so a
  singular state is fine; a negative eigenvalue is not a covariance."""
  value = tf.where(tf.math.is_finite(value), value, 0.)  # the finite check reports those

  def check():
    transposed = tf.linalg.matrix_transpose(value)
    symmetric = tf.reduce_all(
        tf.abs(value - transposed) <= 1e-5 * (tf.abs(value) + tf.abs(transposed)))
    eigenvalues = tf.linalg.eigvalsh(0.5 * (value + transposed))  # [B, Dz]
    rounding = 1e-5 * tf.reduce_max(tf.abs(eigenvalues), -1)  # [B]
    return symmetric & tf.reduce_all(tf.reduce_min(eigenvalues, -1) >= -rounding)

  fits = tf.reduce_all(tf.equal(tf.shape(tf.shape(value)), 1 + len(shape)))
  fits = tf.cond(fits, lambda: tf.reduce_all(tf.equal(tf.shape(value)[1:], shape)),
                 lambda: tf.constant(False))
  return tf.cond(fits, check, lambda: tf.constant(True))


def _in_chunks(fn, inputs, rows):
  """`fn(inputs)` on consecutive chunks of `rows` rows, one at a time, concatenated.

  A request of at most `rows` rows is one call of `fn`. A request of 0 rows runs
  `fn` on one row of zeros (TFP's sampler fails on an empty batch) and returns
  none of it.

  Args:
    fn: `{key: [n, ...]}` -> `{output: [n, ...]}`, row by row.
    inputs: `{key: [B, ...]}`.
    rows: rows per chunk.

  Returns:
    `{output: [B, ...]}`.
  """
  batch = tf.shape(next(iter(inputs.values())))[0]
  inputs = {k: tf.cond(batch > 0, lambda v=v: v,
                       lambda v=v: tf.zeros(tf.concat([[1], tf.shape(v)[1:]], 0), v.dtype))
            for k, v in inputs.items()}
  chunk_fn = tf.function(fn).get_concrete_function(
      {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype) for k, v in inputs.items()})
  num_chunks = (tf.maximum(batch, 1) + rows - 1) // rows
  arrays = {k: tf.TensorArray(t.dtype, size=num_chunks, infer_shape=False,
                              element_shape=tf.TensorShape([None]).concatenate(t.shape[1:]))
            for k, t in chunk_fn.structured_outputs.items()}

  def body(i, arrays):
    chunk = chunk_fn({k: v[i * rows:(i + 1) * rows] for k, v in inputs.items()})
    return i + 1, {k: a.write(i, chunk[k]) for k, a in arrays.items()}

  # One chunk at a time: running them in parallel would multiply the memory.
  _, arrays = tf.while_loop(lambda i, _: i < num_chunks, body, (0, arrays),
                            parallel_iterations=1)
  return {k: a.concat()[:batch] for k, a in arrays.items()}


def _finite(value):
  """`value` with +-inf saturated at the largest finite numbers of its dtype."""
  if not value.dtype.is_floating:
    return value
  return tf.clip_by_value(value, value.dtype.min, value.dtype.max)


class _SavedRoot(tf.Module):
  """What the SavedModel holds: the model's tf.Variables, the endpoints, the contract.

  The Keras model is used by the functions but not saved as an object: the
  SavedModel holds its raw tf.Variables, which TF1-style loaders (TF Serving,
  `saved_model_cli run`) restore by name; Keras variable wrappers would be
  saved as separate objects that those loaders do not connect to the graph.

  Args:
    module: the `ServingModule`.
    contract_path: the file holding `module.contract_json()`, in assets/.
  """

  def __init__(self, module, contract_path):
    super().__init__(name="msnvi_serving")
    self.model_variables = module.model_variables
    self.contract_file = tf.saved_model.Asset(contract_path)
    for name, endpoint in module.endpoints().items():
      setattr(self, name, endpoint)
    self.serve = module.endpoints()["predict"]  # TFSMLayer's default call_endpoint


def export(model, export_dir: str, version: int, num_samples: int = 100,
           seed: int = 0, chunk_rows=None) -> str:
  """Writes the SavedModel to `<export_dir>/<version>/` and returns that path.

  An existing version directory is never overwritten. The SavedModel is written
  to `<version>.tmp/` and renamed when complete, so a server never sees half of
  one; a write that fails (a full disk) or is interrupted (Ctrl-C) removes what
  it wrote before the error goes on (a kill leaves it to the next export).

  Args:
    model: the trained `MultiSourceVAE`.
    export_dir: the directory of versions (TF Serving's `--model_base_path`).
    version: the version number (training: the step).
    num_samples, seed, chunk_rows: see `ServingModule`.

  Raises:
    FileExistsError: `<export_dir>/<version>` exists.
  """
  path = os.path.join(export_dir, str(int(version)))
  if tf.io.gfile.exists(path):
    raise FileExistsError(
        f"Export {path} already exists; it was kept. Use another version or "
        "export_dir.")
  module = ServingModule(model, num_samples, seed, chunk_rows)
  tmp = path + ".tmp"
  if tf.io.gfile.exists(tmp):
    tf.io.gfile.rmtree(tmp)
  try:
    # Written where the SavedModel keeps its assets (so the save does not copy it).
    contract_path = os.path.join(tmp, "assets", CONTRACT_FILE)
    tf.io.gfile.makedirs(os.path.dirname(contract_path))
    with tf.io.gfile.GFile(contract_path, "w") as f:
      f.write(module.contract_json())
    tf.saved_model.save(_SavedRoot(module, contract_path), tmp,
                        signatures=module.signatures())
    tf.io.gfile.rename(tmp, path)
  except BaseException:
    with contextlib.suppress(tf.errors.OpError):  # the write's error is the one to report
      if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    raise
  return path
