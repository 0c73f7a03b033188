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

Further faults a real rig may show (`UNLISTED_FAULTS`, `inject_unlisted_fault`),
kept apart from `FAULTS` so that the Sec. 5.3 report and its tables stay as
they are, and so that they can test what was tuned on `FAULTS` (the latent
filter's thresholds, the robust weights) on failures it never saw:
  gain          contrast and brightness changed: `gain` * clean + `offset` plus
                the usual noise (an exposure or lighting change);
  blur          the clean image blurred by a Gaussian of `blur_sigma` pixels,
                plus the usual noise (a camera out of focus);
  intermittent  from the failure on, each frame is, with probability
                `stall_rate` (drawn from `seed`), the camera's previous output
                again: a flaky link that freezes in short random bursts;
  smudge        a small opaque grey patch `smudge` (plus noise) on part of the
                view: hides camera 0's bob for about an eighth of a rotation
                (partial occlusion; `occlusion` covers half the view);
  swap          the frames of camera `swap_with` (a cable mix-up: a healthy
                image from another viewpoint);
  lag_growth    a lag growing by one frame every `lag_every` frames from 0 (a
                buffer filling up);
  mirror        the image mirrored left-right (a readout setting flipped); for
                camera 0 a pendulum turning the other way.
Every one but `intermittent` is deterministic without randomness; that one is
deterministic from `seed`.
"""
import math

import numpy as np

__all__ = ["FAULTS", "SUBTLE_FAULTS", "UNLISTED_FAULTS", "warp", "inject_fault",
           "inject_unlisted_fault"]

SUBTLE_FAULTS = ("shift", "rotate", "drift", "lag")
FAULTS = ("noise", "frozen", "black", "occlusion") + SUBTLE_FAULTS
UNLISTED_FAULTS = ("gain", "blur", "intermittent", "smudge", "swap", "lag_growth", "mirror")


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


def _gaussian_blur(images, sigma: float) -> np.ndarray:
  """`[T, H, W]` images blurred by a Gaussian of std `sigma` pixels (zeros outside)."""
  radius = max(int(math.ceil(3. * sigma)), 1)
  kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  kernel /= kernel.sum()
  out = np.asarray(images, np.float64)
  for axis in (1, 2):
    out = np.apply_along_axis(np.convolve, axis, out, kernel, mode="same")
  return out


def inject_unlisted_fault(images, clean, kind, sensor, start, seed, gain=0.5, offset=0.25,
                          blur_sigma=1.5, stall_rate=0.3, smudge=(2, 2, 10, 10),
                          smudge_value=0.5, swap_with=1, lag_every=12):
  """Replaces camera `sensor`'s frames `start:` with a fault of `UNLISTED_FAULTS`.

  Args:
    images: `[M, T, H, W]` noisy frames of every camera.
    clean: `[M, T, H, W]` their noise-free versions (`images - clean` is the noise).
    kind: one of `UNLISTED_FAULTS` (see the module docstring).
    sensor: index of the failing camera.
    start: first faulty frame.
    seed: seed of the "intermittent" fault's stalls.
    gain, offset: of the "gain" fault.
    blur_sigma: std in pixels of the "blur" fault's Gaussian.
    stall_rate: probability that a frame of the "intermittent" fault repeats
      the previous output frame.
    smudge: (top, left, height, width) in pixels of the "smudge" patch.
    smudge_value: its grey value.
    swap_with: the camera whose frames the "swap" fault sends.
    lag_every: frames per frame of lag of the "lag_growth" fault.

  Returns:
    `[M, T, H, W]` float32 copy of `images`; only `[sensor, start:]` differs.

  Raises:
    ValueError: unknown fault, start outside [0, T], or a swap with itself.
  """
  if kind not in UNLISTED_FAULTS:
    raise ValueError(f"Unknown unlisted fault {kind!r}; choose one of {UNLISTED_FAULTS}.")
  images = np.asarray(images, np.float32)
  num_frames = images.shape[1]
  if not 0 <= start <= num_frames:
    raise ValueError(f"Fault start {start} outside [0, {num_frames}].")
  if kind == "swap" and swap_with == sensor:
    raise ValueError(f"Camera {sensor} cannot swap with itself.")
  out = images.copy()
  own, after = images[sensor], out[sensor, start:]  # [T, H, W]; a view
  base = clean[sensor, start:]
  noise = own[start:] - base
  steps = np.arange(num_frames - start)  # k: frames since the failure
  if kind == "gain":
    after[...] = gain * base + offset + noise
  elif kind == "blur":
    after[...] = _gaussian_blur(base, blur_sigma) + noise
  elif kind == "intermittent":
    stalls = np.random.default_rng([seed, 0x494E54]).random(len(steps)) < stall_rate
    source = start - 1 if start else 0  # a stall at frame 0 shows frame 0
    for k, stall in enumerate(stalls):
      if not stall:
        source = start + k
      after[k] = out[sensor, source]
  elif kind == "smudge":
    top, left, height, width = smudge
    region = (slice(None), slice(top, top + height), slice(left, left + width))
    after[region] = smudge_value + noise[region]
  elif kind == "swap":
    after[...] = images[swap_with, start:]
  elif kind == "lag_growth":
    after[...] = own[start + steps - steps // max(lag_every, 1)]
  else:  # mirror
    after[...] = base[:, :, ::-1] + noise
  return out
