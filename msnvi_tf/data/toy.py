"""Toy data (Sec. 5.1): a mixture of 8 bivariate Gaussians on the unit circle.

Component means sit at angles 2 pi k / C on the unit circle, each with std 0.1
in both axes. Source "x" perceives the first coordinate, source "y" the second;
the same two coordinates are the targets of the generative model.
"""
import numpy as np
import tensorflow as tf

from msnvi_tf import data as data_lib

__all__ = ["component_means", "sample", "test_points", "make_datasets", "SOURCES"]

SOURCES = ("x", "y")


def component_means(num_components=8, rotation_deg=0.):
  """`[C, 2]` means on the unit circle at angles 2 pi k / C + rotation."""
  angles = 2. * np.pi * np.arange(num_components) / num_components
  angles = angles + np.deg2rad(rotation_deg)
  return np.stack([np.cos(angles), np.sin(angles)], -1).astype(np.float32)


def test_points(num_components=8, rotation_deg=2.):
  """The 8 test points of Fig. 2: component means rotated by 2 degrees."""
  points = component_means(num_components, rotation_deg)
  return {"x": points[:, :1], "y": points[:, 1:]}


def sample(num, seed, num_components=8, std=0.1):
  """Draws `num` points; deterministic in `seed`.

  Returns:
    `({"x": [N, 1], "y": [N, 1]} float32, component index [N] int64)`.
  """
  rng = np.random.default_rng(seed)
  component = rng.integers(num_components, size=num)
  points = component_means(num_components)[component]
  points = points + std * rng.standard_normal(points.shape).astype(np.float32)
  return {"x": points[:, :1], "y": points[:, 1:]}, component


def make_datasets(config):
  """Train (shuffled, repeated, batched) and eval datasets of the toy mixture."""
  train, _ = sample(config.train_size, config.seed, config.num_components,
                    config.component_std)
  test, _ = sample(config.eval_size, config.seed + 1_000_003,
                   config.num_components, config.component_std)
  data_lib.check_finite(train, "toy train data")
  train_ds = (tf.data.Dataset.from_tensor_slices(train)
              .shuffle(min(config.train_size, 50_000), seed=config.seed)
              .repeat()
              .batch(config.batch_size, drop_remainder=True)
              .prefetch(tf.data.AUTOTUNE))
  eval_ds = (tf.data.Dataset.from_tensor_slices(test)
             .batch(config.eval_batch_size)
             .prefetch(tf.data.AUTOTUNE))
  return train_ds, eval_ds
