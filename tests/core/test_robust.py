"""The conflict-aware PoE (`core.robust`): PoE without conflict, a conflicting source
muted, masks and fallbacks, per-pair thresholds; a failed camera of a trained model."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf.core import beliefs as beliefs_lib
from msnvi_tf.core import integration
from msnvi_tf.core import robust
from msnvi_tf.data import pendulum

from conftest import make_pendulum_config


def _beliefs(locs, scales):
  """`{s_i: N(loc_i, diag(scale_i^2))}` with batch shape [1]."""
  return {f"s{i}": beliefs_lib.make_belief(np.array([loc], np.float32),
                                            np.array([scale], np.float32))
          for i, (loc, scale) in enumerate(zip(locs, scales))}


def test_robust_equals_poe_without_conflict():
  beliefs = _beliefs([[0.5, -0.2], [0.55, -0.25], [0.45, -0.15]],
                     [[0.2, 0.3], [0.25, 0.3], [0.2, 0.2]])
  loc, scale = beliefs_lib.stack_beliefs(beliefs, list(beliefs))
  np.testing.assert_array_equal(robust.robust_weights(loc, scale).numpy(), 1.)
  q_rob = integration.integrate(beliefs, "robust")
  q_poe = integration.poe(beliefs)
  np.testing.assert_allclose(q_rob.mean().numpy(), q_poe.mean().numpy(), rtol=1e-6)
  np.testing.assert_allclose(q_rob.stddev().numpy(), q_poe.stddev().numpy(), rtol=1e-6)


@pytest.mark.parametrize("failed_scale", [0.1, 0.8])
def test_robust_mutes_a_conflicting_source(failed_scale):
  # s2 fails: confident (0.1) or vague (0.8) and far from the two agreeing sources.
  beliefs = _beliefs([[1., 0.], [1.05, 0.05], [-1., 1.]],
                     [[0.2, 0.2], [0.2, 0.2], [failed_scale] * 2])
  loc, scale = beliefs_lib.stack_beliefs(beliefs, list(beliefs))
  weights = robust.robust_weights(loc, scale).numpy()[:, 0]
  np.testing.assert_array_equal(weights[:2], 1.)
  assert weights[2] < 0.1
  q_rob = integration.integrate(beliefs, "robust")
  q_healthy = integration.poe(beliefs, ["s0", "s1"])
  q_all = integration.poe(beliefs)
  error = np.abs(q_rob.mean().numpy() - q_healthy.mean().numpy()).max()
  assert error < 0.03
  assert error < 0.2 * np.abs(q_all.mean().numpy() - q_healthy.mean().numpy()).max()


def test_robust_mask_and_fallbacks():
  beliefs = _beliefs([[1., 0.], [1.05, 0.05], [-1., 1.]], [[0.2, 0.2]] * 3)
  loc, scale = beliefs_lib.stack_beliefs(beliefs, list(beliefs))  # [3, 1, 2]
  # Masking the failed source out is PoE of the others.
  masked, _, health = robust.robust_stacked(loc, scale, tf.constant([[1.], [1.], [0.]]))
  np.testing.assert_array_equal(health["weight"].numpy()[:, 0], [1., 1., 0.])
  np.testing.assert_allclose(masked.numpy(), integration.poe(beliefs, ["s0", "s1"]).mean(),
                             rtol=1e-6)
  # Two conflicting sources: the conflict cannot be attributed, both are kept (PoE).
  pair, _, health = robust.robust_stacked(loc[1:], scale[1:])
  np.testing.assert_array_equal(health["weight"].numpy(), 1.)
  np.testing.assert_allclose(pair.numpy(), integration.poe(beliefs, ["s1", "s2"]).mean(),
                             rtol=1e-6)
  # Every source conflicting with every other: the least conflicting keeps weight 1.
  spread = _beliefs([[1., 0.], [-1., 0.], [0., 1.5]], [[0.2, 0.2], [0.3, 0.3], [0.5, 0.5]])
  loc3, scale3 = beliefs_lib.stack_beliefs(spread, list(spread))
  weights = robust.robust_weights(loc3, scale3).numpy()[:, 0]
  assert weights.max() == 1. and weights.min() < 1.
  # A single present source is integrated alone.
  single, _, _ = robust.robust_stacked(loc, scale, tf.constant([[0.], [0.], [1.]]))
  np.testing.assert_allclose(single.numpy(), loc[2].numpy(), rtol=1e-5)


def _stacked(num=4):
  """Beliefs `[3, B, 2]`: sources 0 and 1 agree, source 2 sits elsewhere."""
  loc = np.zeros((3, num, 2), np.float32)
  loc[0] = 0.5
  loc[1] = 0.52
  loc[2] = -0.3
  scale = np.full((3, num, 2), 0.2, np.float32)
  return tf.constant(loc), tf.constant(scale)


def test_unit_thresholds_are_the_fixed_rule_and_a_matrix_is_per_pair():
  loc, scale = _stacked()
  fixed = robust.sensor_health_stacked(loc, scale)
  ones = robust.sensor_health_stacked(loc, scale, thresholds=tf.ones([3, 3]))
  for key in fixed:
    np.testing.assert_array_equal(fixed[key].numpy(), ones[key].numpy())
  # Source 2 conflicts with both others: only it raises the alarm and is muted.
  np.testing.assert_array_equal(fixed["alarm"].numpy()[:, 0], [False, False, True])
  assert fixed["weight"].numpy()[2, 0] < 0.1
  # Thresholds above its conflicts (here 2x) accept source 2 again: the PoE.
  score = fixed["score"].numpy()[2, 0]
  tau = np.ones((3, 3), np.float32)
  tau[2, :2] = tau[:2, 2] = 2. * score
  relaxed = robust.sensor_health_stacked(loc, scale, thresholds=tau)
  assert not relaxed["alarm"].numpy().any()
  np.testing.assert_array_equal(relaxed["weight"].numpy(), 1.)
  np.testing.assert_allclose(relaxed["score"].numpy()[2], 0.5, rtol=1e-5)


def test_absent_sources_have_no_alarm_and_no_weight():
  loc, scale = _stacked(2)
  mask = tf.constant([[1., 1.], [1., 0.], [1., 1.]])
  health = robust.sensor_health_stacked(loc, scale, mask)
  assert not health["alarm"].numpy()[1, 1] and health["weight"].numpy()[1, 1] == 0.
  assert np.isinf(health["score"].numpy()[1, 1])


@pytest.fixture(scope="module")
def config():
  return make_pendulum_config()


@pytest.fixture(scope="module")
def trained(config):
  """A pendulum model trained briefly (400 steps) with a large learning rate."""
  keras.utils.set_random_seed(0)
  model = architectures.build_model(config)
  model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
  train, _ = pendulum.make_datasets(config)
  iterator = iter(train)

  @tf.function
  def train_steps(num):
    for _ in tf.range(num):
      model.train_step(next(iterator))

  train_steps(tf.constant(400))
  return model


@pytest.mark.slow
def test_conflict_of_failed_sensor_rises_above_healthy_pairs(trained, config):
  rig = pendulum.Rig.from_config(config)
  batch, _ = pendulum.make_sequence(rig, 180, seed=11, fault="noise")  # fails at 120
  x = {k: tf.constant(v) for k, v in batch.items()}
  c = trained.conflict(x).numpy()  # [T, 3, 3]
  before, after = c[:120], c[120:]
  healthy_after = np.median(np.maximum(after[:, 1, 2], after[:, 2, 1]))
  healthy_before = np.median(np.maximum(before[:, 0, 1], before[:, 1, 0]))
  for j in (1, 2):
    failed = np.median(np.maximum(after[:, 0, j], after[:, j, 0]))
    assert failed > 3. * healthy_after
    assert failed > 3. * healthy_before
  # model.integrate(method="robust") is the registered robust integration and
  # mutes the failed camera.
  beliefs = trained.encode(x)
  q = trained.integrate(beliefs, method="robust")
  loc, scale = beliefs_lib.stack_beliefs(beliefs, trained.sources)
  loc_rob, _, health = robust.robust_stacked(loc, scale)
  np.testing.assert_allclose(q.mean().numpy(), loc_rob.numpy(), rtol=1e-6)
  assert np.median(health["weight"].numpy()[0, 120:]) < 0.5
  assert np.median(health["weight"].numpy()[1:, 120:]) == 1.
