"""`MultiSourceVAE`: one encoder per source, one decoder per target, one latent z.

The model owns the encoders q_m(z | x_m) and decoders p(x_t | z) as dicts keyed
by name, trains any objective of `msnvi_tf.core.objectives` in a custom `train_step`,
evaluates the ind / MoE / PoE bounds in `test_step` (the Table 1 grid), and
offers the post-training operations of the paper: encoding and integrating any
subset of sources, prediction (Eq. 6), conflict (Eq. 2), PMI (App. D), SIR
(App. E) and a chunked large-K log-likelihood estimate; and beyond the paper, the
robust integration with conflict thresholds calibrated on healthy data
(`calibrate_conflict`, `sensor_health`; `msnvi_tf.core.robust`, `msnvi_tf.core.calibration`).

Batches are dicts `{name: [B, ...] tensor}` holding the sources the encoders read
and the targets the decoders model (often the same names).
"""
import math
from typing import Dict, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import calibration
from msnvi_tf.core import conflict as conflict_lib
from msnvi_tf.core import integration
from msnvi_tf.core import likelihoods
from msnvi_tf.core import objectives
from msnvi_tf.core import robust

tfd = tfp.distributions

__all__ = ["MultiSourceVAE", "LOG_LIKELIHOOD_ROWS"]

# Default decoder rows (samples x examples) per chunk of `log_likelihood`. On the
# MNIST-TB decoders the speed is flat from about 5k to 50k rows (the elementwise
# passes, not the matmuls, limit it; bench/step_time.py), and memory grows
# linearly with the rows.
LOG_LIKELIHOOD_ROWS = 20_000


def _stateless_seed(seed: Optional[int]):
  """An integer seed as a stateless `[2]` seed (TFP's `sample(seed=...)`), or None."""
  return None if seed is None else tf.constant([seed, 0], tf.int32)


class MultiSourceVAE(keras.Model):
  """Multi-source VAE of Kurle et al. (2019).

  Args:
    encoders: `{source: beliefs.Encoder}`. The belief of an encoder is keyed by
      its name.
    decoders: `{target: likelihoods.Decoder}`.
    latent_dim: Dz.
    objective: training objective, a key of `objectives.OBJECTIVES`.
    num_samples: K, importance samples per proposal in training.
    eval_num_samples: K in `test_step` (default: `num_samples`).
    hybrid_weight: lambda of Eq. (5).
    encoder_inputs: optional `{encoder: [batch keys]}` for encoders that read
      something other than the batch entry of their own name; several keys are
      concatenated along the last axis (the IWAE's hard-wired encoder).
    seed: seed of the model's sampling generator.
    source_shapes: optional `{batch key: per-example shape}` of inputs that no
      single-source encoder or decoder declares (the IWAE's concatenated
      sources), used to check batches and to export.
  """

  def __init__(self, encoders: Mapping[str, keras.Model],
               decoders: Mapping[str, keras.Model], latent_dim: int,
               objective: str = "ind", num_samples: int = 8,
               eval_num_samples: Optional[int] = None, hybrid_weight: float = 0.5,
               encoder_inputs: Optional[Mapping[str, Sequence[str]]] = None,
               seed: int = 0,
               source_shapes: Optional[Mapping[str, Sequence[int]]] = None,
               **kwargs):
    super().__init__(**kwargs)
    objectives.check_objective(objective)
    if not encoders or not decoders:
      raise ValueError("MultiSourceVAE needs at least one encoder and one decoder.")
    if objective == "iwae" and len(encoders) != 1:
      raise ValueError(
          "objective='iwae' trains a single encoder (hard-wired or single-source); "
          f"got {len(encoders)} encoders {sorted(encoders)}.")
    self.encoders = dict(encoders)
    self.decoders = dict(decoders)
    self.latent_dim = int(latent_dim)
    self.objective = objective
    self.num_samples = int(num_samples)
    self.eval_num_samples = int(eval_num_samples or num_samples)
    self.hybrid_weight = float(hybrid_weight)
    encoder_inputs = dict(encoder_inputs or {})
    self.encoder_inputs = {
        name: tuple(encoder_inputs.get(name, (name,))) for name in self.encoders}
    self._extra_shapes = {k: tuple(v) for k, v in (source_shapes or {}).items()}
    self.rng = tf.random.Generator.from_seed(seed)  # Training samples.
    # Evaluation draws from its own stream, so evaluating never changes training.
    self._eval_seed = seed + 1
    self.eval_rng = tf.random.Generator.from_seed(self._eval_seed)
    self._trackers = {
        name: keras.metrics.Mean(name=name)
        for name in ("loss", "bound") + objectives.INTEGRATED_BOUNDS}
    # Thresholds tau_mm' of the robust integration (msnvi_tf.core.robust, Eq. R2),
    # rows and columns in `sources` order: ones (tau = 1) until
    # `calibrate_conflict`; checkpointed and exported with the weights.
    self.conflict_thresholds = self.add_weight(
        shape=(len(self.encoders),) * 2, initializer="ones", trainable=False,
        dtype="float32", name="conflict_thresholds")
    self.built = True

  # ---------------------------------------------------------------- names
  @property
  def sources(self):
    """Names of the beliefs (encoders), in order."""
    return list(self.encoders)

  @property
  def targets(self):
    """Names of the observations the generative model predicts, in order."""
    return list(self.decoders)

  def data_shapes(self) -> Dict[str, tuple]:
    """Expected per-example shape of every batch entry the model reads."""
    shapes = dict(self._extra_shapes)
    shapes.update({t: tuple(d.event_shape) for t, d in self.decoders.items()})
    for name, keys in self.encoder_inputs.items():
      if len(keys) == 1:
        shapes[keys[0]] = tuple(self.encoders[name].source_shape)
    return shapes

  def _check_is_dict(self, x):
    if not isinstance(x, Mapping):
      keys = sorted(set(self.data_shapes()) | {
          k for keys in self.encoder_inputs.values() for k in keys})
      raise TypeError(
          f"A batch must be a dict {{name: tensor}} with keys from {keys}; "
          f"got {type(x).__name__}.")

  def _check_batch(self, x, keys):
    """Clear errors for missing entries and wrong shapes (at trace time)."""
    self._check_is_dict(x)
    missing = [k for k in keys if k not in x]
    if missing:
      raise KeyError(
          f"Batch is missing {missing}; it has {sorted(x)}, the model needs "
          f"{sorted(keys)}.")
    shapes = self.data_shapes()
    for k in keys:
      if k not in shapes:
        continue
      got = tuple(tf.TensorShape(x[k].shape).as_list()[1:])
      if len(got) != len(shapes[k]) or any(
          g is not None and g != e for g, e in zip(got, shapes[k])):
        raise ValueError(
            f"Batch entry {k!r} has per-example shape {got}, expected "
            f"{shapes[k]} (full shape [batch, {', '.join(map(str, shapes[k]))}]).")

  def _available_sources(self, x, sources):
    self._check_is_dict(x)
    if sources is None:
      sources = [s for s, keys in self.encoder_inputs.items()
                 if all(k in x for k in keys)]
      if not sources:
        raise KeyError(
            f"The batch holds none of the sources {self.sources} (it has "
            f"{sorted(x)}).")
    sources = list(sources)
    if not sources:
      raise ValueError(f"Empty subset of sources; name some of {self.sources}.")
    unknown = [s for s in sources if s not in self.encoders]
    if unknown:
      raise ValueError(f"Unknown source(s) {unknown}; the model has {self.sources}.")
    self._check_batch(x, sorted({k for s in sources for k in self.encoder_inputs[s]}))
    return sources

  # ------------------------------------------------------------ inference
  def _encoder_input(self, x, source):
    keys = self.encoder_inputs[source]
    if len(keys) == 1:
      return x[keys[0]]
    return tf.concat([tf.cast(x[k], self.compute_dtype) for k in keys], -1)

  def _encode_stacked(self, x, sources, training=False):
    """Belief parameters `([M, B, Dz], [M, B, Dz])` of `sources`."""
    params = [self.encoders[s](self._encoder_input(x, s), training=training)
              for s in sources]
    return tf.stack([p[0] for p in params]), tf.stack([p[1] for p in params])

  def call(self, x, training=False):
    """Belief parameters of every source present: `{source: (loc, scale)}`."""
    sources = self._available_sources(x, None)
    return {s: self.encoders[s](self._encoder_input(x, s), training=training)
            for s in sources}

  def encode(self, x, sources: Optional[Sequence[str]] = None):
    """Beliefs q_m(z | x_m) of `sources` (default: all present in `x`).

    Returns:
      `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`.
    """
    sources = self._available_sources(x, sources)
    loc, scale = self._encode_stacked(x, sources)
    return {s: beliefs_lib.make_belief(loc[i], scale[i]) for i, s in enumerate(sources)}

  def integrate(self, beliefs, method: str = "poe",
                sources: Optional[Sequence[str]] = None):
    """Integrated belief of a subset of `beliefs` (see `integration.integrate`).

    `method="robust"` uses the model's conflict thresholds (`calibrate_conflict`).
    """
    if method == "robust":
      sources = integration.check_subset(beliefs, sources)
      return robust.robust(beliefs, sources, self._thresholds(sources))
    return integration.integrate(beliefs, method, sources)

  # ----------------------------------------------------------- generation
  def log_joint(self, x, z, targets: Optional[Sequence[str]] = None,
                evaluation: bool = False):
    """ln p(x_T, z) = sum_t ln p(x_t | z) + ln p(z): z `[..., B, Dz]` -> `[..., B]`.

    `evaluation=True`: no gradients needed, the decoders may take their faster
    evaluation path (`likelihoods.Decoder.evaluation_log_prob`).
    """
    targets = self.targets if targets is None else list(targets)
    z = tf.cast(z, tf.float32)
    log_prior = objectives.diag_normal_log_prob(z, 0., 1.)  # p(z) = N(0, I)
    log_prob = (lambda d: d.evaluation_log_prob) if evaluation else (lambda d: d.log_prob)
    return log_prior + tf.add_n([log_prob(self.decoders[t])(z, x[t]) for t in targets])

  def _bounds(self, x, num_samples, extra_bounds=(), training=False):
    rng = self.rng if training else self.eval_rng
    self._check_batch(x, sorted({k for keys in self.encoder_inputs.values()
                                 for k in keys} | set(self.targets)))
    loc, scale = self._encode_stacked(x, self.sources, training)  # [M, B, Dz]
    with likelihoods.compiled_kernels():
      return objectives.objective_bound(
          self.objective, loc, scale, lambda z: self.log_joint(x, z), num_samples,
          self.hybrid_weight, rng.normal, extra_bounds)

  # -------------------------------------------------------------- training
  @property
  def metrics(self):
    return list(self._trackers.values())

  def train_step(self, data):
    x = data[0] if isinstance(data, tuple) else data
    with tf.GradientTape() as tape:
      bound, _ = self._bounds(x, self.num_samples, training=True)  # [B]
      loss = -tf.reduce_mean(bound)
      # Under tf.distribute the optimizer sums gradients over replicas.
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      scaled_loss = self.optimizer.scale_loss(loss / replicas)
    grads = tape.gradient(scaled_loss, self.trainable_variables)
    self.optimizer.apply(grads, self.trainable_variables)
    self._trackers["loss"].update_state(loss)
    self._trackers["bound"].update_state(bound)
    return {"loss": self._trackers["loss"].result(),
            "bound": self._trackers["bound"].result()}

  def reset_eval_rng(self):
    """Restarts the evaluation noise (`test_step`'s samples) from the model's seed."""
    self.eval_rng.reset_from_seed(self._eval_seed)

  def test_step(self, data):
    x = data[0] if isinstance(data, tuple) else data
    bound, bounds = self._bounds(x, self.eval_num_samples,
                                 objectives.INTEGRATED_BOUNDS)
    self._trackers["loss"].update_state(-bound)
    self._trackers["bound"].update_state(bound)
    for name, value in bounds.items():
      self._trackers[name].update_state(value)
    return {m.name: m.result() for m in self.metrics}

  # ------------------------------------------------------- paper's tools
  def predict_targets(self, x, sources: Optional[Sequence[str]] = None,
                      targets: Optional[Sequence[str]] = None, method: str = "poe",
                      num_samples: int = 100, return_samples: bool = False,
                      seed: Optional[int] = None):
    """Predicts targets from any subset of sources (Eq. 6).

    p(x_t | x_S) = E_{z ~ q_S(z | x_S)} [p(x_t | z)], with q_S the integrated
    belief of S. (`keras.Model.predict` is Keras's own: the belief parameters
    of `call` for every batch of a dataset.)

    Args:
      x: batch dict holding (at least) the sources of S.
      sources: S (default: every source present in `x`).
      targets: targets to predict (default: all).
      method: integration method for S.
      num_samples: latent samples.
      return_samples: also return the per-sample means.
      seed: integer for reproducible samples (default: TF's global RNG).

    Returns:
      `{target: [B, ...]}` predictive means; with `return_samples`, also
      `{target: [K, B, ...]}` means of p(x_t | z_k).
    """
    targets = self.targets if targets is None else list(targets)
    unknown = [t for t in targets if t not in self.decoders]
    if unknown:
      raise ValueError(f"Unknown target(s) {unknown}; the model has {self.targets}.")
    q = self.integrate(self.encode(x, sources), method)
    z = q.sample(num_samples, seed=_stateless_seed(seed))  # [K, B, Dz]
    means = {t: self.decoders[t].mean(z) for t in targets}  # [K, B, ...]
    averaged = {t: tf.reduce_mean(m, 0) for t, m in means.items()}
    return (averaged, means) if return_samples else averaged

  def conflict(self, x, sources: Optional[Sequence[str]] = None):
    """Conflict measures of Eq. (2): `[B, M, M]`, `[b, i, j] = c(s_i || s_j)`."""
    return conflict_lib.conflict_matrix(self.encode(x, sources))

  def _thresholds(self, sources):
    """`[M, M]` conflict thresholds of `sources`, in their order."""
    unknown = [s for s in sources if s not in self.encoders]
    if unknown:
      raise ValueError(f"Unknown source(s) {unknown}; the model has {self.sources}.")
    idx = [self.sources.index(s) for s in sources]
    return tf.gather(tf.gather(self.conflict_thresholds, idx, axis=0), idx, axis=1)

  @property
  def conflict_calibrated(self) -> bool:
    """Whether `calibrate_conflict` set the thresholds (else every tau = 1)."""
    return not bool(tf.reduce_all(tf.convert_to_tensor(self.conflict_thresholds) == 1.))

  def calibrate_conflict(self, dataset,
                         target_rate: float = calibration.FALSE_ALARM_RATE):
    """Sets the conflict thresholds from healthy held-out data (`msnvi_tf.core.calibration`).

    Args:
      dataset: iterable of batch dicts holding every source, all healthy.
      target_rate: alpha, the accepted fraction of healthy examples with an alarm.

    Returns:
      The `calibration.Calibration` now stored in `conflict_thresholds`.
    """
    conflicts = []
    for batch in dataset:
      x = batch[0] if isinstance(batch, tuple) else batch
      sources = self._available_sources(x, self.sources)
      conflicts.append(conflict_lib.conflict_stacked(
          *self._encode_stacked(x, sources)).numpy())  # [B, M, M]
    if not conflicts:
      raise ValueError("calibrate_conflict: the dataset is empty.")
    result = calibration.calibrate(np.concatenate(conflicts), target_rate)
    self.conflict_thresholds.assign(result.thresholds)
    return result

  def sensor_health(self, x, sources: Optional[Sequence[str]] = None):
    """Conflict score, alarm flag and robust weight of every source, Eqs. (R2)-(R6).

    With calibrated thresholds, a score above 1 means the source disagrees with
    every other source more than healthy data ever showed (`msnvi_tf.core.robust`).

    Returns:
      `{"score": {source: [B]}, "alarm": {source: [B] bool},
      "weight": {source: [B]}}`.
    """
    sources = self._available_sources(x, sources)
    loc, scale = self._encode_stacked(x, sources)  # [M, B, Dz]
    health = robust.sensor_health(loc, scale, thresholds=self._thresholds(sources))
    return {k: {s: v[i] for i, s in enumerate(sources)} for k, v in health.items()}

  def pmi(self, x, sources: Optional[Sequence[str]] = None):
    """Pointwise mutual information between `sources` (App. D): `[B]`."""
    return integration.pmi(self.encode(x, sources))

  def sir(self, x, sources: Optional[Sequence[str]] = None, method: str = "poe",
          num_samples: int = 100, num_resamples: Optional[int] = None,
          seed: Optional[int] = None):
    """Sampling importance resampling from an integrated belief (App. E).

    Proposals z_k ~ q_S(z | x_S), weights w_k = p(x, z_k) / q_S(z_k) using all
    targets present in `x`, then `num_resamples` draws from the weighted set.
    `seed` (an integer) makes both draws reproducible.

    Returns:
      `(proposals [K, B, Dz], resampled [R, B, Dz])`.
    """
    num_resamples = num_resamples or num_samples
    q = self.integrate(self.encode(x, sources), method)
    seeds = [None, None] if seed is None else tf.unstack(
        tf.random.experimental.stateless_split(_stateless_seed(seed), 2))
    z = q.sample(num_samples, seed=seeds[0])  # [K, B, Dz]
    targets = [t for t in self.targets if t in x]
    log_w = self.log_joint(x, z, targets) - q.log_prob(z)  # [K, B]
    if seed is None:
      idx = tf.random.categorical(tf.transpose(log_w), num_resamples)  # [B, R]
    else:
      idx = tf.random.stateless_categorical(tf.transpose(log_w), num_resamples, seeds[1])
    resampled = tf.gather(tf.transpose(z, [1, 0, 2]), idx, batch_dims=1)  # [B, R, Dz]
    return z, tf.transpose(resampled, [1, 0, 2])

  def log_likelihood(self, x, num_samples: int = 1000,
                     sources: Optional[Sequence[str]] = None, method: str = "poe",
                     chunk_size: Optional[int] = None, seed: Optional[int] = None):
    """IWAE estimate of ln p(x) with many samples, drawn in chunks.

    ln p(x) >= ln (1/K) sum_k p(x, z_k) / q(z_k), z_k ~ q (Sec. 2), q the
    integration `method` of the beliefs of `sources` (`method="poe"` over all
    sources: the PoE proposal; `sources=["top"]`: that source's own belief). K =
    `num_samples` is drawn in chunks of `chunk_size` samples inside one graph (a
    `tf.while_loop` with a running log-sum-exp), so memory stays bounded by one
    chunk; the graph is traced once per (shapes, K, chunk size, sources, method)
    and reused by later calls. The decoders run under the model's dtype policy
    (bf16 matmuls under mixed_bfloat16); log-probabilities and log-sum-exp are
    float32.

    Args:
      x: batch dict with the sources of `sources` and every target.
      num_samples: K.
      sources: the subset S whose beliefs are integrated (default: all present).
      method: integration method of S.
      chunk_size: samples per chunk (None or 0: about `LOG_LIKELIHOOD_ROWS` / B,
        so each chunk runs the decoders on that many rows).
      seed: integer for reproducible samples: the chunk that starts at sample
        k draws with the stateless seed fold_in([seed, 0], k), so a seeded
        estimate is a function of (seed, K, chunk size, batch). Default: a seed
        drawn from TF's global RNG (new samples on every call).

    Returns:
      `[B]` float32: one estimate per example.
    """
    num_samples, chunk_size = int(num_samples), int(chunk_size or 0)
    if num_samples < 1 or chunk_size < 0:
      raise ValueError(f"num_samples must be >= 1 and chunk_size >= 0 (0: the "
                       f"default); got {num_samples}, {chunk_size}.")
    if method not in integration.INTEGRATIONS:
      raise ValueError(f"Unknown integration method {method!r}; choose one of "
                       f"{sorted(integration.INTEGRATIONS)}.")
    sources = self._available_sources(x, sources)
    self._check_batch(x, self.targets)
    loc, scale = self._encode_stacked(x, sources)  # [M, B, Dz]
    if not chunk_size:  # ceil(rows / B); B unknown (traced by a caller): 100
      chunk_size = -(-LOG_LIKELIHOOD_ROWS // (loc.shape[1] or 100))
    chunk_size = min(chunk_size, num_samples)
    if seed is None:  # one draw of TF's global RNG: new samples on every call
      seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    else:
      seed = _stateless_seed(seed)
    targets = {t: tf.cast(x[t], tf.float32) for t in self.targets}
    with likelihoods.compiled_kernels():  # read when (first) traced
      return self.log_likelihood_function()(
          tf.cast(loc, tf.float32), tf.cast(scale, tf.float32), targets, seed,
          num_samples=num_samples, chunk_size=chunk_size, sources=tuple(sources),
          method=method)

  def log_likelihood_function(self):
    """The `tf.function` behind `log_likelihood` (one per model, made on first use).

    Called as `fn(loc [M, B, Dz], scale [M, B, Dz], {target: [B, ...]}, seed [2],
    num_samples=K, chunk_size=C, sources=(names of the M beliefs), method=...)`
    -> `[B]`; `fn.experimental_get_tracing_count()` counts its traces.
    """
    # Held in a plain dict set past Keras' attribute tracking: neither Keras
    # nor a checkpoint or SavedModel (which collects tf.function attributes and
    # properties) sees it.
    cache = self.__dict__.get("_log_likelihood_cache")
    if cache is None:
      # The graph's loop is an explicit tf.while_loop: no AutoGraph needed.
      cache = {"fn": tf.function(self._log_likelihood_graph, reduce_retracing=True,
                                 autograph=False)}
      object.__setattr__(self, "_log_likelihood_cache", cache)
    return cache["fn"]

  def _log_likelihood_graph(self, loc, scale, targets, seed, num_samples,
                            chunk_size, sources, method):
    """ln (1/K) sum_k p(x, z_k) / q(z_k) by chunks: see `log_likelihood`."""
    beliefs = {s: beliefs_lib.make_belief(loc[i], scale[i])
               for i, s in enumerate(sources)}
    q = self.integrate(beliefs, method)  # batch shape [B]

    def chunk(n, offset):
      """ln sum_k p(x, z_k) / q(z_k) over n samples: `[B]` float32."""
      z = q.sample(n, seed=tf.random.experimental.stateless_fold_in(seed, offset))
      log_w = (self.log_joint(targets, z, evaluation=True)
               - tf.cast(q.log_prob(z), tf.float32))  # [n, B]
      return tf.reduce_logsumexp(log_w, 0)  # [n, B] -> [B]

    def log_add(a, b):  # ln(e^a + e^b); -inf where both are
      return tf.reduce_logsumexp(tf.stack([a, b]), 0)

    num_full, rest = divmod(num_samples, chunk_size)
    total = tf.fill(tf.shape(loc)[1:2], tf.constant(-math.inf, tf.float32))  # [B]
    if num_full:
      def body(i, total):
        return i + 1, log_add(total, chunk(chunk_size, i * chunk_size))
      # One chunk at a time: iterations do not depend on each other, and running
      # them in parallel would multiply the memory.
      _, total = tf.while_loop(lambda i, _: i < num_full, body,
                               (tf.constant(0), total), parallel_iterations=1)
    if rest:
      total = log_add(total, chunk(rest, num_full * chunk_size))
    return total - math.log(num_samples)
