"""Perspective pendulum seen by three pinhole cameras (Sec. 5.3), with sensor faults.

The bob of a pendulum of radius R rotates about the z-axis, centred at the
origin,

    p(theta) = (R cos theta, R sin theta, 0).                              (0)

Three pinhole cameras of
`image_size`^2 pixels look at the origin from a distance D = 2R: camera 0 on the
z-axis, camera 1 rotated by 45 deg about the x-axis, camera 2 by 45 deg about the
y-axis. Camera c has rotation R_c (columns: its right, up and backward axes in
world coordinates) and centre C_c = R_c (0, 0, D). A world point p projects with
the pinhole model

    d = R_c^T (p - C_c),                                                   (1)
    col = c_0 + f d_x / (-d_z),   row = c_0 - f d_y / (-d_z),              (2)

with focal length f in pixels, principal point c_0 = (size - 1) / 2 (pixel
centres at integer coordinates, rows growing downwards) and depth -d_z > 0.
Camera 0 therefore sees the bob on a circle of radius f R / D, cameras 1 and 2
on ellipses. The bob is an anti-aliased disc of apparent radius f r / depth
(a sphere of radius r), the rod a line from the pivot (the image centre) to the
bob; pixels are in [0, 1] plus independent Gaussian noise of std 0.1.

Sources "camera0", "camera1", "camera2" are `[size, size]` images; the target
"position" is the bob's (x, y). Everything is deterministic from a seed.

Faults of a sensor (noise, frozen, black, occlusion and the subtle shift,
rotate, drift, lag) are in `pendulum_faults`.
"""
import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from msnvi_tf import data as data_lib
from msnvi_tf.data import pendulum_faults

__all__ = [
    "SOURCES",
    "TARGET",
    "Rig",
    "rotation_x",
    "rotation_y",
    "bob_positions",
    "add_noise",
    "make_sequence",
    "healthy_frames",
    "healthy_sequences",
    "make_datasets",
]

SOURCES = ("camera0", "camera1", "camera2")
TARGET = "position"


def rotation_x(degrees):
  """`[3, 3]` rotation by `degrees` about the x-axis."""
  a = math.radians(degrees)
  return np.array([[1., 0., 0.],
                   [0., math.cos(a), -math.sin(a)],
                   [0., math.sin(a), math.cos(a)]])


def rotation_y(degrees):
  """`[3, 3]` rotation by `degrees` about the y-axis."""
  a = math.radians(degrees)
  return np.array([[math.cos(a), 0., math.sin(a)],
                   [0., 1., 0.],
                   [-math.sin(a), 0., math.cos(a)]])


def bob_positions(angles, radius=1.):
  """World positions of the bob, Eq. (0): angles `[N]` -> `[N, 3]`."""
  angles = np.asarray(angles, np.float64)
  return radius * np.stack(
      [np.cos(angles), np.sin(angles), np.zeros_like(angles)], -1)


@dataclasses.dataclass(frozen=True)
class Rig:
  """The pendulum and its three cameras.

  Args:
    image_size: pixels per side.
    radius: R, the rotation radius.
    distance: D, camera-to-origin distance (the paper: 2R).
    tilt_deg: rotation of cameras 1 (about x) and 2 (about y).
    focal_length: f in pixels.
    bob_radius: r, radius of the bob sphere (world units).
    rod_width: half-width of the rod in pixels.
    rod_intensity: grey value of the rod (0 draws no rod).
  """
  image_size: int = 32
  radius: float = 1.
  distance: float = 2.
  tilt_deg: float = 45.
  focal_length: float = 22.
  bob_radius: float = 0.15
  rod_width: float = 0.5
  rod_intensity: float = 0.5

  @classmethod
  def from_config(cls, config):
    """The rig described by a pendulum config (`configs/pendulum.py`)."""
    return cls(config.image_size, config.pendulum_radius, config.camera_distance,
               config.camera_tilt_deg, config.focal_length, config.bob_radius,
               config.rod_width, config.rod_intensity)

  @property
  def rotations(self):
    """`[3, 3, 3]` camera rotations R_c: identity, R_x(tilt), R_y(tilt)."""
    return np.stack([np.eye(3), rotation_x(self.tilt_deg),
                     rotation_y(self.tilt_deg)])

  @property
  def centres(self):
    """`[3, 3]` camera centres C_c = R_c (0, 0, D)."""
    return self.rotations @ np.array([0., 0., self.distance])

  def project(self, points):
    """Pinhole projection, Eqs. (1)-(2), into every camera.

    Args:
      points: `[N, 3]` world points.

    Returns:
      `(pixels [3, N, 2], depth [3, N])`: (row, col) and depth per camera.
    """
    d = np.einsum("cji,cnj->cni", self.rotations,
                  np.asarray(points)[None] - self.centres[:, None])  # [3, N, 3]
    depth = -d[..., 2]  # [3, N]
    c0 = (self.image_size - 1) / 2.
    col = c0 + self.focal_length * d[..., 0] / depth
    row = c0 - self.focal_length * d[..., 1] / depth
    return np.stack([row, col], -1), depth

  def render(self, angles, chunk_size=1000):
    """Noise-free images of the pendulum at `angles` `[N]`: `[3, N, size, size]` float32."""
    angles = np.asarray(angles, np.float64)
    return np.concatenate(
        [self._render(angles[i:i + chunk_size])
         for i in range(0, max(len(angles), 1), chunk_size)], 1)

  def _render(self, angles):
    pixels, depth = self.project(bob_positions(angles, self.radius))  # [3, N, 2]
    pivot, _ = self.project(np.zeros((1, 3)))  # [3, 1, 2]
    grid = np.stack(np.meshgrid(np.arange(self.image_size), np.arange(self.image_size),
                                indexing="ij"), -1).astype(np.float64)  # [H, W, 2]
    # Bob: anti-aliased disc of apparent radius f r / depth.
    dist = np.linalg.norm(grid - pixels[:, :, None, None], axis=-1)  # [3, N, H, W]
    apparent = self.focal_length * self.bob_radius / depth  # [3, N]
    bob = np.clip(apparent[..., None, None] + 0.5 - dist, 0., 1.)
    # Rod: segment pivot -> bob, distance of every pixel to the segment.
    a = pivot[:, :, None, None]  # [3, 1, 1, 1, 2]
    ab = pixels[:, :, None, None] - a  # [3, N, 1, 1, 2]
    t = np.clip(np.sum((grid - a) * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-12),
                0., 1.)  # [3, N, H, W]
    rod_dist = np.linalg.norm(grid - a - t[..., None] * ab, axis=-1)
    rod = self.rod_intensity * np.clip(self.rod_width + 0.5 - rod_dist, 0., 1.)
    return np.maximum(bob, rod).astype(np.float32)


def add_noise(clean, std, rng):
  """clean + N(0, std^2) i.i.d. per pixel (float32)."""
  return (clean + std * rng.standard_normal(clean.shape)).astype(np.float32)


def make_sequence(rig: Rig, num_frames: int, seed: int, noise_std: float = 0.1,
                  num_rotations: float = 3., fault: Optional[str] = None,
                  fault_sensor: int = 0, fault_start: Optional[int] = None,
                  start_angle: float = 0.) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """A pendulum rotating at constant speed, optionally with a failing sensor.

  Args:
    rig: the cameras.
    num_frames: T frames spread evenly over `num_rotations` rotations.
    seed: seed of the pixel noise (and of the "noise" fault).
    noise_std: pixel noise std.
    num_rotations: rotations covered by the T frames.
    fault: None or one of `pendulum_faults.FAULTS`.
    fault_sensor: index of the failing camera.
    fault_start: first faulty frame (default: after 2/3 of the frames, i.e.
      after 2 of 3 rotations as in the paper).
    start_angle: angle of frame 0.

  Returns:
    `({camera_i: [T, H, W], "position": [T, 2]} float32, angles [T])`.
  """
  rng = np.random.default_rng(seed)
  angles = start_angle + 2. * np.pi * num_rotations * np.arange(num_frames) / num_frames
  clean = rig.render(angles)  # [3, T, H, W]
  noisy = add_noise(clean, noise_std, rng)
  if fault is not None:
    start = (2 * num_frames) // 3 if fault_start is None else fault_start
    noisy[fault_sensor] = pendulum_faults.inject_fault(
        noisy[fault_sensor], clean[fault_sensor], fault, start, rng)
  batch = {s: noisy[i] for i, s in enumerate(SOURCES)}
  batch[TARGET] = bob_positions(angles, rig.radius)[:, :2].astype(np.float32)
  return batch, angles


def _examples(rig: Rig, num: int, seed: int):
  """Clean images `[3, N, H, W]` and positions `[N, 2]` at uniform random angles."""
  angles = np.random.default_rng(seed).uniform(0., 2. * np.pi, num)
  positions = bob_positions(angles, rig.radius)[:, :2].astype(np.float32)
  return rig.render(angles), positions


def healthy_frames(config, num: int, seed: int) -> Dict[str, np.ndarray]:
  """`num` healthy frames at uniform random angles, with pixel noise (e.g. to calibrate).

  Returns:
    `{camera_i: [N, H, W], "position": [N, 2]}` float32, deterministic from `seed`.
  """
  clean, positions = _examples(Rig.from_config(config), num, seed)
  noisy = add_noise(clean, config.noise_std, np.random.default_rng([seed, 1]))
  frames = {s: noisy[i] for i, s in enumerate(SOURCES)}
  frames[TARGET] = positions
  return frames


def healthy_sequences(config, num: int, seed: int, first: int = 0,
                      frames_per_rotation: int = 120,
                      num_rotations: int = 3) -> List[Dict[str, np.ndarray]]:
  """Healthy sequences `first`, ..., `first + num - 1` of `seed` (the data set's
  `sequences`: training fits the latent filter on them).

  Sequence i: the pendulum at constant speed, `frames_per_rotation` frames per
  rotation (Fig. 5's speed) for `num_rotations` rotations, from a start angle
  uniform in [0, 2 pi) drawn from `[seed, 7, i]`, with the pixel noise of
  seed `seed + 5000 + i` (`make_sequence`); it does not depend on `num`.

  Returns:
    `[{camera_i: [T, H, W], "position": [T, 2]}]` float32, T =
    `frames_per_rotation * num_rotations`.
  """
  rig = Rig.from_config(config)
  sequences = []
  for index in range(first, first + num):
    angle = float(np.random.default_rng([seed, 7, index]).uniform(0., 2. * np.pi))
    batch, _ = make_sequence(rig, frames_per_rotation * num_rotations, seed + 5000 + index,
                             config.noise_std, num_rotations, start_angle=angle)
    sequences.append(batch)
  return sequences


def make_datasets(config, start_step: int = 0):
  """Train and eval datasets of pendulum images at uniform random angles.

  Train: `config.train_size` angles, rendered once; fresh pixel noise for every
  batch from stateless seeds (config.seed, step), so batch s is a function of
  (config.seed, s) (`data.training_batches`); the first is batch `start_step`.
  Eval: `config.eval_size` other angles with fixed noise.
  """
  rig = Rig.from_config(config)
  clean, positions = _examples(rig, config.train_size, config.seed)
  train = {s: clean[i] for i, s in enumerate(SOURCES)}
  train[TARGET] = positions
  eval_clean, eval_positions = _examples(rig, config.eval_size, config.seed + 1_000_003)
  noisy = add_noise(eval_clean, config.noise_std,
                    np.random.default_rng(config.seed + 2_000_003))
  test = {s: noisy[i] for i, s in enumerate(SOURCES)}
  test[TARGET] = eval_positions
  noise_std = config.noise_std

  def noisy_batch(batch, seed):
    out = dict(batch)
    for i, s in enumerate(SOURCES):
      out[s] = batch[s] + noise_std * tf.random.stateless_normal(
          tf.shape(batch[s]), seed=tf.random.experimental.stateless_fold_in(seed, i))
    return out

  missing = data_lib.missingness(config, SOURCES)
  train_ds = data_lib.training_batches(train, config.batch_size, config.seed, start_step,
                                       noisy_batch, what="pendulum training data",
                                       missing=missing)
  eval_ds = data_lib.eval_batches(test, config.eval_batch_size,
                                  what="pendulum test data", missing=missing)
  return train_ds, eval_ds
