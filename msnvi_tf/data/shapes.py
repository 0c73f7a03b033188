"""Procedurally generated birds-like scenes with exact segmentation masks.

A stand-in for Caltech-UCSD Birds (`msnvi_tf.data.cub`) of the same shape and
sources, so that the whole Sec. 5.2 pipeline runs without the real data:
  "image"  `[S, S, 3]` float32 in [0, 1];
  "mask"   `[S, S, 1]` float32 in {0, 1}, exactly the object's pixels.

Each scene is drawn on pixel centres u = (col + 1/2) / S, v = (row + 1/2) / S:
  background  a linear colour gradient at a random angle, 4-8 clutter
              primitives (ellipses, rotated rectangles, triangles) in flat or
              striped colours, one of them a saturated "decoy", and pixel grain;
  object      a "bird": the union of a body ellipse, a head disc at one end of
              the body's long axis and a tail triangle at the other, at a random
              position, size and angle, textured with stripes, checks or a
              gradient between two saturated colours, plus pixel grain.
The image is the object where the mask is 1 and the background elsewhere:

    image = mask * foreground + (1 - mask) * background.              (S1)

Hard edges (no anti-aliasing) keep the mask exact. Example n of a data set with
seed s is drawn from `np.random.default_rng([s, n])`, so every example is
deterministic and independent of how many others are generated. Images are
kept as uint8 (like decoded photos) and scaled to [0, 1] by the input pipeline.
"""
import colorsys
from typing import Dict

import numpy as np

from msnvi_tf.data import cub

__all__ = ["render", "generate", "make_datasets", "EVAL_SEED_OFFSET"]

EVAL_SEED_OFFSET = 1_000_003  # the evaluation split's seed is seed + this.
_GRAIN_STD = 0.03


def _grid(size):
  """Pixel-centre coordinates `(u, v)`, each `[S, S]` in (0, 1)."""
  centres = (np.arange(size, dtype=np.float64) + 0.5) / size
  return np.meshgrid(centres, centres)  # u along columns, v along rows.


def _rotate(u, v, cx, cy, angle):
  """Coordinates relative to (cx, cy) in a frame rotated by `angle`."""
  du, dv = u - cx, v - cy
  c, s = np.cos(angle), np.sin(angle)
  return c * du + s * dv, -s * du + c * dv


def _ellipse(u, v, cx, cy, a, b, angle):
  x, y = _rotate(u, v, cx, cy, angle)
  return (x / a) ** 2 + (y / b) ** 2 <= 1.


def _rectangle(u, v, cx, cy, a, b, angle):
  x, y = _rotate(u, v, cx, cy, angle)
  return (np.abs(x) <= a) & (np.abs(y) <= b)


def _triangle(u, v, corners):
  """Pixels inside the triangle with `corners` `[3, 2]` (either orientation)."""
  signs = []
  for i in range(3):
    (x0, y0), (x1, y1) = corners[i], corners[(i + 1) % 3]
    signs.append((x1 - x0) * (v - y0) - (y1 - y0) * (u - x0))
  return ((signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)) | (
      (signs[0] <= 0) & (signs[1] <= 0) & (signs[2] <= 0))


def _colour(rng, saturation, value):
  """An RGB colour `[3]` of random hue with saturation / value in the given ranges."""
  return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation),
                                      rng.uniform(*value)))


def _texture(rng, u, v, colour_a, colour_b):
  """`[S, S, 3]` stripes, checks or gradient between two colours."""
  kind = rng.integers(3)
  angle = rng.uniform(0., np.pi)
  freq = rng.uniform(4., 14.)
  along = np.cos(angle) * u + np.sin(angle) * v
  if kind == 0:  # stripes
    t = (np.sin(2. * np.pi * freq * along) > 0.).astype(np.float64)
  elif kind == 1:  # checks
    across = -np.sin(angle) * u + np.cos(angle) * v
    t = ((np.sin(2. * np.pi * freq * along) * np.sin(2. * np.pi * freq * across))
         > 0.).astype(np.float64)
  else:  # gradient
    t = np.clip((along - along.min()) / max(np.ptp(along), 1e-6), 0., 1.)
  return colour_a + t[..., None] * (colour_b - colour_a)  # [S, S, 3]


def _clutter_shape(rng, u, v):
  """A random clutter primitive's `[S, S]` boolean pixels."""
  cx, cy = rng.uniform(-0.1, 1.1, size=2)
  a, b = rng.uniform(0.05, 0.3, size=2)
  angle = rng.uniform(0., np.pi)
  kind = rng.integers(3)
  if kind == 0:
    return _ellipse(u, v, cx, cy, a, b, angle)
  if kind == 1:
    return _rectangle(u, v, cx, cy, a, b, angle)
  return _triangle(u, v, np.array([cx, cy]) + rng.uniform(-0.3, 0.3, size=(3, 2)))


def _background(rng, u, v):
  """`[S, S, 3]` gradient plus clutter (one saturated decoy), no grain."""
  angle = rng.uniform(0., 2. * np.pi)
  t = np.clip(0.5 + 0.7 * (np.cos(angle) * (u - 0.5) + np.sin(angle) * (v - 0.5)), 0., 1.)
  top, bottom = _colour(rng, (0., 0.5), (0.3, 0.9)), _colour(rng, (0., 0.5), (0.2, 0.8))
  image = top + t[..., None] * (bottom - top)  # [S, S, 3]
  num_clutter = int(rng.integers(4, 9))
  decoy = int(rng.integers(num_clutter))
  for i in range(num_clutter):
    region = _clutter_shape(rng, u, v)
    saturation = (0.6, 1.) if i == decoy else (0., 0.5)
    colour_a = _colour(rng, saturation, (0.2, 0.9))
    if rng.uniform() < 0.5:
      fill = np.broadcast_to(colour_a, image.shape)
    else:
      fill = _texture(rng, u, v, colour_a, _colour(rng, saturation, (0.2, 0.9)))
    image = np.where(region[..., None], fill, image)
  return image


def _bird(rng, u, v):
  """`[S, S]` boolean silhouette: body ellipse, head disc and tail triangle."""
  cx, cy = rng.uniform(0.3, 0.7, size=2)
  a = rng.uniform(0.12, 0.25)  # body half-length
  b = a * rng.uniform(0.45, 0.7)  # body half-width
  angle = rng.uniform(0., 2. * np.pi)
  axis = np.array([np.cos(angle), np.sin(angle)])
  normal = np.array([-axis[1], axis[0]])
  centre = np.array([cx, cy])
  head_r = b * rng.uniform(0.6, 0.9)
  head = centre + axis * (a + 0.4 * head_r)
  tail_base = centre - axis * 0.8 * a
  tail_tip = centre - axis * (a + rng.uniform(0.5, 1.) * a)
  spread = rng.uniform(0.3, 0.8) * b
  tail = np.stack([tail_base, tail_tip + normal * spread, tail_tip - normal * spread])
  return (_ellipse(u, v, cx, cy, a, b, angle)
          | ((u - head[0]) ** 2 + (v - head[1]) ** 2 <= head_r ** 2)
          | _triangle(u, v, tail))


def render(seed: int, index: int, size: int) -> Dict[str, np.ndarray]:
  """Renders example `index` of the data set with `seed` (Eq. S1).

  Args:
    seed: data set seed.
    index: example index n; the example is drawn from `default_rng([seed, n])`.
    size: S, the image side in pixels.

  Returns:
    `{"image": [S, S, 3], "mask": [S, S, 1], "foreground": [S, S, 3],
    "background": [S, S, 3]}` float32; image and layers in [0, 1] (with grain),
    mask in {0, 1}, and image = foreground where mask = 1, background elsewhere.
  """
  rng = np.random.default_rng([seed, index])
  u, v = _grid(size)
  background = _background(rng, u, v)
  mask = _bird(rng, u, v)
  foreground = _texture(rng, u, v, _colour(rng, (0.6, 1.), (0.5, 1.)),
                        _colour(rng, (0.6, 1.), (0.3, 1.)))
  background = np.clip(background + _GRAIN_STD * rng.standard_normal(background.shape),
                       0., 1.)
  foreground = np.clip(foreground + _GRAIN_STD * rng.standard_normal(foreground.shape),
                       0., 1.)
  image = np.where(mask[..., None], foreground, background)  # Eq. (S1)
  return {"image": image.astype(np.float32),
          "mask": mask[..., None].astype(np.float32),
          "foreground": foreground.astype(np.float32),
          "background": background.astype(np.float32)}


def generate(num: int, seed: int, size: int) -> Dict[str, np.ndarray]:
  """Examples 0..num-1 of the data set with `seed`, as stored for training.

  Returns:
    `{"image": [N, S, S, 3] uint8, "mask": [N, S, S, 1] uint8 in {0, 1}}`.
  """
  images = np.empty((num, size, size, 3), np.uint8)
  masks = np.empty((num, size, size, 1), np.uint8)
  for n in range(num):
    example = render(seed, n, size)
    images[n] = np.round(example["image"] * 255.)
    masks[n] = example["mask"]
  return {"image": images, "mask": masks}


def make_datasets(config, start_step: int = 0):
  """Train (endless, from batch `start_step`) and eval datasets of generated scenes."""
  train = generate(config.train_size, config.seed, config.image_size)
  test = generate(config.eval_size, config.seed + EVAL_SEED_OFFSET, config.image_size)
  return cub.batch_datasets(train, test, config, start_step)
