"""The one Monte Carlo estimator ln (1/K) sum_k f(z_k), z_k ~ q, and its seeds.

Importance-weighted log-likelihood (Sec. 2; the IWAE bound):
    ln p(x) >= ln (1/K) sum_k w_k,   w_k = p(x, z_k) / q(z_k),   z_k ~ q,
and, with f(z) = p(x_u | z) and no weights, the predictive ln p(x_u | x_o) of
Eq. (6). `log_mean_exp` draws the K samples in chunks inside one loop, so memory
stays bounded by one chunk; `log_likelihood` is its case f = p(x, z) / q(z);
`weighted_samples` gives the samples and ln f of one chunk (SIR, App. E; the
Markov chain of `msnvi_tf.core.imputation`). Used by `MultiSourceVAE.log_likelihood`
and `sir`, the export's `log_likelihood`, the imputation scores and Table 2.
`predictive_mean` is the predictive mean of Eq. (6), E[x_t | x_S] ~ (1/K) sum_k
E[x_t | z_k], for `MultiSourceVAE.predict_targets` and the export's predictions.
(Training draws its own samples: `msnvi_tf.core.objectives`.)

Seeding convention, for every sampling query of the package (`predict_targets`,
`sir`, `log_likelihood`, the export, imputation):
  * `seed` is an int (reproducible) or None (a new seed drawn once per call from
    TF's global RNG). `as_seed` turns it into the stateless `[2]` int32 seed
    s = [seed, 0]; a `[2]` tensor passes through unchanged.
  * The latent samples k0, ..., k0 + n - 1 of a chunk starting at sample k0 are
    `q.sample(n, seed=fold_in(s, k0))` (`draw`). A seeded estimate is thus a
    function of (seed, K, chunk size, batch): one chunk (chunk size >= K) draws
    the same K samples as `draw(q, K, s)`, other chunk sizes draw other samples
    (an estimate of the same quantity, not the same number).
  * Any other draw of the same call (SIR's resampling, the Markov chain's
    steps) uses `other_seed(s, i)` = fold_in(s, -1 - i), disjoint from the
    chunk offsets k0 >= 0.

Shapes: K samples, B examples, Dz latent dimensions.
"""
import math
import numbers
from typing import Callable, Mapping, Optional

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["DEFAULT_ROWS", "as_seed", "other_seed", "draw", "chunk_size_for",
           "weighted_samples", "log_mean_exp", "log_likelihood", "predictive_mean"]

# Default function rows (samples x examples) per chunk. On the MNIST-TB decoders
# the speed is flat from about 5k to 50k rows (the elementwise passes, not the
# matmuls, limit it; bench/step_time.py), and memory grows linearly with the rows.
DEFAULT_ROWS = 20_000


def as_seed(seed) -> tf.Tensor:
  """A stateless `[2]` int32 seed: `[seed, 0]` for an int, a global-RNG draw for None.

  A `[2]` seed (tensor or pair) passes through unchanged.
  """
  if seed is None:  # one draw of TF's global RNG: new samples on every call
    return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
  if isinstance(seed, numbers.Integral):
    return tf.constant([int(seed), 0], tf.int32)
  return tf.convert_to_tensor(seed, tf.int32)


def other_seed(seed, i: int = 0) -> tf.Tensor:
  """Seed of the i-th draw of a call besides its latent samples: fold_in(s, -1 - i)."""
  return tf.random.experimental.stateless_fold_in(seed, -1 - i)


def draw(q, num_samples: int, seed, offset: int = 0):
  """Samples `offset`, ..., `offset + num_samples - 1` of q: `[n, B, Dz]`."""
  seed = tf.random.experimental.stateless_fold_in(seed, offset)
  return q.sample(num_samples, seed=seed)


def chunk_size_for(num_samples: int, batch_size: Optional[int],
                   chunk_size: Optional[int] = None) -> int:
  """Samples per chunk: `chunk_size` or (None, 0) about `DEFAULT_ROWS` / B; <= K."""
  num_samples, chunk_size = int(num_samples), int(chunk_size or 0)
  if num_samples < 1 or chunk_size < 0:
    raise ValueError(f"num_samples must be >= 1 and chunk_size >= 0 (0: the "
                     f"default); got {num_samples}, {chunk_size}.")
  if not chunk_size:  # ceil(rows / B); B unknown (traced by a caller): 100
    chunk_size = -(-DEFAULT_ROWS // (batch_size or 100))
  return min(chunk_size, num_samples)


def weighted_samples(q, log_f: Callable, num_samples: int, seed, offset: int = 0):
  """Samples z_k ~ q (`draw`) and ln f(z_k).

  Args:
    q: proposal, a TFP distribution with batch shape `[B]`, event `[Dz]`.
    log_f: callable z `[n, B, Dz]` -> `[n, B]`.
    num_samples: n.
    seed: `[2]` stateless seed (`as_seed`).
    offset: index of the first sample (see the module's seeding convention).

  Returns:
    `(z [n, B, Dz], log_f [n, B] float32)`.
  """
  z = draw(q, num_samples, seed, offset)  # [n, B, Dz]
  return z, tf.cast(log_f(z), tf.float32)


def log_mean_exp(q, log_f: Callable, num_samples: int, seed,
                 chunk_size: Optional[int] = None):
  """ln (1/K) sum_k f(z_k), z_k ~ q, drawn in chunks.

  Args:
    q: proposal, a TFP distribution with batch shape `[B]`, event `[Dz]`.
    log_f: callable z `[n, B, Dz]` -> ln f(z) `[n, B]`.
    num_samples: K (a Python int).
    seed: `[2]` stateless seed (`as_seed`); chunk k0 draws with fold_in(seed, k0).
    chunk_size: samples per chunk (see `chunk_size_for`).

  Returns:
    `[B]` float32.
  """
  batch = q.batch_shape[0] if q.batch_shape.rank else None
  chunk = chunk_size_for(num_samples, batch, chunk_size)
  num_full, rest = divmod(num_samples, chunk)
  if num_full == 1 and not rest:  # one chunk: no loop
    return tfp.math.reduce_logmeanexp(weighted_samples(q, log_f, chunk, seed)[1], 0)

  # Chunks need a running ln sum_k f(z_k) (tf.reduce_logsumexp), divided by K
  # once at the end: a log-mean-exp per chunk would not add up.
  def log_sum(n, offset):  # [B]
    return tf.reduce_logsumexp(weighted_samples(q, log_f, n, seed, offset)[1], 0)

  def log_add(a, b):  # ln(e^a + e^b); -inf where both are
    return tf.reduce_logsumexp(tf.stack([a, b]), 0)

  total = tf.fill(q.batch_shape_tensor(), tf.constant(-math.inf, tf.float32))  # [B]
  if num_full:
    def body(i, total):
      return i + 1, log_add(total, log_sum(chunk, i * chunk))
    # One chunk at a time: iterations do not depend on each other, and running
    # them in parallel would multiply the memory.
    _, total = tf.while_loop(lambda i, _: i < num_full, body,
                             (tf.constant(0), total), parallel_iterations=1)
  if rest:
    total = log_add(total, log_sum(rest, num_full * chunk))
  return total - math.log(num_samples)


def log_likelihood(q, log_joint: Callable, num_samples: int, seed,
                   chunk_size: Optional[int] = None):
  """ln (1/K) sum_k p(x, z_k) / q(z_k), z_k ~ q: `log_mean_exp` of the weights, `[B]`.

  Args:
    q: proposal with batch shape `[B]`.
    log_joint: callable z `[n, B, Dz]` -> ln p(x, z) `[n, B]`.
    num_samples, seed, chunk_size: see `log_mean_exp`.
  """
  def log_w(z):  # ln p(x, z) - ln q(z): [n, B]
    return tf.cast(log_joint(z), tf.float32) - tf.cast(q.log_prob(z), tf.float32)

  return log_mean_exp(q, log_w, num_samples, seed, chunk_size)


def predictive_mean(q, decoders: Mapping, num_samples: int, seed):
  """Predictive mean of Eq. (6) and its K terms, from one draw of K samples of q.

  p(x_t | x_S) = E_{z ~ q_S(z | x_S)}[p(x_t | z)] (Eq. 6) has the mean
    E[x_t | x_S] = E_{z ~ q_S}[E[x_t | z]] ~ (1/K) sum_k E[x_t | z_k],   z_k ~ q_S,
  the z_k = `draw(q, K, seed)`: the samples of `log_mean_exp` with one chunk.

  Args:
    q: the belief q_S, a TFP distribution with batch shape `[B]`, event `[Dz]`.
    decoders: `{target: decoder}` of the targets to predict; `decoder.mean(z)`
      maps z `[K, B, Dz]` to E[x_t | z] `[K, B, ...]` (`likelihoods.Decoder`).
    num_samples: K.
    seed: `[2]` stateless seed (`as_seed`).

  Returns:
    `(mean, terms)`: `{target: [B, ...]}` predictive means and `{target: [K, B,
    ...]}` the E[x_t | z_k] they average.
  """
  z = draw(q, num_samples, seed)  # [K, B, Dz]
  terms = {t: decoder.mean(z) for t, decoder in decoders.items()}  # [K, B, ...]
  return {t: tf.reduce_mean(m, 0) for t, m in terms.items()}, terms
