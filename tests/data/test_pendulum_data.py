"""Pendulum data: camera geometry, noise, faults, determinism."""
import math

import numpy as np
import pytest

from msnvi_tf.data import pendulum
from msnvi_tf.data import pendulum_faults

from conftest import make_pendulum_config

SQRT_HALF = math.sqrt(0.5)
# Independent camera geometry from the paper's description (R = 1, D = 2): centre
# and right axis; every camera looks at the origin.
CAMERAS = (
    (np.array([0., 0., 2.]), np.array([1., 0., 0.])),  # on the z-axis
    (np.array([0., -2. * SQRT_HALF, 2. * SQRT_HALF]), np.array([1., 0., 0.])),  # 45 deg about x
    (np.array([2. * SQRT_HALF, 0., 2. * SQRT_HALF]),
     np.array([SQRT_HALF, 0., -SQRT_HALF])),  # 45 deg about y
)
ANGLES = np.deg2rad([0., 45., 90., 180., 250., 270.])


def pinhole(point, centre, right, focal=22., size=32):
  """(row, col) of a world point in a camera looking at the origin."""
  forward = -centre / np.linalg.norm(centre)
  up = np.cross(right, forward)
  d = point - centre
  depth = d @ forward
  c0 = (size - 1) / 2.
  return np.array([c0 - focal * (d @ up) / depth, c0 + focal * (d @ right) / depth])


@pytest.fixture(scope="module")
def config():
  return make_pendulum_config()


def test_projection_matches_pinhole_formula():
  rig = pendulum.Rig()
  points = np.stack([np.cos(ANGLES), np.sin(ANGLES), np.zeros_like(ANGLES)], -1)
  pixels, _ = rig.project(points)  # [3, N, 2]
  for c, (centre, right) in enumerate(CAMERAS):
    expected = np.stack([pinhole(p, centre, right) for p in points])
    np.testing.assert_allclose(pixels[c], expected, atol=1e-9)
  # Camera 0 at angle 0: col = 15.5 + f R / D = 26.5.
  np.testing.assert_allclose(pixels[0, 0], [15.5, 26.5])


def test_rendered_bob_sits_at_projected_position():
  rig = pendulum.Rig(rod_intensity=0.)
  images = rig.render(ANGLES)  # [3, N, H, W]
  rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
  mass = images.sum((-1, -2))
  centroid = np.stack([(images * rows).sum((-1, -2)), (images * cols).sum((-1, -2))],
                      -1) / mass[..., None]  # [3, N, 2]
  points = np.stack([np.cos(ANGLES), np.sin(ANGLES), np.zeros_like(ANGLES)], -1)
  for c, (centre, right) in enumerate(CAMERAS):
    expected = np.stack([pinhole(p, centre, right) for p in points])
    # Sub-pixel: a disc of radius ~1-3 px sampled at pixel centres.
    np.testing.assert_allclose(centroid[c], expected, atol=0.1)


def _conic_axis_ratio(pixels):
  """Fits A u^2 + B uv + C v^2 + D u + E v + F = 0; returns (residual, discriminant, axis ratio)."""
  u, v = pixels[:, 1], pixels[:, 0]
  design = np.stack([u * u, u * v, v * v, u, v, np.ones_like(u)], -1)
  design /= np.linalg.norm(design, axis=0)
  _, singular, vt = np.linalg.svd(design)
  a, b, c = vt[-1, :3] / np.linalg.norm(np.stack([u * u, u * v, v * v], -1), axis=0)
  eig = np.linalg.eigvalsh([[a, b / 2.], [b / 2., c]])
  return singular[-1], b * b - 4. * a * c, math.sqrt(min(abs(eig)) / max(abs(eig)))


def test_camera0_sees_a_circle_cameras_1_2_see_ellipses():
  rig = pendulum.Rig()
  angles = np.linspace(0., 2. * np.pi, 90, endpoint=False)
  pixels, _ = rig.project(pendulum.bob_positions(angles))  # [3, N, 2]
  radius = np.linalg.norm(pixels[0] - 15.5, axis=-1)
  np.testing.assert_allclose(radius, 22. * 1. / 2., atol=1e-9)
  for c in (1, 2):
    residual, discriminant, ratio = _conic_axis_ratio(pixels[c])
    assert residual < 1e-8
    assert discriminant < 0.  # an ellipse
    assert 0.5 < ratio < 0.9  # not a circle: foreshortened by the 45 deg tilt
  _, _, ratio0 = _conic_axis_ratio(pixels[0])
  assert ratio0 == pytest.approx(1., abs=1e-6)


def test_noise_std(config):
  rig = pendulum.Rig.from_config(config)
  batch, angles = pendulum.make_sequence(rig, 200, seed=3)
  clean = rig.render(angles)
  for c, s in enumerate(pendulum.SOURCES):
    noise = batch[s] - clean[c]
    assert np.std(noise) == pytest.approx(0.1, abs=0.003)
    assert abs(np.mean(noise)) < 0.003
  train, _ = pendulum.make_datasets(config)
  for batch in train.take(3):
    for s in pendulum.SOURCES:
      corner = batch[s].numpy()[:, :3, :3]  # always background
      assert np.std(corner) == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("fault", pendulum_faults.FAULTS)
def test_fault_starts_at_requested_frame(fault):
  rig = pendulum.Rig()
  start = 37
  healthy, _ = pendulum.make_sequence(rig, 60, seed=5, num_rotations=1.)
  faulty, _ = pendulum.make_sequence(rig, 60, seed=5, num_rotations=1., fault=fault,
                                     fault_sensor=1, fault_start=start)
  for s in ("camera0", "camera2", "position"):
    np.testing.assert_array_equal(faulty[s], healthy[s])
  np.testing.assert_array_equal(faulty["camera1"][:start], healthy["camera1"][:start])
  changed = np.any(faulty["camera1"] != healthy["camera1"], axis=(1, 2))  # [T]
  np.testing.assert_array_equal(changed, np.arange(60) >= start)
  after = faulty["camera1"][start:]
  if fault == "noise":
    assert after.min() >= 0. and after.max() <= 1.
    assert np.mean(after) == pytest.approx(0.5, abs=0.01)
  elif fault == "frozen":
    np.testing.assert_array_equal(after, np.broadcast_to(healthy["camera1"][start - 1],
                                                         after.shape))
  elif fault == "black":
    assert not np.any(after)
  elif fault == "occlusion":
    np.testing.assert_array_equal(after[:, :, :16], healthy["camera1"][start:, :, :16])
    assert np.mean(after[:, :, 16:]) == pytest.approx(0.5, abs=0.01)
  elif fault == "lag":  # the frames of 5 steps earlier
    np.testing.assert_array_equal(after, healthy["camera1"][start - 5:-5])
  else:  # plausible frames: a moved pendulum image with the camera's own noise
    assert fault in pendulum_faults.SUBTLE_FAULTS
    clean = rig.render(np.linspace(0., 2. * np.pi, 60, endpoint=False))[1, start:]
    noise = healthy["camera1"][start:] - clean
    moved = after - noise
    assert moved.min() > -1e-5 and moved.max() < 1. + 1e-5
    assert np.sum(moved) == pytest.approx(np.sum(clean), rel=0.05)  # same bob and rod


def _healthy_cameras(num_frames=60, seed=5):
  """`(noisy, clean)` `[3, T, H, W]` of a healthy one-rotation sequence."""
  rig = pendulum.Rig()
  batch, angles = pendulum.make_sequence(rig, num_frames, seed=seed, num_rotations=1.)
  return np.stack([batch[s] for s in pendulum.SOURCES]), rig.render(angles)


@pytest.mark.parametrize("fault", pendulum_faults.UNLISTED_FAULTS)
def test_unlisted_fault_changes_only_the_faulty_camera_after_the_start(fault):
  assert fault not in pendulum_faults.FAULTS
  noisy, clean = _healthy_cameras()
  start = 37
  out = pendulum_faults.inject_unlisted_fault(noisy, clean, fault, 0, start, seed=3)
  again = pendulum_faults.inject_unlisted_fault(noisy, clean, fault, 0, start, seed=3)
  assert out.shape == noisy.shape and out.dtype == np.float32
  np.testing.assert_array_equal(out, again)  # deterministic from the seed
  np.testing.assert_array_equal(out[1:], noisy[1:])  # the other cameras
  np.testing.assert_array_equal(out[0, :start], noisy[0, :start])
  changed = np.any(out[0] != noisy[0], axis=(1, 2))  # [T]
  assert changed[start:].mean() > 0.2
  own, after, noise = noisy[0], out[0, start:], noisy[0, start:] - clean[0, start:]
  steps = np.arange(60 - start)
  if fault == "gain":
    np.testing.assert_allclose(after, 0.5 * clean[0, start:] + 0.25 + noise, atol=1e-6)
  elif fault == "blur":  # the bob spread out, its light kept
    blurred = after - noise
    assert blurred.max() < 0.6 * clean[0, start:].max()
    assert np.sum(blurred) == pytest.approx(np.sum(clean[0, start:]), rel=0.05)
  elif fault == "intermittent":  # each frame its own or the previous output again
    for k in steps:
      assert (np.array_equal(after[k], own[start + k])
              or np.array_equal(after[k], out[0, start + k - 1]))
    other = pendulum_faults.inject_unlisted_fault(noisy, clean, fault, 0, start, seed=4)
    assert np.any(other != out)
  elif fault == "smudge":
    np.testing.assert_array_equal(after[:, 12:], own[start:, 12:])
    assert np.mean(after[:, 2:12, 2:12]) == pytest.approx(0.5, abs=0.02)
  elif fault == "swap":
    np.testing.assert_array_equal(after, noisy[1, start:])
  elif fault == "lag_growth":  # lag 0 for 12 frames, then one more every 12
    np.testing.assert_array_equal(after, own[start + steps - steps // 12])
    assert not changed[start:start + 12].any() and changed[start + 12:].all()
  else:
    assert fault == "mirror"
    np.testing.assert_allclose(after, clean[0, start:, :, ::-1] + noise, atol=1e-6)


def test_unlisted_fault_bad_arguments_raise():
  noisy, clean = _healthy_cameras(10)
  with pytest.raises(ValueError, match="Unknown unlisted fault"):
    pendulum_faults.inject_unlisted_fault(noisy, clean, "noise", 0, 5, seed=0)
  with pytest.raises(ValueError, match="outside"):
    pendulum_faults.inject_unlisted_fault(noisy, clean, "blur", 0, 11, seed=0)
  with pytest.raises(ValueError, match="itself"):
    pendulum_faults.inject_unlisted_fault(noisy, clean, "swap", 1, 5, seed=0)


def test_warp_moves_and_turns_images_like_integer_shifts_and_rot90():
  images = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
  shifted = pendulum_faults.warp(images, (1., -2.))
  np.testing.assert_allclose(shifted[:, 1:, :6], images[:, :7, 2:], atol=1e-6)
  assert not np.any(shifted[:, 0]) and not np.any(shifted[:, :, 6:])  # zeros enter
  # Counter-clockwise on the screen by 90 deg is numpy's rot90 (rows grow down).
  np.testing.assert_allclose(pendulum_faults.warp(images, angle_deg=90.),
                             np.rot90(images, 1, axes=(1, 2)), atol=1e-5)
  half = pendulum_faults.warp(images, (0., 0.5))  # bilinear: the mean of neighbours
  np.testing.assert_allclose(half[:, :, 1:], 0.5 * (images[:, :, 1:] + images[:, :, :-1]),
                             atol=1e-6)
  per_frame = pendulum_faults.warp(images, [[0., 0.], [1., -2.], [0., 0.]])
  np.testing.assert_allclose(per_frame[1], shifted[1], atol=1e-6)
  np.testing.assert_allclose(per_frame[[0, 2]], images[[0, 2]], atol=1e-6)


def test_drift_grows_until_drift_frames_then_stays():
  rig = pendulum.Rig()
  clean = np.repeat(rig.render([np.pi])[0], 40, 0)  # [40, H, W]: camera 0, bob on the left
  out = pendulum_faults.inject_fault(clean, clean, "drift", 10, None, drift=(0., 4.),
                              drift_frames=20)
  # The bob's centre of mass moves right by 4 px * min(1, (t - 9) / 20) after frame 10.
  cols = np.arange(clean.shape[-1])
  centre = (out * cols).sum((1, 2)) / out.sum((1, 2))  # [T]
  moved = centre - centre[0]
  np.testing.assert_allclose(moved[:10], 0., atol=1e-6)
  np.testing.assert_allclose(moved[10:30], 4. * np.arange(1, 21) / 20., atol=0.05)
  np.testing.assert_allclose(moved[30:], 4., atol=0.05)


def test_unknown_fault_and_bad_start_raise():
  images = np.zeros((4, 32, 32), np.float32)
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="Unknown fault"):
    pendulum_faults.inject_fault(images, images, "melted", 1, rng)
  with pytest.raises(ValueError, match="outside"):
    pendulum_faults.inject_fault(images, images, "black", 5, rng)


def test_deterministic_from_seed(config):
  rig = pendulum.Rig.from_config(config)
  a, _ = pendulum.make_sequence(rig, 30, seed=7, fault="noise")
  b, _ = pendulum.make_sequence(rig, 30, seed=7, fault="noise")
  c, _ = pendulum.make_sequence(rig, 30, seed=8, fault="noise")
  for s in pendulum.SOURCES:
    np.testing.assert_array_equal(a[s], b[s])
    assert np.any(a[s] != c[s])
  first = [next(iter(ds)) for ds in pendulum.make_datasets(config)]
  second = [next(iter(ds)) for ds in pendulum.make_datasets(config)]
  for x, y in zip(first, second):
    for key in x:
      np.testing.assert_array_equal(x[key].numpy(), y[key].numpy())
