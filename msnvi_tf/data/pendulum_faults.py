"""Sensor faults of the pendulum cameras (`pendulum.make_sequence(fault=...)`).

Faults (`FAULTS`) replace a sensor's frames from a given frame on:
  noise      i.i.d. uniform [0, 1] pixels: the sensor outputs random noise only
             (the paper's anomaly);
  frozen     the last healthy frame (with its noise) repeats;
  black      all pixels 0 (a dead sensor, no noise);
  occlusion  an opaque grey object covers part of the view (pixel value
             `occluder_value` plus the usual noise); the bob is hidden while
             it is behind the object.
Faults that keep the frames plausible (a clean pendulum image with the usual
noise) but their content wrong, as a camera whose mounting moved, or a stale
stream (`SUBTLE_FAULTS`):
  shift      the image moved by `shift` pixels (rows, cols): a camera bumped
             sideways;
  rotate     the image rotated by `angle_deg` about its centre: a camera
             turned about its optical axis;
  drift      the image moving gradually, its shift growing linearly from 0 to
             `drift` pixels over `drift_frames` frames, then staying: a loose
             mounting sliding;
  lag        the frame of `lag` time steps earlier: a delayed stream.
"""
import math

import numpy as np

__all__ = ["FAULTS", "SUBTLE_FAULTS", "warp", "inject_fault"]

SUBTLE_FAULTS = ("shift", "rotate", "drift", "lag")
FAULTS = ("noise", "frozen", "black", "occlusion") + SUBTLE_FAULTS


def warp(images, shift=(0., 0.), angle_deg: float = 0.) -> np.ndarray:
  """Images rotated about their centre, then moved; bilinear, zeros outside.

  An output pixel p (row, col) takes the input at c + R(-a) (p - c - t), with
  c the image centre, t the shift and R(a) the rotation by a = `angle_deg`
  counter-clockwise on the screen.

  Args:
    images: `[T, H, W]`.
    shift: t in pixels (rows down, cols right): `[2]`, or `[T, 2]` per frame.
    angle_deg: a.

  Returns:
    `[T, H, W]` float32.
  """
  images = np.asarray(images, np.float32)
  num, height, width = images.shape
  shift = np.broadcast_to(np.asarray(shift, np.float64), (num, 2))
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  dr = rows[None] - (height - 1) / 2. - shift[:, 0, None, None]  # [T, H, W]
  dc = cols[None] - (width - 1) / 2. - shift[:, 1, None, None]
  a = math.radians(angle_deg)  # screen coordinates: x = col, y = -row
  src_r = (height - 1) / 2. + math.sin(a) * dc + math.cos(a) * dr
  src_c = (width - 1) / 2. + math.cos(a) * dc - math.sin(a) * dr
  r0, c0 = np.floor(src_r).astype(int), np.floor(src_c).astype(int)
  fr, fc = src_r - r0, src_c - c0
  frame = np.arange(num)[:, None, None]
  out = np.zeros(images.shape, np.float64)
  for dr_, dc_, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                           (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
    r, c = r0 + dr_, c0 + dc_
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    value = images[frame, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
    out += np.where(inside, weight * value, 0.)
  return out.astype(np.float32)


def inject_fault(images, clean, kind, start, rng, occluder=(0, 16, 32, 16),
                 occluder_value=0.5, shift=(0., 2.), angle_deg=10., drift=(0., 4.),
                 drift_frames=120, lag=5):
  """Replaces one sensor's frames `start:` with a fault (see module docstring).

  Args:
    images: `[T, H, W]` noisy frames of one camera.
    clean: `[T, H, W]` their noise-free versions (`images - clean` is the noise).
    kind: one of `FAULTS`.
    start: first faulty frame.
    rng: `np.random.Generator` for the "noise" fault.
    occluder: (top, left, height, width) of the occluding object in pixels.
    occluder_value: grey value of the occluder.
    shift: (rows, cols) pixels of the "shift" fault.
    angle_deg: degrees of the "rotate" fault (counter-clockwise).
    drift: final (rows, cols) pixels of the "drift" fault.
    drift_frames: frames over which the drift grows to `drift`.
    lag: time steps of the "lag" fault (frames before 0 repeat frame 0).

  Returns:
    `[T, H, W]` float32 copy with the fault.

  Raises:
    ValueError: unknown fault or start outside [0, T].
  """
  if kind not in FAULTS:
    raise ValueError(f"Unknown fault {kind!r}; choose one of {FAULTS}.")
  num_frames = images.shape[0]
  if not 0 <= start <= num_frames:
    raise ValueError(f"Fault start {start} outside [0, {num_frames}].")
  out = np.array(images, np.float32)
  after = out[start:]  # [T - start, H, W], a view
  noise = images[start:] - clean[start:]
  if kind == "noise":
    after[...] = rng.uniform(0., 1., after.shape)
  elif kind == "frozen":
    after[...] = out[max(start - 1, 0)]
  elif kind == "black":
    after[...] = 0.
  elif kind == "occlusion":
    top, left, height, width = occluder
    region = (slice(None), slice(top, top + height), slice(left, left + width))
    after[region] = occluder_value + noise[region]
  elif kind == "lag":
    after[...] = images[np.maximum(np.arange(start, num_frames) - lag, 0)]
  else:
    moved = {"shift": (shift, 0.), "rotate": ((0., 0.), angle_deg),
             "drift": (np.minimum(1., np.arange(1, num_frames - start + 1)
                                  / max(drift_frames, 1))[:, None] * drift, 0.)}
    after[...] = warp(clean[start:], *moved[kind]) + noise
  return out
