"""Multi-source filtering over time: a latent transition, a Kalman filter, an RTS smoother.

The paper integrates the beliefs of one moment; its first future direction is
sequences. Beliefs are Gaussians and the PoE with prior correction (Eq. 3) is a
Bayesian update of the prior N(0, I) by each source's message q_m(z | x_m) /
p(z), so over time the prediction from the previous frames takes the prior's
place (a Kalman filter in the latent space):

  transition   z_t = A z_{t-1} + b + e_t,  e_t ~ N(0, Q)      (`Transition`)
  predict      mu_{t|t-1} = A mu_{t-1} + b,  P_{t|t-1} = A P_{t-1} A^T + Q
  update       Lambda_t = P_{t|t-1}^-1 + sum_m w_m (Lambda_m - Lambda_0)
               eta_t    = P_{t|t-1}^-1 mu_{t|t-1} + sum_m w_m (eta_m - eta_0)
               with the prior Lambda_0 = I, eta_0 = 0 and the message weights
               w_m in [0, 1] (presence, or the robust weights): with
               P_{t|t-1} = I, mu_{t|t-1} = 0 and w = 1 this is Eq. (3).
  smoother     (Rauch-Tung-Striebel) G_t = P_t A^T P_{t+1|t}^-1,
               mu^s_t = mu_t + G_t (mu^s_{t+1} - mu_{t+1|t}),
               P^s_t = P_t + G_t (P^s_{t+1} - P_{t+1|t}) G_t^T.

Covariances are full `[Dz, Dz]` (the transition mixes latent dimensions; the
beliefs stay diagonal). A frame where no source is present is a pure
prediction. `fit_transition` estimates A, b and Q by least squares from the
integrated beliefs of healthy training sequences; `fit_filter` fits it and
calibrates the prediction-conflict thresholds from the beliefs of healthy
sequences in one call (what training stores with a model of a data set with
sequences, `MultiSourceVAE.calibrate_filter`). `robust_filter_step` is one
frame of `robust_filter_sequence` for streams (the export's `filter_step`).

Faults that stay plausible frame by frame (a lagging camera, a slightly moved
one) bias a source the same way over many frames. The trend test sees them:
each source's innovation against the prediction updated by the *other*
sources' weighted messages, whitened, averaged exponentially over frames,

  r_m(t)   = mu_m - mu_{-m},   S_m = P_{-m} + diag(sigma_m^2),   e_m = chol(S_m)^-1 r_m
  d_m(t)   = (1 - alpha) d_m(t-1) + alpha e_m(t)                       (`TREND_RATE`)
  g_m(t)   = |d_m(t)|^2 (2 - alpha) / alpha                             (`trend_scores`)

(g is about chi^2 with Dz degrees of freedom for white healthy innovations),
mutes source m by the weights of (R4) on g_m / tau_m once it passes its
threshold tau_m, calibrated on healthy sequences like the prediction
conflict's, both tests together at the false-alarm target (`fit_filter`). A
source absent on a frame keeps its d_m.

Shapes: T frames, M sources, B sequences, Dz latent dimensions.
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from msnvi_tf.core import calibration
from msnvi_tf.core import conflict as conflict_lib
from msnvi_tf.core import integration

__all__ = ["Transition", "fit_transition", "predict", "update", "filter_sequence",
           "smooth", "prediction_conflict", "prediction_weights", "prediction_health",
           "robust_filter_sequence", "robust_filter_step",
           "calibrate_prediction_thresholds", "FilterFit", "fit_filter", "frame_poe",
           "TREND_RATE", "trend_innovations", "trend_update", "trend_scores"]

TREND_RATE = 0.2  # alpha of the trend test (module docstring): about 10 frames' memory.


class Transition(NamedTuple):
  """The linear-Gaussian latent transition z_t = A z_{t-1} + b + N(0, Q).

  Attributes:
    matrix: A, `[Dz, Dz]`.
    offset: b, `[Dz]`.
    noise_cov: Q, `[Dz, Dz]` symmetric positive definite.
  """
  matrix: tf.Tensor
  offset: tf.Tensor
  noise_cov: tf.Tensor


def fit_transition(sequences: Sequence[np.ndarray], ridge: float = 1e-6,
                   min_variance: float = 1e-6) -> Transition:
  """Least-squares A, b and the residual covariance Q from latent sequences.

  Minimises sum_t ||z_t - A z_{t-1} - b||^2 over every pair of consecutive
  frames of every sequence (a ridge of `ridge` times the trace keeps the normal
  equations regular); Q is the covariance of the residuals, its eigenvalues
  floored at `min_variance`.

  Args:
    sequences: arrays `[T_i, Dz]` (e.g. the PoE means of healthy training
      sequences), T_i >= 2.
    ridge: relative ridge of the normal equations.
    min_variance: floor of Q's eigenvalues.

  Returns:
    A float32 `Transition`.

  Raises:
    ValueError: no pair of frames, or sequences of different Dz.
  """
  previous, current = [], []
  for z in sequences:
    z = np.asarray(z, np.float64)
    if z.ndim != 2:
      raise ValueError(f"A latent sequence must be [T, Dz], got shape {z.shape}.")
    previous.append(z[:-1])
    current.append(z[1:])
  if not previous or sum(len(p) for p in previous) == 0:
    raise ValueError("fit_transition needs sequences of at least 2 frames.")
  if len({p.shape[1] for p in previous}) != 1:
    raise ValueError("The latent sequences have different dimensions "
                     f"{sorted({p.shape[1] for p in previous})}.")
  x = np.concatenate(previous)  # [N, Dz]
  y = np.concatenate(current)  # [N, Dz]
  design = np.concatenate([x, np.ones((len(x), 1))], 1)  # [N, Dz + 1]
  gram = design.T @ design
  gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
  coef = np.linalg.solve(gram, design.T @ y)  # [Dz + 1, Dz]
  matrix, offset = coef[:-1].T, coef[-1]
  residual = y - x @ matrix.T - offset  # [N, Dz]
  noise_cov = residual.T @ residual / max(len(residual) - 1, 1)
  values, vectors = np.linalg.eigh((noise_cov + noise_cov.T) / 2.)
  noise_cov = (vectors * np.maximum(values, min_variance)) @ vectors.T
  return Transition(*(tf.constant(v, tf.float32) for v in (matrix, offset, noise_cov)))


def predict(loc, cov, transition: Transition) -> Tuple[tf.Tensor, tf.Tensor]:
  """The predicted belief N(A mu + b, A P A^T + Q): `[B, Dz]`, `[B, Dz, Dz]`."""
  matrix = transition.matrix
  loc = tf.linalg.matvec(matrix, loc) + transition.offset  # [B, Dz]
  cov = matrix @ cov @ tf.transpose(matrix) + transition.noise_cov  # [B, Dz, Dz]
  return loc, _symmetric(cov)


def _symmetric(matrix):
  return 0.5 * (matrix + tf.linalg.matrix_transpose(matrix))


def update(loc, cov, source_loc, source_scale,
           weights=None) -> Tuple[tf.Tensor, tf.Tensor]:
  """The predicted belief N(loc, cov) updated by the sources' messages q_m / p(z).

  Args:
    loc: `[B, Dz]` predicted mean.
    cov: `[B, Dz, Dz]` predicted covariance.
    source_loc: `[M, B, Dz]` belief means of the M sources.
    source_scale: `[M, B, Dz]` belief standard deviations.
    weights: optional `[M, B]` message weights in [0, 1] (0: absent or muted).

  Returns:
    `(loc, cov)` of the updated belief, `[B, Dz]` and `[B, Dz, Dz]`.
  """
  source_precision = tf.math.reciprocal(tf.square(source_scale))  # [M, B, Dz]
  excess = source_precision - 1.  # Lambda_m - Lambda_0, [M, B, Dz]
  eta = source_precision * source_loc  # eta_m - eta_0, [M, B, Dz]
  if weights is not None:
    weights = tf.cast(weights, excess.dtype)[..., None]  # [M, B, 1]
    excess *= weights
    eta *= weights
  prior_precision = tf.linalg.inv(cov)  # [B, Dz, Dz]
  precision = prior_precision + tf.linalg.diag(tf.reduce_sum(excess, 0))  # [B, Dz, Dz]
  eta = tf.linalg.matvec(prior_precision, loc) + tf.reduce_sum(eta, 0)  # [B, Dz]
  chol = tf.linalg.cholesky(_symmetric(precision))
  cov = tf.linalg.cholesky_solve(chol, tf.eye(tf.shape(loc)[-1], batch_shape=tf.shape(loc)[:1]))
  loc = tf.linalg.cholesky_solve(chol, eta[..., None])[..., 0]
  return loc, _symmetric(cov)


def filter_sequence(source_loc, source_scale, transition: Transition, weights=None,
                    initial: Optional[Tuple[tf.Tensor, tf.Tensor]] = None):
  """Filters a sequence of the sources' beliefs.

  Args:
    source_loc: `[T, M, B, Dz]` belief means.
    source_scale: `[T, M, B, Dz]` belief standard deviations.
    transition: the latent `Transition`.
    weights: optional `[T, M, B]` message weights (presence or robust weights).
    initial: `(loc [B, Dz], cov [B, Dz, Dz])` of the belief before the first
      frame's messages; default the prior N(0, I) (the first frame is then the
      PoE of Eq. 3).

  Returns:
    `(filtered, predicted)`, each `(loc [T, B, Dz], cov [T, B, Dz, Dz])`;
    predicted[t] is the belief from frames < t (the initial one at t = 0).
  """
  return _run_filter(source_loc, source_scale, transition,
                     lambda t, loc, cov: None if weights is None else weights[t], initial)


def _run_filter(source_loc, source_scale, transition: Transition, weigh, initial=None):
  """The filter's loop: predict, then update by the messages weighted by
  `weigh(t, loc, cov)` (`[M, B]` or None) given frame t's predicted belief.

  Returns `(filtered, predicted)` as `filter_sequence`.
  """
  source_loc = tf.convert_to_tensor(source_loc, tf.float32)
  source_scale = tf.convert_to_tensor(source_scale, tf.float32)
  if initial is None:
    shape = tf.shape(source_loc)[2:]  # [B, Dz]
    initial = (tf.zeros(shape), tf.eye(shape[1], batch_shape=shape[:1]))
  loc, cov = initial
  filtered, predicted = [], []
  for t in range(source_loc.shape[0]):
    if t:
      loc, cov = predict(loc, cov, transition)
    predicted.append((loc, cov))
    loc, cov = update(loc, cov, source_loc[t], source_scale[t], weigh(t, loc, cov))
    filtered.append((loc, cov))
  stack = lambda pairs: (tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs]))
  return stack(filtered), stack(predicted)


def smooth(filtered, predicted, transition: Transition):
  """RTS smoother: the beliefs given the whole sequence, from `filter_sequence`'s outputs.

  Returns:
    `(loc [T, B, Dz], cov [T, B, Dz, Dz])`.
  """
  loc_f, cov_f = filtered
  loc_p, cov_p = predicted
  locs, covs = [loc_f[-1]], [cov_f[-1]]
  for t in range(loc_f.shape[0] - 2, -1, -1):
    # G_t = P_t A^T P_{t+1|t}^-1, through a solve: G^T = P_{t+1|t}^-1 A P_t.
    gain = tf.linalg.matrix_transpose(
        tf.linalg.solve(cov_p[t + 1], transition.matrix @ cov_f[t]))  # [B, Dz, Dz]
    locs.append(loc_f[t] + tf.linalg.matvec(gain, locs[-1] - loc_p[t + 1]))
    covs.append(_symmetric(cov_f[t] + gain @ (covs[-1] - cov_p[t + 1])
                           @ tf.linalg.matrix_transpose(gain)))
  return tf.stack(locs[::-1]), tf.stack(covs[::-1])


def prediction_conflict(loc, cov, source_loc, source_scale):
  """The conflict (Eq. 2) of every source with the predicted belief, both ways.

  With the prediction q_pred = N(loc, cov) in the place of the other source:
    c(m || pred) = KL(q_pred || q_m) / KL(q_pred || p),
    c(pred || m) = KL(q_m || q_pred) / KL(q_m || p),   p = N(0, I).
  The first is high when q_m is confident and disagrees with the prediction,
  the second when the prediction is confident and q_m disagrees with it.

  Args:
    loc: `[B, Dz]`; cov: `[B, Dz, Dz]` the predicted belief.
    source_loc, source_scale: `[M, B, Dz]` the sources' beliefs.

  Returns:
    `[2, M, B]`: `[0]` c(m || pred), `[1]` c(pred || m).
  """
  dim = tf.cast(tf.shape(loc)[-1], tf.float32)
  chol = tf.linalg.cholesky(cov)  # [B, Dz, Dz]
  log_det = 2. * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), -1)  # ln |P|, [B]
  variance = tf.square(source_scale)  # [M, B, Dz]
  log_det_source = tf.reduce_sum(tf.math.log(variance), -1)  # [M, B]
  diff = source_loc - loc  # [M, B, Dz]
  # KL(N(loc, P) || N(mu_m, S_m)), S_m diagonal:
  kl_pred_source = 0.5 * (
      tf.reduce_sum((tf.linalg.diag_part(cov) + tf.square(diff)) / variance, -1)
      - dim + log_det_source - log_det)
  # KL(N(mu_m, S_m) || N(loc, P)): tr(P^-1 S_m) + diff^T P^-1 diff through the Cholesky.
  precision = tf.linalg.cholesky_solve(chol, tf.eye(tf.shape(loc)[-1],
                                                    batch_shape=tf.shape(loc)[:1]))
  whitened = tf.linalg.matvec(precision, diff)  # [M, B, Dz]
  kl_source_pred = 0.5 * (
      tf.reduce_sum(tf.linalg.diag_part(precision) * variance + diff * whitened, -1)
      - dim + log_det - log_det_source)
  kl_pred_prior = 0.5 * (tf.linalg.trace(cov) + tf.reduce_sum(tf.square(loc), -1)
                         - dim - log_det)  # [B]
  kl_source_prior = conflict_lib.kl_diag_gaussians(source_loc, source_scale, 0., 1.)
  to_source = kl_pred_source / kl_pred_prior  # [M, B]
  to_pred = kl_source_pred / kl_source_prior  # [M, B]
  return tf.stack([to_source, to_pred])


def prediction_weights(conflicts, thresholds, present=None, sharpness: float = 2.):
  """Message weights from the conflicts with the prediction, as Eqs. (R2)-(R5) of
  `msnvi_tf.core.robust` with the prediction as every source's partner.

    s_m   = max{c(m || pred) / tau_m^(0), c(pred || m) / tau_m^(1)},
    s_ref = max{1, min_{m present} s_m},   w_m = min{1, s_ref / s_m}^kappa,
    alarm_m = [s_m > 1].
  (R4)'s reference keeps the source that agrees best with the prediction at
  full weight, so a wrong prediction cannot mute every source and leave the
  filter coasting.

  Args:
    conflicts: `[2, M, B]` from `prediction_conflict`.
    thresholds: `[2, M]` tau (1: uncalibrated).
    present: optional `[M, B]` presence (absent sources get weight 0, no alarm).
    sharpness: kappa.

  Returns:
    `{"score": [M, B], "weight": [M, B], "alarm": [M, B] bool}`.
  """
  thresholds = tf.cast(thresholds, tf.float32)[..., None]  # [2, M, 1]
  return _score_weights(tf.reduce_max(conflicts / thresholds, 0), present, sharpness)


def _score_weights(score, present=None, sharpness: float = 2.):
  """(R4)-(R5) weights and alarms of scores `[M, B]` in units of their thresholds."""
  present = tf.ones_like(score) if present is None else tf.cast(present, tf.float32)
  score = tf.where(present > 0., score, 0.)
  lowest = tf.reduce_min(tf.where(present > 0., score, math.inf), 0)  # [B]
  reference = tf.maximum(1., lowest)
  weight = tf.minimum(1., tf.math.divide_no_nan(reference, score)) ** sharpness
  weight = tf.where(score <= reference, 1., weight) * present
  return {"score": score, "weight": weight, "alarm": (score > 1.) & (present > 0.)}


def trend_innovations(loc, cov, source_loc, source_scale, weights=None):
  """Each source's whitened innovation against the prediction updated by the others.

    N(mu_{-m}, P_{-m}) = `update`(N(loc, cov), every source but m, weights),
    e_m = chol(P_{-m} + diag(sigma_m^2))^-1 (mu_m - mu_{-m})
  (module docstring). Where source m and the others agree with the prediction as
  the model expects, e_m is about N(0, I) when the beliefs are much narrower than
  the prior: the belief stands in for its message q_m / p, whose covariance
  (Lambda_m - I)^-1 need not exist; the calibrated thresholds absorb the rest.

  Args:
    loc: `[B, Dz]`; cov: `[B, Dz, Dz]` the predicted belief.
    source_loc, source_scale: `[M, B, Dz]` the sources' beliefs.
    weights: optional `[M, B]` message weights of the others' update.

  Returns:
    `[M, B, Dz]` innovations.
  """
  source_loc = tf.convert_to_tensor(source_loc, tf.float32)
  source_scale = tf.convert_to_tensor(source_scale, tf.float32)
  num_sources = source_loc.shape[0]
  weights = (tf.ones(tf.shape(source_loc)[:2]) if weights is None
             else tf.cast(weights, tf.float32))  # [M, B]
  # Row m of the M B rows below: source m's others (weight 0 for m itself).
  others = 1. - tf.eye(num_sources)  # [m, j]
  loo_weights = tf.reshape(tf.transpose(others[:, :, None] * weights[None], [1, 0, 2]),
                           [num_sources, -1])  # [j, M B]
  tile = lambda v, axis: tf.concat([v] * num_sources, axis)
  loo_loc, loo_cov = update(tile(loc, 0), tile(cov, 0), tile(source_loc, 1),
                            tile(source_scale, 1), loo_weights)  # [M B, Dz], [M B, Dz, Dz]
  residual = source_loc - tf.reshape(loo_loc, tf.shape(source_loc))  # [M, B, Dz]
  spread = (tf.reshape(loo_cov, tf.concat([tf.shape(source_loc), tf.shape(loc)[-1:]], 0))
            + tf.linalg.diag(tf.square(source_scale)))  # [M, B, Dz, Dz]
  return tf.linalg.triangular_solve(tf.linalg.cholesky(_symmetric(spread)),
                                    residual[..., None])[..., 0]


def trend_update(trend, innovations, present=None, rate: float = TREND_RATE):
  """d_m(t) = (1 - rate) d_m(t-1) + rate e_m(t) where source m is present, else d_m(t-1).

  Args:
    trend: `[M, B, Dz]` d(t-1).
    innovations: `[M, B, Dz]` e(t) (`trend_innovations`).
    present: optional `[M, B]` presence.
    rate: alpha.

  Returns:
    `[M, B, Dz]` d(t).
  """
  new = (1. - rate) * trend + rate * innovations
  if present is None:
    return new
  return tf.where(tf.cast(present, tf.bool)[..., None], new, trend)


def trend_scores(trend, thresholds, rate: float = TREND_RATE):
  """g_m / tau_m `[M, B]` of trends `[M, B, Dz]` (module docstring); 0 where tau_m = 0
  (an uncalibrated test: no score, no weight, no alarm)."""
  statistic = tf.reduce_sum(tf.square(trend), -1) * (2. - rate) / rate  # [M, B]
  return tf.math.divide_no_nan(statistic, tf.cast(thresholds, tf.float32)[:, None])


def prediction_health(loc, cov, source_loc, source_scale, thresholds, present=None,
                      sharpness: float = 2., frame_weights=None, start=False):
  """Scores, message weights and alarms of one frame's sources against its prediction.

  The weights of the robust filter: `prediction_weights` of the sources'
  `prediction_conflict` with the predicted belief N(loc, cov), the smaller of
  that and `frame_weights` where given. Where the prediction is the prior (a
  sequence's first frame, `start`), the conflict with it is undefined (0 / 0):
  no score, no alarm, and the present sources keep weight 1 (before
  `frame_weights`), so the first frame is the (robust) PoE.

  Args:
    loc: `[B, Dz]`; cov: `[B, Dz, Dz]` the predicted belief.
    source_loc, source_scale: `[M, B, Dz]` the sources' beliefs.
    thresholds: `[2, M]` tau of `prediction_weights`.
    present: optional `[M, B]` presence.
    sharpness: kappa.
    frame_weights: optional `[M, B]` weights in [0, 1] from the frame alone.
    start: True (every row), False, or a `[B]` bool tensor: rows at their first frame.

  Returns:
    `{"score": [M, B], "weight": [M, B], "alarm": [M, B] bool}`.
  """
  frame_present = None if present is None else tf.cast(present, tf.float32)
  if start is True:
    ones = tf.ones(tf.shape(source_loc)[:2])  # [M, B]
    weight = ones if frame_present is None else frame_present
    frame = {"score": tf.zeros_like(ones), "weight": weight,
             "alarm": tf.zeros_like(ones, tf.bool)}
  else:
    conflicts = prediction_conflict(loc, cov, source_loc, source_scale)  # [2, M, B]
    if start is not False:  # rows at their first frame: no conflict with the prior
      conflicts = tf.where(tf.cast(start, tf.bool), 0., conflicts)
    frame = prediction_weights(conflicts, thresholds, frame_present, sharpness)
  if frame_weights is not None:
    frame["weight"] = tf.minimum(frame["weight"], tf.cast(frame_weights, tf.float32))
  return frame


def _with_trend(health, trend, loc, cov, source_loc, source_scale, trend_thresholds,
                present, sharpness, start):
  """`health` of `prediction_health` with the trend test: the new trend `[M, B, Dz]`
  (zero where `start`: a stream's first frame has no prediction) under "trend", its
  scores under "trend_score", weights the smaller, alarms either. Each source's
  innovation is against the others weighted by `health`, leaving out those in the
  trend test's alarm on the previous frame (so a biased source, even half muted,
  does not make the others look biased)."""
  flagged = trend_scores(trend, trend_thresholds) > 1.  # [M, B]
  innovations = trend_innovations(loc, cov, source_loc, source_scale,
                                  tf.where(flagged, 0., health["weight"]))
  trend = trend_update(trend, innovations, present)  # [M, B, Dz]
  if start is True:
    trend = tf.zeros_like(trend)
  elif start is not False:
    trend = tf.where(tf.cast(start, tf.bool)[:, None], 0., trend)
  test = _score_weights(trend_scores(trend, trend_thresholds), present, sharpness)
  return {"score": health["score"], "weight": tf.minimum(health["weight"], test["weight"]),
          "alarm": health["alarm"] | test["alarm"], "trend_score": test["score"],
          "trend": trend}


def robust_filter_step(loc, cov, source_loc, source_scale, transition: Transition,
                       thresholds, present=None, sharpness: float = 2.,
                       frame_weights=None, start=None, trend=None, trend_thresholds=None):
  """One frame of `robust_filter_sequence` for B streams: predict, weigh, update.

  Streaming T frames through it, the filtered belief of each frame the state
  of the next, with `start` true on the first, gives `robust_filter_sequence`
  of the T frames (the same operations, frame by frame; but see Returns).

  Args:
    loc: `[B, Dz]`; cov: `[B, Dz, Dz]` the filtered belief of each stream's
      previous frame (ignored where `start`).
    source_loc, source_scale: `[M, B, Dz]` this frame's beliefs.
    transition: the latent `Transition`.
    thresholds: `[2, M]` tau of `prediction_weights`.
    present: optional `[M, B]` presence.
    sharpness: kappa.
    frame_weights: optional `[M, B]` weights in [0, 1] from the frame alone.
    start: optional `[B]` bool: streams at their first frame; their prediction
      is the prior N(0, I) and their sources get no prediction-conflict weight.
    trend: optional `[M, B, Dz]` the trend test's d of the previous frame
      (module docstring; zeros where a stream starts).
    trend_thresholds: optional `[M]` tau of the trend test (0: no test for
      that source); None: no trend test.

  Returns:
    `(filtered, predicted, health)`: `(loc [B, Dz], cov [B, Dz, Dz])` each, and
    `prediction_health`'s dict `[M, B]`, with `trend_thresholds` also the
    trend test's "trend_score" `[M, B]` and the new "trend" `[M, B, Dz]`. A
    stream without a message (no source present, or every weight 0) is its
    prediction, exactly (`robust_filter_sequence` updates it by no message,
    which rounds it).
  """
  source_loc = tf.convert_to_tensor(source_loc, tf.float32)
  source_scale = tf.convert_to_tensor(source_scale, tf.float32)
  pred_loc, pred_cov = predict(tf.convert_to_tensor(loc, tf.float32),
                               tf.convert_to_tensor(cov, tf.float32), transition)
  if start is None:
    start = False
  else:
    start = tf.cast(start, tf.bool)  # [B]
    pred_loc = tf.where(start[:, None], 0., pred_loc)  # the prior N(0, I)
    pred_cov = tf.where(start[:, None, None],
                        tf.eye(tf.shape(pred_loc)[-1], dtype=pred_cov.dtype), pred_cov)
  # A starting row's conflicts with the prior (0 / 0) are replaced by `prediction_health`.
  health = prediction_health(pred_loc, pred_cov, source_loc, source_scale, thresholds,
                             present, sharpness, frame_weights, start)
  if trend_thresholds is not None:
    trend = tf.zeros_like(source_loc) if trend is None else tf.convert_to_tensor(
        trend, tf.float32)
    health = _with_trend(health, trend, pred_loc, pred_cov, source_loc, source_scale,
                         trend_thresholds, present, sharpness, start)
  new_loc, new_cov = update(pred_loc, pred_cov, source_loc, source_scale, health["weight"])
  # No message: the prediction itself (the update's inverse and solve would round
  # it, by a 1e-3 relative error for a nearly singular Q).
  silent = tf.reduce_all(health["weight"] == 0., 0)  # [B]
  new_loc = tf.where(silent[:, None], pred_loc, new_loc)
  new_cov = tf.where(silent[:, None, None], pred_cov, new_cov)
  return (new_loc, new_cov), (pred_loc, pred_cov), health


def robust_filter_sequence(source_loc, source_scale, transition: Transition, thresholds,
                           present=None, sharpness: float = 2., frame_weights=None,
                           trend_thresholds=None):
  """`filter_sequence` whose messages are weighted by their conflict with the prediction.

  Frame 0 has no prediction but the prior: its present sources keep weight 1.
  With `frame_weights` (e.g. the per-frame robust weights of
  `robust.robust_weights`, from the sources' conflicts with each other), a
  message's weight is the smaller of the two: a source the other sources
  contradict is muted before it can pull the prediction its way, which the
  prediction alone cannot guarantee (a filter that follows a confident faulty
  source then mutes the healthy ones as conflicting with it).

  Args:
    source_loc, source_scale: `[T, M, B, Dz]`.
    transition: the latent `Transition`.
    thresholds: `[2, M]` tau of `prediction_weights` (calibrated on healthy
      sequences, e.g. by `calibrate_prediction_thresholds`).
    present: optional `[T, M, B]` presence.
    sharpness: kappa.
    frame_weights: optional `[T, M, B]` weights in [0, 1] from each frame alone.
    trend_thresholds: optional `[M]` tau of the trend test (module docstring;
      0: no test for that source); None: no trend test.

  Returns:
    `(filtered, predicted, health)`: the first two as `filter_sequence`'s,
    `health` `{"score", "weight": [T, M, B], "alarm": [T, M, B] bool}`, with
    `trend_thresholds` also "trend_score" `[T, M, B]` and "trend" `[T, M, B, Dz]`.
  """
  source_loc = tf.convert_to_tensor(source_loc, tf.float32)
  source_scale = tf.convert_to_tensor(source_scale, tf.float32)
  health = []

  def weigh(t, loc, cov):
    frame_present = None if present is None else present[t]
    frame = prediction_health(
        loc, cov, source_loc[t], source_scale[t], thresholds, frame_present, sharpness,
        None if frame_weights is None else frame_weights[t], start=t == 0)
    if trend_thresholds is not None:
      trend = health[-1]["trend"] if health else tf.zeros_like(source_loc[0])
      frame = _with_trend(frame, trend, loc, cov, source_loc[t], source_scale[t],
                          trend_thresholds, frame_present, sharpness, start=t == 0)
    health.append(frame)
    return frame["weight"]

  filtered, predicted = _run_filter(source_loc, source_scale, transition, weigh)
  return filtered, predicted, {k: tf.stack([h[k] for h in health]) for k in health[0]}


def calibrate_prediction_thresholds(conflicts, target_rate: float = 0.005):
  """Thresholds `[2, M]` at which healthy frames raise an alarm at most `target_rate` of the time.

  tau_m^(d)(q) is the q-quantile of c^(d) of source m over the healthy frames
  (`conflicts` `[2, M, N]`, from an unweighted filter); q is the smallest level
  whose fraction of frames with any alarm is <= target_rate (bisection, as
  `msnvi_tf.core.calibration`).
  """
  conflicts = np.asarray(conflicts, np.float64)  # [2, M, N]

  def thresholds_at(level):
    return np.maximum(np.quantile(conflicts, level, axis=-1), calibration.MIN_THRESHOLD)

  def rate_at(level):
    alarm = (conflicts / thresholds_at(level)[..., None]).max(0) > 1.  # [M, N]
    return calibration.false_alarm_rate(alarm)

  return thresholds_at(calibration.smallest_level(rate_at, target_rate)).astype(np.float32)


class FilterFit(NamedTuple):
  """What `fit_filter` learned from healthy sequences.

  Attributes:
    transition: the fitted `Transition`.
    thresholds: `[2, M]` float32 prediction-conflict thresholds tau.
    trend_thresholds: `[M]` float32 thresholds of the trend test.
    false_alarm_rate: fraction of the calibration frames (after each
      sequence's first) with any alarm of either test at those thresholds.
    num_fit_frames: frames the transition was fitted to.
    num_calibration_frames: frames the thresholds were calibrated on.
  """
  transition: Transition
  thresholds: np.ndarray
  trend_thresholds: np.ndarray
  false_alarm_rate: float
  num_fit_frames: int
  num_calibration_frames: int


def frame_poe(loc, scale, present=None) -> Tuple[tf.Tensor, tf.Tensor]:
  """The PoE (Eq. 3) of each frame's present sources, no filtering.

  Args:
    loc, scale: `[T, M, B, Dz]` beliefs of T frames.
    present: optional `[T, M, B]` presence mask (default: every source).

  Returns:
    `(loc, scale)`, each `[T, B, Dz]`.
  """
  loc = tf.convert_to_tensor(loc, tf.float32)
  scale = tf.convert_to_tensor(scale, tf.float32)
  frames = [integration.poe_stacked(loc[t], scale[t], None if present is None else present[t])
            for t in range(loc.shape[0])]
  return tf.stack([l for l, _ in frames]), tf.stack([s for _, s in frames])


def fit_filter(fit_sequences: Sequence[Tuple], calibration_sequences: Sequence[Tuple],
               target_rate: float = calibration.FALSE_ALARM_RATE) -> FilterFit:
  """The robust filter of a model from the beliefs of healthy sequences.

  1. `fit_transition` to the per-frame PoE means (Eq. 3, every source) of the
     `fit_sequences`;
  2. `calibrate_prediction_thresholds` at `target_rate` on the conflicts
     (`prediction_conflict`) of the `calibration_sequences`' sources with the
     predictions of the plain filter (`filter_sequence`, no weights), frames
     after each sequence's first, and
     the trend test's thresholds with them, at one common quantile level, so
     that the frames with an alarm of either test are at most `target_rate`,
     from the trend statistics g_m (module docstring) of the same predictions,
     every other source's message at full weight.

  Args:
    fit_sequences: `(loc, scale)` pairs, each `[T, M, B, Dz]`: the beliefs of
      B healthy sequences of T frames (every source present); T may differ
      between pairs.
    calibration_sequences: the same of other healthy sequences.
    target_rate: accepted fraction of healthy frames with any alarm.

  Returns:
    A `FilterFit`.

  Raises:
    ValueError: no sequence of at least 2 frames in either.
  """
  means = []  # [T, Dz] PoE means, one per sequence
  for loc, scale in fit_sequences:
    loc = tf.convert_to_tensor(loc, tf.float32)
    scale = tf.convert_to_tensor(scale, tf.float32)
    poe = frame_poe(loc, scale)[0].numpy()  # [T, B, Dz]
    means += [poe[:, b] for b in range(poe.shape[1])]
  transition = fit_transition(means)
  conflicts, trends = [], []  # [2, M, frames], [M, frames]
  for loc, scale in calibration_sequences:
    loc = tf.convert_to_tensor(loc, tf.float32)
    scale = tf.convert_to_tensor(scale, tf.float32)
    if loc.shape[0] < 2:
      continue
    _, (pred_loc, pred_cov) = filter_sequence(loc, scale, transition)
    trend = tf.zeros_like(loc[0])  # [M, B, Dz]
    for t in range(1, loc.shape[0]):
      trend = trend_update(trend, trend_innovations(pred_loc[t], pred_cov[t], loc[t],
                                                    scale[t]))
      trends.append(trend_scores(trend, tf.ones(loc.shape[1])).numpy())  # [M, B]
    frames, num_sources, batch, dim = loc[1:].shape
    rows = lambda v: tf.reshape(v, [frames * batch, *v.shape[2:]])  # [(T - 1) B, ...]
    to_rows = lambda v: tf.reshape(tf.transpose(v[1:], [1, 0, 2, 3]),
                                   [num_sources, frames * batch, dim])  # [M, (T - 1) B, Dz]
    conflicts.append(prediction_conflict(rows(pred_loc[1:]), rows(pred_cov[1:]),
                                         to_rows(loc), to_rows(scale)).numpy())
  if not conflicts:
    raise ValueError("fit_filter needs calibration sequences of at least 2 frames.")
  conflicts = np.concatenate(conflicts, -1)  # [2, M, N]
  trends = np.concatenate(trends, -1)  # [M, N], frames in the order of the conflicts'
  statistics = np.concatenate([conflicts, trends[None]])  # [3, M, N]: both tests
  both = calibrate_prediction_thresholds(statistics, target_rate)  # [3, M]
  thresholds, trend_thresholds = both[:2], both[2]
  alarm = (statistics / both[..., None]).max(0) > 1.  # [M, N]
  return FilterFit(transition, thresholds, trend_thresholds,
                   float(calibration.false_alarm_rate(alarm)),
                   sum(len(m) for m in means), conflicts.shape[-1])
