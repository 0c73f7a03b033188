"""What a trained `MultiSourceVAE` answers: prediction, conflict, PMI, SIR, ln p(x).

`Queries` is a mixin of `msnvi_tf.core.model.MultiSourceVAE`: prediction from any
subset of sources (Eq. 6), conflict (Eq. 2), PMI (App. D), SIR (App. E), the
chunked large-K log-likelihood estimate (Sec. 2), and beyond the paper the
robust integration's conflict thresholds calibrated on healthy data
(`calibrate_conflict`, `sensor_health`; `msnvi_tf.core.robust`,
`msnvi_tf.core.calibration`) and the latent filter of sequences fitted on
healthy ones (`calibrate_filter`, `transition`; `msnvi_tf.core.filtering`). Sampling queries take an integer `seed` or None and
follow the seeding convention of `msnvi_tf.core.estimators`.
"""
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import calibration
from msnvi_tf.core import conflict as conflict_lib
from msnvi_tf.core import estimators
from msnvi_tf.core import filtering
from msnvi_tf.core import integration
from msnvi_tf.core import kernels
from msnvi_tf.core import robust

__all__ = ["Queries"]


class Queries:
  """Post-training queries of a `MultiSourceVAE`.

  Uses the model's public API only: encoders, decoders, `encode`,
  `encode_stacked`, `integrate`, `log_joint`, `check_sources`, `check_batch`,
  `conflict_thresholds` and the latent filter's variables (`transition_matrix`,
  `transition_offset`, `transition_noise_cov`, `prediction_thresholds`,
  `trend_thresholds`); the
  model uses its `thresholds_of`.
  """

  def predict_targets(self, x, sources: Optional[Sequence[str]] = None,
                      targets: Optional[Sequence[str]] = None, method: str = "poe",
                      num_samples: int = 100, return_samples: bool = False,
                      seed: Optional[int] = None):
    """Predicts targets from any subset of sources (Eq. 6).

    p(x_t | x_S) = E_{z ~ q_S(z | x_S)} [p(x_t | z)], with q_S the integrated
    belief of S; its mean is `estimators.predictive_mean`. (`keras.Model.predict`
    is Keras's own: the belief parameters of `call` for every batch of a dataset.)

    Args:
      x: batch dict holding (at least) the sources of S.
      sources: S (default: every source present in `x`).
      targets: targets to predict (default: all).
      method: integration method for S.
      num_samples: latent samples.
      return_samples: also return the per-sample means.
      seed: int for reproducible samples, None for new ones (`estimators`).

    Returns:
      `{target: [B, ...]}` predictive means; with `return_samples`, also
      `{target: [K, B, ...]}` means of p(x_t | z_k).
    """
    targets = self.targets if targets is None else list(targets)
    unknown = [t for t in targets if t not in self.decoders]
    if unknown:
      raise ValueError(f"Unknown target(s) {unknown}; the model has {self.targets}.")
    q = self.integrate(self.encode(x, sources), method)
    means, terms = estimators.predictive_mean(  # [B, ...], [K, B, ...]
        q, {t: self.decoders[t] for t in targets}, num_samples,
        estimators.as_seed(seed))
    return (means, terms) if return_samples else means

  # ------------------------------------------------------------ conflict
  def conflict(self, x, sources: Optional[Sequence[str]] = None):
    """Conflict measures of Eq. (2): `[B, M, M]`, `[b, i, j] = c(s_i || s_j)`."""
    return conflict_lib.conflict_matrix(self.encode(x, sources))

  def thresholds_of(self, sources):
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
    """Sets the conflict thresholds from healthy held-out data (`core.calibration`).

    Args:
      dataset: iterable of batch dicts holding every source, all healthy.
      target_rate: alpha, the accepted fraction of healthy examples with an alarm.

    Returns:
      The `calibration.Calibration` now stored in `conflict_thresholds`.
    """
    conflicts = []
    for batch in dataset:
      x = batch[0] if isinstance(batch, tuple) else batch
      sources = self.check_sources(x, self.sources)
      conflicts.append(conflict_lib.conflict_stacked(
          *self.encode_stacked(x, sources)).numpy())  # [B, M, M]
    if not conflicts:
      raise ValueError("calibrate_conflict: the dataset is empty.")
    result = calibration.calibrate(np.concatenate(conflicts), target_rate)
    self.conflict_thresholds.assign(result.thresholds)
    return result

  # ------------------------------------------------------- the latent filter
  @property
  def transition(self) -> Optional[filtering.Transition]:
    """The latent `filtering.Transition` set by `calibrate_filter`, or None (no filter).

    A model has no filter until then (its Q is 0), as does one restored from a
    checkpoint written before models kept one.
    """
    noise_cov = tf.convert_to_tensor(self.transition_noise_cov)
    if not bool(tf.reduce_any(noise_cov != 0.)):
      return None
    return filtering.Transition(tf.convert_to_tensor(self.transition_matrix),
                                tf.convert_to_tensor(self.transition_offset), noise_cov)

  def sequence_beliefs(self, sequences):
    """The sources' beliefs of whole sequences, as `filtering` takes them.

    Args:
      sequences: batch dicts `{name: [T_i, ...]}`, one sequence each (its T_i
        frames as the batch), holding every source.

    Returns:
      `[(loc, scale)]`, each `[T, M, B, Dz]`: one pair per length T, its B
      sequences side by side in the order given.
    """
    by_length = {}
    for x in sequences:
      sources = self.check_sources(x, self.sources)
      loc, scale = self.encode_stacked(x, sources)  # [M, T, Dz]
      frames = lambda v: tf.transpose(tf.cast(v, tf.float32), [1, 0, 2])[:, :, None]
      by_length.setdefault(int(loc.shape[1]), []).append((frames(loc), frames(scale)))
    return [tuple(tf.concat(parts, 2) for parts in zip(*pairs))  # [T, M, B, Dz]
            for pairs in by_length.values()]

  def calibrate_filter(self, fit_sequences, calibration_sequences,
                       target_rate: float = calibration.FALSE_ALARM_RATE):
    """Fits the latent filter on healthy sequences and stores it (`filtering.fit_filter`).

    The transition is fitted to the per-frame PoE means of `fit_sequences`,
    the prediction-conflict thresholds calibrated on `calibration_sequences`
    and those of the trend test, together at `target_rate` (frames with an alarm);
    they are kept in `transition_matrix`, `transition_offset`,
    `transition_noise_cov`, `prediction_thresholds` and `trend_thresholds`
    (checkpointed, exported: the `filter_step` signature).

    Args:
      fit_sequences, calibration_sequences: healthy sequences, batch dicts
        `{name: [T, ...]}` (`sequence_beliefs`); sequences of one length are
        filtered side by side.
      target_rate: accepted fraction of healthy frames with an alarm.

    Returns:
      The `filtering.FilterFit`.
    """
    result = filtering.fit_filter(self.sequence_beliefs(fit_sequences),
                                  self.sequence_beliefs(calibration_sequences),
                                  target_rate)
    for variable, value in ((self.transition_matrix, result.transition.matrix),
                            (self.transition_offset, result.transition.offset),
                            (self.transition_noise_cov, result.transition.noise_cov),
                            (self.prediction_thresholds, result.thresholds),
                            (self.trend_thresholds, result.trend_thresholds)):
      variable.assign(value)
    return result

  def sensor_health(self, x, sources: Optional[Sequence[str]] = None):
    """Conflict score, alarm flag and robust weight of every source, Eqs. (R2)-(R6).

    With calibrated thresholds, a score above 1 means the source disagrees with
    every other source more than healthy data ever showed (`msnvi_tf.core.robust`).

    Returns:
      `{"score": {source: [B]}, "alarm": {source: [B] bool},
      "weight": {source: [B]}}`.
    """
    sources = self.check_sources(x, sources)
    loc, scale = self.encode_stacked(x, sources)  # [M, B, Dz]
    health = robust.sensor_health_stacked(loc, scale,
                                          thresholds=self.thresholds_of(sources))
    return {k: {s: v[i] for i, s in enumerate(sources)} for k, v in health.items()}

  def pmi(self, x, sources: Optional[Sequence[str]] = None):
    """Pointwise mutual information between `sources` (App. D): `[B]`."""
    return integration.pmi(self.encode(x, sources))

  # ------------------------------------------------- importance sampling
  def sir(self, x, sources: Optional[Sequence[str]] = None, method: str = "poe",
          num_samples: int = 100, num_resamples: Optional[int] = None,
          seed: Optional[int] = None):
    """Sampling importance resampling from an integrated belief (App. E).

    Proposals z_k ~ q_S(z | x_S), weights w_k = p(x, z_k) / q_S(z_k) using all
    targets present in `x`, then `num_resamples` draws from the weighted set.
    With an int `seed`, the proposals are those of `log_likelihood` with the
    same seed, K and one chunk (`estimators`' convention).

    Returns:
      `(proposals [K, B, Dz], resampled [R, B, Dz])`.
    """
    num_resamples = num_resamples or num_samples
    q = self.integrate(self.encode(x, sources), method)
    seed = estimators.as_seed(seed)
    targets = [t for t in self.targets if t in x]
    z, log_w = estimators.weighted_samples(  # [K, B, Dz], [K, B]
        q, lambda z: self.log_joint(x, z, targets) - q.log_prob(z), num_samples, seed)
    idx = tf.random.stateless_categorical(  # [B, R]
        tf.transpose(log_w), num_resamples, estimators.other_seed(seed))
    resampled = tf.gather(tf.transpose(z, [1, 0, 2]), idx, batch_dims=1)  # [B, R, Dz]
    return z, tf.transpose(resampled, [1, 0, 2])

  def log_likelihood(self, x, num_samples: int = 1000,
                     sources: Optional[Sequence[str]] = None, method: str = "poe",
                     chunk_size: Optional[int] = None, seed: Optional[int] = None):
    """IWAE estimate of ln p(x) with many samples, drawn in chunks.

    ln p(x) >= ln (1/K) sum_k p(x, z_k) / q(z_k), z_k ~ q (Sec. 2), q the
    integration `method` of the beliefs of `sources` (`method="poe"` over all
    sources: the PoE proposal; `sources=["top"]`: that source's own belief).
    `estimators.log_likelihood` draws K = `num_samples` in chunks of
    `chunk_size` inside one graph, traced once per (shapes, K, chunk size,
    sources, method) and reused by later calls. The decoders run under the
    model's dtype policy (bf16 matmuls under mixed_bfloat16, fused kernels);
    log-probabilities and log-sum-exp are float32.

    Args:
      x: batch dict with the sources of `sources` and every target.
      num_samples: K.
      sources: the subset S whose beliefs are integrated (default: all present).
      method: integration method of S.
      chunk_size: samples per chunk (None or 0: about `estimators.DEFAULT_ROWS`
        / B, so each chunk runs the decoders on that many rows).
      seed: int for reproducible samples, None for new ones on every call; the
        chunk starting at sample k draws with fold_in([seed, 0], k)
        (`estimators`' convention).

    Returns:
      `[B]` float32: one estimate per example.
    """
    if method not in integration.INTEGRATIONS:
      raise ValueError(f"Unknown integration method {method!r}; choose one of "
                       f"{sorted(integration.INTEGRATIONS)}.")
    sources = self.check_sources(x, sources)
    self.check_batch(x, self.targets)
    loc, scale = self.encode_stacked(x, sources)  # [M, B, Dz]
    chunk_size = estimators.chunk_size_for(num_samples, loc.shape[1], chunk_size)
    targets = {t: tf.cast(x[t], tf.float32) for t in self.targets}
    with kernels.compiled_kernels():  # read when (first) traced
      return self.log_likelihood_function()(
          tf.cast(loc, tf.float32), tf.cast(scale, tf.float32), targets,
          estimators.as_seed(seed), num_samples=int(num_samples),
          chunk_size=chunk_size, sources=tuple(sources), method=method)

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
    """The estimate of `log_likelihood` from stacked beliefs: `[B]`."""
    beliefs = {s: beliefs_lib.make_belief(loc[i], scale[i])
               for i, s in enumerate(sources)}
    q = self.integrate(beliefs, method)  # batch shape [B]
    return estimators.log_likelihood(
        q, lambda z: self.log_joint(targets, z, evaluation=True), num_samples, seed,
        chunk_size)
