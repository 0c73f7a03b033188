"""`MultiSourceVAE`: one encoder per source, one decoder per target, one latent z.

The model owns the encoders q_m(z | x_m) and decoders p(x_t | z) as dicts keyed
by name, trains any objective of `msnvi_tf.core.objectives` in a custom
`train_step`, evaluates the ind / MoE / PoE bounds in `test_step` (the Table 1
grid), encodes and integrates any subset of sources, and answers the
post-training queries of `msnvi_tf.core.queries` (prediction, Eq. 6; conflict,
Eq. 2; PMI, App. D; SIR, App. E; a chunked large-K log-likelihood estimate; the
robust integration's calibrated conflict thresholds; the latent filter of
sequences fitted on healthy ones).

Batches are dicts `{name: [B, ...] tensor}` holding the sources the encoders read
and the targets the decoders model (often the same names). A batch may also hold
`present`, `{name: [B]}` presence masks of some entries (1. observed, 0. absent;
`msnvi_tf.data`): training and evaluation then integrate each example's present
sources only and model its present targets only (`presence`).
"""
import functools
from typing import Dict, List, Mapping, Optional, Sequence

import keras
import tensorflow as tf

from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import integration
from msnvi_tf.core import kernels
from msnvi_tf.core import objectives
from msnvi_tf.core import queries
from msnvi_tf.core import robust

__all__ = ["MultiSourceVAE", "PRESENT"]

PRESENT = "present"  # The batch entry of the presence masks (msnvi_tf.data.PRESENT).


class MultiSourceVAE(queries.Queries, keras.Model):
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
    # The latent filter of sequences (msnvi_tf.core.filtering): the transition
    # z_t = A z_{t-1} + b + N(0, Q) and the thresholds tau `[2, M]` of the
    # sources' conflicts with its prediction, and the thresholds `[M]` of its
    # trend test (0: no test), set from healthy sequences by `calibrate_filter`
    # (training does so for a data set with sequences); Q = 0 until then (no
    # filter). Checkpointed and exported with the weights; a checkpoint written
    # before they existed restores without them.
    dim, num_sources = self.latent_dim, len(self.encoders)
    for name, shape, initializer in (
        ("transition_matrix", (dim, dim), "zeros"), ("transition_offset", (dim,), "zeros"),
        ("transition_noise_cov", (dim, dim), "zeros"),
        ("prediction_thresholds", (2, num_sources), "ones"),
        ("trend_thresholds", (num_sources,), "zeros")):
      setattr(self, name, self.add_weight(shape=shape, initializer=initializer,
                                          trainable=False, dtype="float32", name=name))
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

  def check_batch(self, x, keys):
    """Checks that batch `x` holds `keys` with the model's per-example shapes.

    Raises (at trace time):
      TypeError: `x` is not a dict; KeyError: an entry is missing;
      ValueError: an entry's per-example shape is not the model's.
    """
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

  def check_sources(self, x, sources: Optional[Sequence[str]]) -> List[str]:
    """The sources to use of batch `x`: `sources`, or all whose inputs `x` holds.

    Raises:
      KeyError: `sources` is None and `x` holds none; ValueError: `sources` is
      empty or names an unknown source; `check_batch`'s errors for their inputs.
    """
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
    self.check_batch(x, sorted({k for s in sources for k in self.encoder_inputs[s]}))
    return sources

  # ------------------------------------------------------------ inference
  def _encoder_input(self, x, source):
    keys = self.encoder_inputs[source]
    if len(keys) == 1:
      return x[keys[0]]
    return tf.concat([tf.cast(x[k], self.compute_dtype) for k in keys], -1)

  def encode_stacked(self, x, sources: Sequence[str], training: bool = False):
    """Beliefs q_m(z | x_m) of `sources` as stacked parameters `(loc, scale)`.

    Row m is q_m(z | x_m) = N(loc[m], diag(scale[m]^2)) of `sources[m]`: the form
    the stacked functions of `msnvi_tf.core` take (`integration.poe_stacked`,
    `conflict.conflict_stacked`, `robust.robust_stacked`). `encode` returns the
    same beliefs as distributions and checks the batch first; this does not.

    Args:
      x: batch dict holding every entry the encoders of `sources` read.
      sources: the M sources, in the order of the rows.
      training: passed to the encoders.

    Returns:
      `(loc [M, B, Dz], scale [M, B, Dz])`, float32.
    """
    params = [self.encoders[s](self._encoder_input(x, s), training=training)
              for s in sources]
    return tf.stack([p[0] for p in params]), tf.stack([p[1] for p in params])

  def call(self, x, training=False):
    """Belief parameters of every source present: `{source: (loc, scale)}`."""
    sources = self.check_sources(x, None)
    return {s: self.encoders[s](self._encoder_input(x, s), training=training)
            for s in sources}

  def encode(self, x, sources: Optional[Sequence[str]] = None):
    """Beliefs q_m(z | x_m) of `sources` (default: all present in `x`).

    Returns:
      `{source: tfd.MultivariateNormalDiag}` with batch shape `[B]`.
    """
    sources = self.check_sources(x, sources)
    loc, scale = self.encode_stacked(x, sources)
    return {s: beliefs_lib.make_belief(loc[i], scale[i]) for i, s in enumerate(sources)}

  def integrate(self, beliefs, method: str = "poe",
                sources: Optional[Sequence[str]] = None):
    """Integrated belief of a subset of `beliefs` (see `integration.integrate`).

    `method="robust"` uses the model's conflict thresholds (`calibrate_conflict`).
    """
    if method == "robust":
      sources = integration.check_subset(beliefs, sources)
      return robust.robust(beliefs, sources, self.thresholds_of(sources))
    return integration.integrate(beliefs, method, sources)

  # ----------------------------------------------------------- generation
  def log_joint(self, x, z, targets: Optional[Sequence[str]] = None,
                evaluation: bool = False,
                present: Optional[Mapping[str, tf.Tensor]] = None):
    """ln p(x_T, z) = sum_t ln p(x_t | z) + ln p(z): z `[..., B, Dz]` -> `[..., B]`.

    `evaluation=True`: no gradients needed, the decoders may take their faster
    evaluation path (`likelihoods.Decoder.evaluation_log_prob`). `present`:
    optional `{target: [B]}` masks; an absent target's term is left out (and
    its decoder gets exactly zero gradient from that example).
    """
    targets = self.targets if targets is None else list(targets)
    present = present or {}
    z = tf.cast(z, tf.float32)
    log_prior = objectives.diag_normal_log_prob(z, 0., 1.)  # p(z) = N(0, I)
    log_prob = (lambda d: d.evaluation_log_prob) if evaluation else (lambda d: d.log_prob)
    terms = []
    for t in targets:
      term = log_prob(self.decoders[t])(z, x[t])  # [..., B]
      if t in present:
        term = tf.where(present[t] > 0., term, 0.)
      terms.append(term)
    return log_prior + tf.add_n(terms)

  def presence(self, x):
    """Presence masks of batch `x`: `(sources [M, B] or None, {target: [B]})`.

    `x["present"]` (optional) is `{entry: [B]}`, 1. where the example holds the
    entry, 0. where not; an entry it does not name is present. A source is
    present where every entry its encoder reads is (the IWAE's hard-wired
    encoder: all of them), a target where its entry is. Inside `tf.function` the
    checks run with the step: masks must be 0 or 1, and every example needs a
    present source (InvalidArgumentError naming the batch entry otherwise).

    Raises:
      TypeError / ValueError: `present` is not a dict of known entries.
    """
    masks = x.get(PRESENT)
    if masks is None:
      return None, {}
    if not isinstance(masks, Mapping):
      raise TypeError(f"Batch entry {PRESENT!r} must be a dict {{entry: [B] mask}}, got "
                      f"{type(masks).__name__}.")
    entries = {k for keys in self.encoder_inputs.values() for k in keys} | set(self.targets)
    unknown = sorted(set(masks) - entries)
    if unknown:
      raise ValueError(f"Batch entry {PRESENT!r} names {unknown}, which the model does not "
                       f"read; it reads {sorted(entries)}.")
    checked = {}
    for name, mask in masks.items():
      mask = tf.cast(mask, tf.float32)  # [B]
      with tf.control_dependencies([tf.debugging.Assert(
          tf.reduce_all((mask == 0.) | (mask == 1.)),
          [f"{PRESENT}[{name!r}] must hold 0 (absent) or 1 (present) only."])]):
        checked[name] = tf.identity(mask)
    if not any(k in checked for keys in self.encoder_inputs.values() for k in keys):
      sources = None
    else:
      ones = tf.ones_like(next(iter(checked.values())))  # [B]
      sources = tf.stack([
          functools.reduce(tf.multiply, [checked.get(k, ones) for k in self.encoder_inputs[s]])
          for s in self.sources])  # [M, B]
      with tf.control_dependencies([tf.debugging.Assert(
          tf.reduce_all(tf.reduce_max(sources, 0) > 0.),
          [f"An example has none of the sources {self.sources} present (batch entry "
           f"{PRESENT!r}); every example needs at least one."])]):
        sources = tf.identity(sources)
    return sources, {t: checked[t] for t in self.targets if t in checked}

  def _bounds(self, x, num_samples, extra_bounds=(), training=False):
    rng = self.rng if training else self.eval_rng
    self.check_batch(x, sorted({k for keys in self.encoder_inputs.values()
                                 for k in keys} | set(self.targets)))
    sources, targets = self.presence(x)
    loc, scale = self.encode_stacked(x, self.sources, training)  # [M, B, Dz]
    with kernels.compiled_kernels():
      return objectives.objective_bound(
          self.objective, loc, scale, lambda z: self.log_joint(x, z, present=targets),
          num_samples, self.hybrid_weight, rng.normal, extra_bounds, sources)

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
    # The norm of d loss / d weights: this replica's share, loss scaling undone.
    grad_norm = tf.linalg.global_norm(grads) * tf.cast(replicas, tf.float32) / tf.cast(
        getattr(self.optimizer, "dynamic_scale", 1.), tf.float32)
    self.optimizer.apply(grads, self.trainable_variables)
    self._trackers["loss"].update_state(loss)
    self._trackers["bound"].update_state(bound)
    return {"loss": self._trackers["loss"].result(),
            "bound": self._trackers["bound"].result(), "grad_norm": grad_norm}

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
