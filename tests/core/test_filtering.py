"""The latent Kalman filter and RTS smoother against the exact joint posterior (issue 27)."""
import numpy as np
import pytest
import tensorflow as tf

from linear_gaussian import LinearGaussian
from msnvi_tf.core import filtering
from msnvi_tf.core import integration

NUM_SOURCES, LATENT, FRAMES, BATCH = 3, 2, 6, 4


def _transition(seed=0):
  rng = np.random.default_rng(seed)
  angle = 0.3
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  noise = rng.normal(size=(LATENT, LATENT))
  return 0.95 * rotation, rng.normal(0., 0.1, LATENT), 0.05 * np.eye(LATENT) + 0.01 * noise @ noise.T


def _simulate(observer, matrix, offset, noise_cov, seed):
  """States `[T, B, Dz]` of the linear system from N(0, I) and observations `[T, M, B, Dz]`."""
  rng = np.random.default_rng(seed)
  z = [rng.normal(size=(BATCH, LATENT))]
  for _ in range(FRAMES - 1):
    z.append(z[-1] @ matrix.T + offset
             + rng.multivariate_normal(np.zeros(LATENT), noise_cov, BATCH))
  z = np.stack(z)
  noise = rng.normal(size=(FRAMES, NUM_SOURCES, BATCH, LATENT))
  x = observer.a[None, :, None] * z[:, None] + observer.b[None, :, None] + (
      observer.sigma[None, :, None] * noise)
  return z, x


def _exact_posterior(observer, x, present, matrix, offset, noise_cov, frames):
  """Mean `[B, t, Dz]` and covariance `[B, t*Dz, t*Dz]` of z_{1:t} given the present
  observations of frames < `frames`, from the joint Gaussian (float64)."""
  q_inv = np.linalg.inv(noise_cov)
  size = frames * LATENT
  block = lambda t: slice(t * LATENT, (t + 1) * LATENT)
  precision = np.zeros((size, size))
  eta = np.zeros((BATCH, size))
  precision[block(0), block(0)] += np.eye(LATENT)  # z_1 ~ N(0, I)
  for t in range(1, frames):
    precision[block(t), block(t)] += q_inv
    precision[block(t - 1), block(t - 1)] += matrix.T @ q_inv @ matrix
    precision[block(t), block(t - 1)] -= q_inv @ matrix
    precision[block(t - 1), block(t)] -= matrix.T @ q_inv
    eta[:, block(t)] += q_inv @ offset
    eta[:, block(t - 1)] -= matrix.T @ q_inv @ offset
  precisions = np.repeat(precision[None], BATCH, 0)  # [B, size, size]
  for t in range(frames):
    for m in range(NUM_SOURCES):
      a, b, var = observer.a[m], observer.b[m], observer.sigma[m] ** 2
      on = present[t, m][:, None]  # [B, 1]
      idx = np.arange(t * LATENT, (t + 1) * LATENT)
      precisions[:, idx, idx] += on * a ** 2 / var
      eta[:, block(t)] += on * a * (x[t, m] - b) / var
  cov = np.linalg.inv(precisions)
  mean = np.einsum("bij,bj->bi", cov, eta)
  return mean.reshape(BATCH, frames, LATENT), cov


@pytest.fixture(scope="module")
def sequence():
  observer = LinearGaussian(NUM_SOURCES, LATENT, seed=11)
  matrix, offset, noise_cov = _transition()
  _, x = _simulate(observer, matrix, offset, noise_cov, seed=12)
  # Exact single-source posteriors: each message q_m / p(z) is p(x_m | z).
  beliefs = [[observer.posterior(x[t], [m]) for m in range(NUM_SOURCES)]
             for t in range(FRAMES)]
  loc = np.array([[b[0] for b in frame] for frame in beliefs], np.float32)
  scale = np.array([[b[1] for b in frame] for frame in beliefs], np.float32)
  present = np.random.default_rng(13).random((FRAMES, NUM_SOURCES, BATCH)) > 0.4
  present[2] = False  # a frame with every source missing
  transition = filtering.Transition(*(tf.constant(v, tf.float32)
                                      for v in (matrix, offset, noise_cov)))
  return dict(observer=observer, x=x, loc=loc, scale=scale,
              present=present.astype(np.float32), transition=transition,
              system=(matrix, offset, noise_cov))


def test_filter_is_the_exact_posterior_of_the_frames_so_far(sequence):
  (loc, cov), _ = filtering.filter_sequence(sequence["loc"], sequence["scale"],
                                            sequence["transition"], sequence["present"])
  for t in range(FRAMES):
    mean, joint_cov = _exact_posterior(sequence["observer"], sequence["x"],
                                       sequence["present"], *sequence["system"], t + 1)
    np.testing.assert_allclose(loc[t], mean[:, t], rtol=1e-4, atol=1e-4, err_msg=f"t={t}")
    last = slice(t * LATENT, (t + 1) * LATENT)
    np.testing.assert_allclose(cov[t], joint_cov[:, last, last], rtol=1e-4, atol=1e-5)


def test_smoother_is_the_exact_posterior_given_the_whole_sequence(sequence):
  filtered, predicted = filtering.filter_sequence(
      sequence["loc"], sequence["scale"], sequence["transition"], sequence["present"])
  loc, cov = filtering.smooth(filtered, predicted, sequence["transition"])
  mean, joint_cov = _exact_posterior(sequence["observer"], sequence["x"],
                                     sequence["present"], *sequence["system"], FRAMES)
  for t in range(FRAMES):
    block = slice(t * LATENT, (t + 1) * LATENT)
    np.testing.assert_allclose(loc[t], mean[:, t], rtol=1e-4, atol=1e-4, err_msg=f"t={t}")
    np.testing.assert_allclose(cov[t], joint_cov[:, block, block], rtol=1e-4, atol=1e-5)
  # Smoothing never widens the filtered belief (positive semi-definite difference).
  gap = np.linalg.eigvalsh(filtered[1].numpy() - cov.numpy())
  assert gap.min() > -1e-5


def test_first_frame_is_the_poe_and_a_frame_without_sources_the_prediction(sequence):
  (loc, cov), (pred_loc, pred_cov) = filtering.filter_sequence(
      sequence["loc"], sequence["scale"], sequence["transition"], sequence["present"])
  poe_loc, poe_scale = integration.poe_stacked(sequence["loc"][0], sequence["scale"][0],
                                               sequence["present"][0])
  np.testing.assert_allclose(loc[0], poe_loc, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cov[0], tf.linalg.diag(tf.square(poe_scale)), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(loc[2], pred_loc[2], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(cov[2], pred_cov[2], rtol=1e-5, atol=1e-6)
  # Prediction through the missing frame: wider than the filtered belief before it.
  assert np.all(np.linalg.eigvalsh(pred_cov[2].numpy() - cov[1].numpy()) > 0.)


def test_fit_transition_recovers_a_known_linear_system():
  matrix, offset, noise_cov = _transition(seed=3)
  rng = np.random.default_rng(4)
  sequences = []
  for _ in range(20):
    z = [rng.normal(size=LATENT)]
    for _ in range(499):
      z.append(matrix @ z[-1] + offset + rng.multivariate_normal(np.zeros(LATENT), noise_cov))
    sequences.append(np.array(z))
  fitted = filtering.fit_transition(sequences)
  np.testing.assert_allclose(fitted.matrix, matrix, atol=0.02)
  np.testing.assert_allclose(fitted.offset, offset, atol=0.02)
  np.testing.assert_allclose(fitted.noise_cov, noise_cov, atol=0.005)
  with pytest.raises(ValueError, match="at least 2 frames"):
    filtering.fit_transition([np.zeros((1, LATENT))])


def test_prediction_weights_mute_the_dissenter_and_keep_the_best_source():
  # Scores 0.5 (agrees), 4 (conflicts), 8 (conflicts more) of three sources; one absent.
  conflicts = tf.constant([[[0.5, 0.5], [4., 2.], [8., 8.]],
                           [[0.1, 0.1], [1., 1.], [1., 1.]]])  # [2, M, B]
  health = filtering.prediction_weights(conflicts, tf.ones([2, 3]),
                                        present=[[1., 1.], [1., 1.], [1., 0.]])
  np.testing.assert_allclose(health["weight"], [[1., 1.], [1 / 16, 0.25], [1 / 64, 0.]])
  np.testing.assert_array_equal(health["alarm"], [[False, False], [True, True],
                                                  [True, False]])
  # Every source conflicting: the one closest to the prediction keeps full weight.
  everyone = filtering.prediction_weights(conflicts + 5., tf.ones([2, 3]))
  np.testing.assert_allclose(everyone["weight"][0], 1.)


def test_robust_filter_with_unreachable_thresholds_is_the_plain_filter(sequence):
  plain, _ = filtering.filter_sequence(sequence["loc"], sequence["scale"],
                                       sequence["transition"], sequence["present"])
  robust, _, health = filtering.robust_filter_sequence(
      sequence["loc"], sequence["scale"], sequence["transition"],
      np.full((2, NUM_SOURCES), 1e30, np.float32), sequence["present"])
  np.testing.assert_allclose(robust[0], plain[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(health["weight"], sequence["present"])
  assert not health["alarm"].numpy().any()


def test_calibrated_thresholds_keep_healthy_alarms_at_the_target_rate():
  rng = np.random.default_rng(0)
  conflicts = rng.gamma(2., size=(2, 3, 20_000)) * np.array([1., 3., 10.])[None, :, None]
  thresholds = filtering.calibrate_prediction_thresholds(conflicts, 0.01)
  alarm = (conflicts / thresholds[..., None]).max(0) > 1.
  assert 0.009 <= alarm.any(0).mean() <= 0.01
  # Per source and direction: the thresholds follow each one's scale.
  assert thresholds[0, 2] > thresholds[0, 1] > thresholds[0, 0]


def test_prediction_conflict_is_eq_2_with_the_prediction_as_the_other_belief(sequence):
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  tfd = tfp.distributions
  _, (loc, cov) = filtering.filter_sequence(sequence["loc"], sequence["scale"],
                                            sequence["transition"])
  got = filtering.prediction_conflict(loc[3], cov[3], sequence["loc"][3],
                                      sequence["scale"][3])
  pred = tfd.MultivariateNormalFullCovariance(loc[3], cov[3])
  beliefs = tfd.MultivariateNormalDiag(sequence["loc"][3], sequence["scale"][3])
  prior = tfd.MultivariateNormalDiag(tf.zeros(LATENT), tf.ones(LATENT))
  np.testing.assert_allclose(got[0], tfd.kl_divergence(pred, beliefs)
                             / tfd.kl_divergence(pred, prior), rtol=1e-4)
  np.testing.assert_allclose(got[1], tfd.kl_divergence(beliefs, pred)
                             / tfd.kl_divergence(beliefs, prior), rtol=1e-4)


def test_streaming_robust_filter_step_is_robust_filter_sequence(sequence):
  thresholds = np.full((2, NUM_SOURCES), 0.5, np.float32)
  frame_weights = np.random.default_rng(5).uniform(
      0.2, 1., (FRAMES, NUM_SOURCES, BATCH)).astype(np.float32)
  trend_thresholds = np.array([0.02, 0., 0.05], np.float32)  # source 1 untested
  args = (sequence["loc"], sequence["scale"], sequence["transition"], thresholds)
  filtered, predicted, health = filtering.robust_filter_sequence(
      *args, sequence["present"], frame_weights=frame_weights,
      trend_thresholds=trend_thresholds)
  assert health["alarm"].numpy().any()  # the prediction weights take part
  assert (health["trend_score"].numpy() > 1.).any()  # and the trend test
  np.testing.assert_array_equal(health["trend_score"][:, 1], 0.)
  # Each stream's state before its first frame is ignored (start): here garbage.
  state = (tf.fill([BATCH, LATENT], 7.), tf.fill([BATCH, LATENT, LATENT], 7.))
  trend = tf.fill([NUM_SOURCES, BATCH, LATENT], 7.)
  for t in range(FRAMES):
    state, step_predicted, step_health = filtering.robust_filter_step(
        *state, sequence["loc"][t], sequence["scale"][t], sequence["transition"],
        thresholds, sequence["present"][t], frame_weights=frame_weights[t],
        start=tf.fill([BATCH], t == 0), trend=trend, trend_thresholds=trend_thresholds)
    trend = step_health["trend"]
    for got, want, key in ((state, filtered, "filtered"), (step_predicted, predicted,
                                                           "predicted")):
      np.testing.assert_allclose(got[0], want[0][t], rtol=1e-5, atol=1e-6, err_msg=key)
      np.testing.assert_allclose(got[1], want[1][t], rtol=1e-5, atol=1e-6, err_msg=key)
    for key in ("weight", "score", "trend_score", "trend"):
      np.testing.assert_allclose(step_health[key], health[key][t], rtol=1e-5, atol=1e-6,
                                 err_msg=key)
    np.testing.assert_array_equal(step_health["alarm"], health["alarm"][t])
  # Frame 2 has no source: the step returns the prediction itself.
  (loc, cov), (pred_loc, pred_cov), _ = filtering.robust_filter_step(
      filtered[0][1], filtered[1][1], sequence["loc"][2], sequence["scale"][2],
      sequence["transition"], thresholds, sequence["present"][2])
  np.testing.assert_array_equal(loc, pred_loc)
  np.testing.assert_array_equal(cov, pred_cov)


def test_fit_filter_is_the_transition_of_the_poe_means_and_thresholds_of_the_plain_filter(
    sequence):
  # What experiments/pendulum/latent_filter computed inline, one sequence at a time.
  rng = np.random.default_rng(6)
  pairs = [(sequence["loc"][:, :, b:b + 1] + rng.normal(0., 0.1, (FRAMES, NUM_SOURCES, 1,
                                                                    LATENT)).astype(np.float32),
            sequence["scale"][:, :, b:b + 1]) for b in range(BATCH)]
  fit, calibration = pairs[:2], pairs[2:]
  means = [tf.concat([integration.poe_stacked(loc[t], scale[t])[0]
                      for t in range(FRAMES)], 0).numpy() for loc, scale in fit]
  transition = filtering.fit_transition(means)
  conflicts = []
  for loc, scale in calibration:
    _, (pred_loc, pred_cov) = filtering.filter_sequence(loc, scale, transition)
    sources_first = lambda v: tf.transpose(v[1:, :, 0], [1, 0, 2])
    conflicts.append(filtering.prediction_conflict(
        pred_loc[1:, 0], pred_cov[1:, 0], sources_first(loc),
        sources_first(scale)).numpy())
  result = filtering.fit_filter(fit, calibration, 0.1)
  for got, want in zip(result.transition, transition):
    np.testing.assert_array_equal(got, want)
  assert (result.num_fit_frames, result.num_calibration_frames) == (
      2 * FRAMES, 2 * (FRAMES - 1))
  # The trend test's thresholds: its statistics g of the same predictions.
  statistics = []
  for loc, scale in calibration:
    _, (pred_loc, pred_cov) = filtering.filter_sequence(loc, scale, transition)
    trend = np.zeros((NUM_SOURCES, 1, LATENT), np.float32)
    for t in range(1, FRAMES):
      innovations = filtering.trend_innovations(pred_loc[t], pred_cov[t], loc[t], scale[t])
      trend = (1. - filtering.TREND_RATE) * trend + filtering.TREND_RATE * innovations
      statistics.append(np.sum(np.square(trend), -1) * (2. - filtering.TREND_RATE)
                        / filtering.TREND_RATE)  # [M, 1]
  # Both tests calibrated together: one quantile level, alarms of either at the target.
  both = filtering.calibrate_prediction_thresholds(np.concatenate(
      [np.concatenate(conflicts, -1), np.concatenate(statistics, -1)[None]]), 0.1)
  np.testing.assert_allclose(result.thresholds, both[:2], rtol=1e-5)
  np.testing.assert_allclose(result.trend_thresholds, both[2], rtol=1e-5)
  assert 0. <= result.false_alarm_rate <= 0.1
  # Sequences side by side (B = 2) are the same sequences (up to rounding).
  side_by_side = filtering.fit_filter(
      [tuple(np.concatenate(v, 2) for v in zip(*fit))],
      [tuple(np.concatenate(v, 2) for v in zip(*calibration))], 0.1)
  np.testing.assert_allclose(side_by_side.transition.matrix, transition.matrix, rtol=1e-5)
  np.testing.assert_allclose(side_by_side.thresholds, result.thresholds, rtol=1e-4)


# The trend test (issue 27): a bias that lasts over frames.
def _numpy_innovations(loc, cov, source_loc, source_scale, weights):
  """Float64 reference of `trend_innovations`, one source and stream at a time."""
  num_sources, batch, dim = source_loc.shape
  out = np.zeros((num_sources, batch, dim))
  for b in range(batch):
    prior_precision = np.linalg.inv(cov[b])
    for m in range(num_sources):
      precision, eta = prior_precision.copy(), prior_precision @ loc[b]
      for j in range(num_sources):
        if j != m:
          precision += weights[j, b] * np.diag(source_scale[j, b] ** -2. - 1.)
          eta += weights[j, b] * source_loc[j, b] / source_scale[j, b] ** 2
      others = np.linalg.inv(precision)
      spread = others + np.diag(source_scale[m, b] ** 2)
      out[m, b] = np.linalg.solve(np.linalg.cholesky(spread), source_loc[m, b] - others @ eta)
  return out


def test_trend_innovations_are_whitened_against_the_prediction_updated_by_the_others():
  rng = np.random.default_rng(20)
  factor = rng.normal(0., 0.4, (BATCH, LATENT, LATENT))
  cov = factor @ factor.transpose(0, 2, 1) + 0.1 * np.eye(LATENT)
  loc = rng.normal(size=(BATCH, LATENT))
  source_loc = rng.normal(size=(NUM_SOURCES, BATCH, LATENT))
  source_scale = rng.uniform(0.2, 0.8, (NUM_SOURCES, BATCH, LATENT))
  weights = rng.uniform(0., 1., (NUM_SOURCES, BATCH))
  weights[1, 0] = 0.
  got = filtering.trend_innovations(*(tf.constant(v, tf.float32) for v in (
      loc, cov, source_loc, source_scale, weights)))
  np.testing.assert_allclose(got, _numpy_innovations(loc, cov, source_loc, source_scale,
                                                     weights), rtol=1e-4, atol=1e-5)


def _informative_sequences(streams, frames, seed, bias=0.):
  """Beliefs `[T, M, B, Dz]` N(z + sigma noise, sigma^2) of the linear system's states,
  narrow (sigma 0.05 - 0.1, so each belief is nearly its message q_m / p), source 0
  shifted by `bias` (in its sigma) from frame T / 2 on; and the states `[T, B, Dz]`."""
  matrix, offset, noise_cov = _transition()
  rng = np.random.default_rng(seed)
  z = [rng.normal(size=(streams, LATENT))]
  for _ in range(frames - 1):
    z.append(z[-1] @ matrix.T + offset
             + rng.multivariate_normal(np.zeros(LATENT), noise_cov, streams))
  z = np.stack(z)  # [T, B, Dz]
  sigma = np.array([0.05, 0.07, 0.1])[None, :, None, None] * np.ones((1, 1, streams, LATENT))
  loc = z[:, None] + sigma * rng.normal(size=(frames, NUM_SOURCES, streams, LATENT))
  loc[frames // 2:, 0] += bias * sigma[0, 0]
  transition = filtering.Transition(*(tf.constant(v, tf.float32)
                                      for v in (matrix, offset, noise_cov)))
  scale = np.broadcast_to(sigma, loc.shape)
  return loc.astype(np.float32), scale.astype(np.float32), transition, z


def test_trend_innovations_of_a_correct_model_are_white():
  loc, scale, transition, _ = _informative_sequences(200, 20, seed=21)
  _, (pred_loc, pred_cov) = filtering.filter_sequence(loc, scale, transition)
  innovations = np.concatenate([filtering.trend_innovations(
      pred_loc[t], pred_cov[t], loc[t], scale[t]).numpy() for t in range(1, 20)], 1)
  for m in range(NUM_SOURCES):  # 3,800 draws each
    np.testing.assert_allclose(innovations[m].mean(0), 0., atol=0.08)
    np.testing.assert_allclose(np.cov(innovations[m].T), np.eye(LATENT), atol=0.1)


def test_trend_test_mutes_a_lasting_bias_that_frames_alone_hardly_flag():
  fit = filtering.fit_filter([_informative_sequences(8, 40, seed=22)[:2]],
                             [_informative_sequences(50, 40, seed=23)[:2]], 0.005)
  loc, scale, _, z = _informative_sequences(50, 40, seed=24, bias=2.)
  args = (loc, scale, fit.transition, fit.thresholds)
  without, _, health_without = filtering.robust_filter_sequence(*args)
  with_trend, _, health = filtering.robust_filter_sequence(
      *args, trend_thresholds=fit.trend_thresholds)
  late = slice(30, 40)  # 10 to 20 frames after the bias began
  # Frame by frame the biased source is rarely flagged; the trend test flags it on
  # most late frames and mutes it, and rarely touches the healthy ones.
  assert health_without["alarm"].numpy()[late, 0].mean() < 0.3
  assert health["alarm"].numpy()[late, 0].mean() > 0.8
  assert np.median(health["weight"].numpy()[late, 0]) < 0.5
  assert health["alarm"].numpy()[late, 1:].mean() < 0.05
  assert health["alarm"].numpy()[:20].mean() < 0.05  # before the bias
  error = lambda filtered: np.sqrt(np.mean((filtered[0].numpy()[late] - z[late]) ** 2))
  assert error(with_trend) < 0.85 * error(without)


def test_untested_sources_and_absent_frames_leave_the_filter_and_the_trend_alone(sequence):
  args = (sequence["loc"], sequence["scale"], sequence["transition"],
          np.full((2, NUM_SOURCES), 0.5, np.float32), sequence["present"])
  plain = filtering.robust_filter_sequence(*args)
  untested = filtering.robust_filter_sequence(
      *args, trend_thresholds=np.zeros(NUM_SOURCES, np.float32))
  for got, want in zip(tf.nest.flatten(untested[:2]), tf.nest.flatten(plain[:2])):
    np.testing.assert_array_equal(got, want)
  for key in ("weight", "alarm", "score"):
    np.testing.assert_array_equal(untested[2][key], plain[2][key])
  np.testing.assert_array_equal(untested[2]["trend_score"], 0.)
  # An absent source keeps its trend; a present one moves it by alpha e.
  trend = untested[2]["trend"].numpy()  # [T, M, B, Dz]
  absent = sequence["present"][1:] == 0.  # [T - 1, M, B]
  np.testing.assert_array_equal(trend[1:][absent], trend[:-1][absent])
  assert (trend[1:][~absent] != trend[:-1][~absent]).all()
