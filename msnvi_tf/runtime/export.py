"""SavedModel export in the TF Serving layout, with named signatures.

`export(model, export_dir)` writes `<export_dir>/<version>/` (a SavedModel that
`tensorflow_model_server --model_base_path=<export_dir>` serves) with signatures:

  encode          sources -> `<source>_loc`, `<source>_scale` [B, Dz] per source
  integrate_poe   sources, present -> loc, scale [B, Dz]          (Eq. 3)
  integrate_moe   sources, present -> loc, scale [B, M, Dz], weights [B, M] (App. B)
  integrate_robust sources, present -> loc, scale [B, Dz], weights [B, M]
                  (conflict-aware PoE, `msnvi_tf.core.robust`)
  predict         sources, present -> one [B, ...] mean per target (Eq. 6)
  sensor_health   sources, present -> one [B, ...] mean per target from the
                  robust integration, and per source: weights [B, M], alarm
                  [B, M] (bool), score [B, M] (`msnvi_tf.core.robust`, Eqs. R2-R6)
  conflict        sources, present -> conflict [B, M, M]          (Eq. 2)
  log_likelihood  sources, targets, present -> log_likelihood [B]
  serving_default = predict

Every input is a float32 tensor named after the batch entry; `present` is a
`[B, M]` float32 mask over the model's sources (in `model.sources` order): an
absent source is sent as zeros with `present = 0` and is left out of the
integration (its expert becomes the prior). Conflict entries involving an
absent source are NaN, as is an absent source's score. The robust integration
and the alarms use the conflict thresholds stored with the model (calibrated on
healthy data by `MultiSourceVAE.calibrate_conflict`, else tau = 1). `predict`,
`sensor_health` and `log_likelihood` draw their latent samples with a fixed
seed (`msnvi_tf.core.estimators`' convention, as `MultiSourceVAE.predict_targets`
and `log_likelihood` with that seed), so the same request gives the same answer.
"""
import math
import os
import re
from typing import Dict

import tensorflow as tf

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import conflict as conflict_lib
from msnvi_tf.core import estimators
from msnvi_tf.core import integration
from msnvi_tf.core import robust

__all__ = ["ServingModule", "export", "SIGNATURES"]

SIGNATURES = ("encode", "integrate_poe", "integrate_moe", "integrate_robust",
              "predict", "sensor_health", "conflict", "log_likelihood")


def _safe(name):
  return re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)


class ServingModule(tf.Module):
  """Wraps a trained `MultiSourceVAE` in serving functions (see module docstring).

  Args:
    model: the trained model.
    num_samples: latent samples for `predict` and `log_likelihood`.
    seed: stateless seed of those samples.
  """

  # The Keras model is used by the functions but not saved as an object: the
  # SavedModel holds its raw tf.Variables, which TF1-style loaders (TF Serving,
  # `saved_model_cli run`) restore by name; Keras variable wrappers would be
  # saved as separate objects that those loaders do not connect to the graph.
  _TF_MODULE_IGNORED_PROPERTIES = (
      tf.Module._TF_MODULE_IGNORED_PROPERTIES | frozenset({"model"}))  # pylint: disable=protected-access

  def __init__(self, model, num_samples=100, seed=0):
    super().__init__(name="msnvi_serving")
    self.model = model
    self.model_variables = [v.value for v in model.variables]  # tf.Variables
    self.num_samples = int(num_samples)
    self.seed = int(seed)
    shapes = model.data_shapes()
    self.source_keys = sorted({k for keys in model.encoder_inputs.values() for k in keys})
    missing = [k for k in self.source_keys + model.targets if k not in shapes]
    if missing:
      raise ValueError(f"Cannot export: unknown per-example shape of {missing}.")
    self._specs = {k: tf.TensorSpec([None, *shapes[k]], tf.float32, name=_safe(k))
                   for k in set(self.source_keys) | set(model.targets)}
    self._present = tf.TensorSpec([None, len(model.sources)], tf.float32,
                                  name="present")

  # Core computations, shared by the signatures and by tests.
  def _stacked_beliefs(self, inputs):
    """`([M, B, Dz], [M, B, Dz])` beliefs of all sources."""
    return self.model._encode_stacked(inputs, self.model.sources)  # pylint: disable=protected-access

  def poe(self, inputs, present):
    loc, scale = self._stacked_beliefs(inputs)
    return integration.poe_stacked(loc, scale, tf.transpose(present))  # [B, Dz]

  def _predict(self, loc, scale):
    """Predictive means `{target: [B, ...]}` of the belief `(loc, scale)` (Eq. 6)."""
    z = estimators.draw(beliefs_lib.make_belief(loc, scale), self.num_samples,
                        estimators.as_seed(self.seed))  # [K, B, Dz]
    return {t: tf.reduce_mean(self.model.decoders[t].mean(z), 0)
            for t in self.model.targets}

  def predict(self, inputs, present):
    return self._predict(*self.poe(inputs, present))

  def sensor_health(self, inputs, present):
    """`(health, predictions)`: `robust.sensor_health` `[M, B]` and robust means."""
    loc, scale = self._stacked_beliefs(inputs)  # [M, B, Dz]
    health = robust.sensor_health(loc, scale, tf.transpose(present),
                                  tf.convert_to_tensor(self.model.conflict_thresholds))
    loc_rob, scale_rob = integration.poe_stacked(
        tf.cast(loc, tf.float32), tf.cast(scale, tf.float32), health["weight"])
    return health, self._predict(loc_rob, scale_rob)

  def log_likelihood(self, inputs, present):
    """ln (1/K) sum_k p(x, z_k) / q(z_k), z_k ~ q the PoE of the present sources.

    One chunk of K samples: with every source present, `model.log_likelihood(
    inputs, K, chunk_size=K, seed=seed)` (up to float error and the fused kernels).
    """
    q = beliefs_lib.make_belief(*self.poe(inputs, present))  # batch [B]
    return estimators.log_likelihood(
        q, lambda z: self.model.log_joint(inputs, z), self.num_samples,
        estimators.as_seed(self.seed), chunk_size=self.num_samples)

  def conflict(self, inputs, present):
    c = conflict_lib.conflict_stacked(*self._stacked_beliefs(inputs))  # [B, M, M]
    both = present[:, :, None] * present[:, None, :] > 0.  # [B, M, M]
    return tf.where(both, c, math.nan)

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """Concrete functions keyed by signature name."""
    out = {}
    for name, (fn, specs, masked) in self._signature_functions().items():
      specs = dict(specs, present=self._present) if masked else specs
      kwargs = {_safe(k): v for k, v in specs.items()}
      out[name] = tf.function(_checked_inputs(fn, specs)).get_concrete_function(**kwargs)
    out["serving_default"] = out["predict"]
    return out

  def _signature_functions(self):
    """`{signature: (fn, input specs, takes present)}` in `SIGNATURES` order."""
    model = self.model
    src = {k: self._specs[k] for k in self.source_keys}
    everything = dict(self._specs)

    def encode(**inputs):
      loc, scale = self._stacked_beliefs(inputs)
      out = {}
      for i, s in enumerate(model.sources):
        out[f"{_safe(s)}_loc"] = loc[i]
        out[f"{_safe(s)}_scale"] = scale[i]
      return out

    def integrate_poe(present, **inputs):
      loc, scale = self.poe(inputs, present)
      return {"loc": loc, "scale": scale}

    def integrate_moe(present, **inputs):
      loc, scale = self._stacked_beliefs(inputs)
      mask = present > 0.
      count = tf.reduce_sum(tf.cast(mask, tf.float32), -1, keepdims=True)
      weights = tf.where(mask, 1. / tf.maximum(count, 1.), 0.)  # [B, M]
      return {"loc": tf.transpose(loc, [1, 0, 2]),
              "scale": tf.transpose(scale, [1, 0, 2]), "weights": weights}

    def integrate_robust(present, **inputs):
      loc, scale = self._stacked_beliefs(inputs)
      loc_rob, scale_rob, weights = robust.robust_stacked(
          loc, scale, tf.transpose(present),
          tf.convert_to_tensor(model.conflict_thresholds))
      return {"loc": loc_rob, "scale": scale_rob, "weights": tf.transpose(weights)}

    def predict(present, **inputs):
      return {_safe(t): m for t, m in self.predict(inputs, present).items()}

    def sensor_health(present, **inputs):
      health, predictions = self.sensor_health(inputs, present)
      score = tf.where(present > 0., tf.transpose(health["score"]), math.nan)
      return {"weights": tf.transpose(health["weight"]),
              "alarm": tf.transpose(health["alarm"]), "score": score,
              **{_safe(t): m for t, m in predictions.items()}}

    def conflict(present, **inputs):
      return {"conflict": self.conflict(inputs, present)}

    def log_likelihood(present, **inputs):
      return {"log_likelihood": self.log_likelihood(inputs, present)}

    return {
        "encode": (encode, src, False),
        "integrate_poe": (integrate_poe, src, True),
        "integrate_moe": (integrate_moe, src, True),
        "integrate_robust": (integrate_robust, src, True),
        "predict": (predict, src, True),
        "sensor_health": (sensor_health, src, True),
        "conflict": (conflict, src, True),
        "log_likelihood": (log_likelihood, everything, True),
    }


def _checked_inputs(fn, specs):
  """Checks request shapes, then calls `fn` with the batch keys' original names.

  Placeholders of shape [None, ...] only fix the rank, so every request is
  checked: a wrong per-example shape, or a batch size that differs between the
  inputs, fails with a message naming the input and the shape it must have.

  Args:
    fn: `fn(**inputs)`, or `fn(present, **inputs)` when `specs` has "present".
    specs: `{batch key or "present": tf.TensorSpec}`.
  """
  names = {_safe(k): k for k in specs}

  def wrapped(**kwargs):
    inputs = {names[k]: v for k, v in kwargs.items()}
    batch = tf.shape(next(iter(inputs.values())))[0]
    checks = []
    for key, value in inputs.items():
      expected = specs[key].shape[1:].as_list()
      message = (f"input {key} must have shape [batch, "
                 f"{', '.join(map(str, expected))}], one batch for all inputs")
      checks.append(tf.debugging.assert_equal(
          tf.shape(value), tf.stack([batch, *expected]), message=message))
    # Every computation waits for the checks: a wrong shape fails with the
    # message above, never first inside a layer.
    with tf.control_dependencies([c for c in checks if c is not None]):
      inputs = {key: tf.identity(value) for key, value in inputs.items()}
    if "present" in inputs:
      return fn(inputs.pop("present"), **inputs)
    return fn(**inputs)

  return wrapped


def export(model, export_dir: str, version: int, num_samples: int = 100,
           seed: int = 0) -> str:
  """Writes the SavedModel to `<export_dir>/<version>/` and returns that path.

  An existing version directory is never overwritten.

  Raises:
    FileExistsError: `<export_dir>/<version>` exists.
  """
  path = os.path.join(export_dir, str(int(version)))
  if tf.io.gfile.exists(path):
    raise FileExistsError(
        f"Export {path} already exists; it was kept. Use another version or "
        "export_dir.")
  module = ServingModule(model, num_samples, seed)
  tmp = path + ".tmp"
  if tf.io.gfile.exists(tmp):
    tf.io.gfile.rmtree(tmp)
  tf.saved_model.save(module, tmp, signatures=module.signatures())
  tf.io.gfile.rename(tmp, path)
  return path
