"""The fused Adam: the same trajectory as Keras' Adam, in one kernel per variable."""
import keras
import pytest
import numpy as np
import tensorflow as tf

import configs
from msnvi_tf.runtime import optimizers


def _trajectory(optimizer, steps=5):
  rng = np.random.default_rng(0)
  variables = [keras.Variable(rng.normal(size=(4, 3)).astype(np.float32)),
               keras.Variable(rng.normal(size=(3,)).astype(np.float32))]
  optimizer.build(variables)
  apply = tf.function(lambda grads: optimizer.apply(grads, variables))
  for _ in range(steps):
    grads = [tf.constant(rng.normal(size=v.shape) * 10., tf.float32) for v in variables]
    apply(grads)
  slots = [v.numpy() for v in optimizer.variables]
  return [v.numpy() for v in variables], slots


def test_fused_adam_follows_keras_adam_and_keeps_its_slot_variables():
  kwargs = dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
  fused, fused_slots = _trajectory(optimizers.Adam(**kwargs))
  reference, reference_slots = _trajectory(keras.optimizers.Adam(**kwargs))
  start, _ = _trajectory(keras.optimizers.Adam(**kwargs), steps=0)
  assert not np.allclose(fused[0], start[0])  # it moved
  for got, expected in zip(fused + fused_slots, reference + reference_slots):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert len(fused_slots) == len(reference_slots)  # checkpoints are interchangeable


def test_fused_adam_under_loss_scaling_applies_unscaled_steps():
  fused = keras.optimizers.LossScaleOptimizer(optimizers.Adam(0.01))
  reference = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01))
  got, _ = _trajectory(fused, steps=3)
  expected, _ = _trajectory(reference, steps=3)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_warmup_cosine_schedule_rises_to_the_peak_then_decays_to_the_floor():
  config = configs.get_config("mnist_tb", "fast")
  schedule = optimizers.learning_rate(config)
  peak, warmup = config.learning_rate, config.warmup_steps
  end = warmup + config.decay_steps
  values = [float(schedule(s)) for s in (0, warmup // 2, warmup, end, 2 * end)]
  np.testing.assert_allclose(values, [0., peak / 2, peak, peak * config.final_lr_fraction,
                                      peak * config.final_lr_fraction], rtol=1e-5)
  mid = float(schedule(warmup + config.decay_steps // 2))
  assert peak * config.final_lr_fraction < mid < peak


def test_constant_schedule_is_the_papers_learning_rate():
  config = configs.get_config("mnist_tb")
  assert optimizers.learning_rate(config) == 5e-5


def test_unknown_variant_and_schedule_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown variant 'fastest'.*fast"):
    configs.get_config("mnist_tb", "fastest")
  with pytest.raises(ValueError, match="Unknown lr_schedule 'cyclic'"):
    optimizers.learning_rate(configs.get_config("toy").override(["lr_schedule=cyclic"]))
