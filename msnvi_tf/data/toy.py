"""Toy data (Sec. 5.1): a mixture of 8 bivariate Gaussians on the unit circle.

Component means sit at angles 2 pi k / C on the unit circle, each with std 0.1
in both axes. Source "x" perceives the first coordinate, source "y" the second;
the same two coordinates are the targets of the generative model.
"""
import numpy as np

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


def make_datasets(config, start_step: int = 0):
  """Train (endless, from batch `start_step`) and eval datasets of the toy mixture."""
  train, _ = sample(config.train_size, config.seed, config.num_components,
                    config.component_std)
  test, _ = sample(config.eval_size, config.seed + 1_000_003,
                   config.num_components, config.component_std)
  missing = data_lib.missingness(config, ("x", "y"))
  return (data_lib.training_batches(train, config.batch_size, config.seed, start_step,
                                    what="toy training data", missing=missing),
          data_lib.eval_batches(test, config.eval_batch_size, what="toy test data",
                                missing=missing))
