"""Latent filtering of the pendulum's cameras over time, against per-frame integration.

For a trained pendulum model (`msnvi_tf.core.filtering`):
  1. fits the latent transition to the per-frame PoE means of `num_fit` healthy
     sequences (random start angles, their own noise);
  2. calibrates the thresholds of the prediction conflict and of the trend test
     on `num_calibration` further healthy sequences, together at `target_rate`
     (frames with any alarm) --
     steps 1 and 2 are `filtering.fit_filter`, as training's stored filter
     (`training.calibrate_filter`), here on sequences of the experiment's seed;
  3. on the Fig. 5 sequence of every fault of `pendulum_faults.FAULTS` and of
     `pendulum_faults.UNLISTED_FAULTS` (faults the filter and its thresholds
     were never tuned on; camera 0 fails after 2 of 3 rotations; the sequences
     of `sensors`) measures
     the RMSE of the position after the failure (Eq. 1 of `sensors`; the
     healthy sequence's before and after the failure time, the latter the
     reference of the target "within 10 % of the healthy RMSE") for
     the per-frame PoE of all cameras, the per-frame robust integration, the
     filter without weights, the filter with messages weighted by their
     conflict with the prediction ("prediction only"), the robust filter
     without the trend test (the smaller of that weight and the per-frame
     robust weight from the sources' conflicts with each other) and the robust
     filter (also the trend test's weight: `filtering`), camera 0's detection
     rate and delay (its alarm of either test) under the robust filter, and the robust
     filter's alarms on `num_healthy` other healthy sequences, and draws per
     sequence a Fig. 5-style PNG (`figures.fig5_filter`, `filter_<fault>.png`);
  4. on healthy sequences with every camera missing on random frames
     (`dropout`), the RMSE on those frames of the per-frame PoE (the prior's
     guess) and of the filter (a prediction);
  5. on the same healthy sequences with each camera missing independently on
     random frames (`camera_dropout`, at least one camera per frame, drawn as
     `msnvi_tf.data.Missingness` draws the training masks), the RMSE on every
     frame of the per-frame PoE of the present cameras, the filter and the
     robust filter (with the per-frame robust weights of the present cameras),
     the same without drop-outs, and the robust filter's alarms.

Predictions are the mean over `num_samples` latent samples of the decoder's
position mean (Eq. 6), from the per-frame beliefs or the filtered ones (full
covariance).
"""
import os
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from msnvi_tf.core import filtering
from msnvi_tf.core import robust
from msnvi_tf.data import pendulum
from msnvi_tf.data import pendulum_faults
from msnvi_tf.experiments.pendulum import figures as pendulum_figures
from msnvi_tf.experiments.pendulum import sensors as pendulum_sensors
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["run_filter_experiment"]

ROTATIONS = 3
HEALTHY_AFTER = "healthy, after"  # row of the healthy sequence after the failure time


def _beliefs(model, config, seed, frames, fault=None, start_angle=0.):
  """`(truth [T, 2], loc [T, M, 1, Dz], scale)` of one rendered sequence."""
  batch, _ = pendulum_sensors.faulty_sequence(
      pendulum.Rig.from_config(config), frames * ROTATIONS, seed,
      config.noise_std, ROTATIONS, fault, 0,
      None if fault is None else 2 * frames, start_angle)
  x = {k: tf.constant(v) for k, v in batch.items()}
  loc, scale = model.encode_stacked(x, model.sources)  # [M, T, Dz]
  to_frames = lambda v: tf.transpose(v, [1, 0, 2])[:, :, None]  # [T, M, 1, Dz]
  return batch[pendulum.TARGET], to_frames(loc), to_frames(scale)


def _healthy(model, config, seed, frames, index):
  angle = float(np.random.default_rng([seed, 7, index]).uniform(0., 2. * np.pi))
  return _beliefs(model, config, seed + 5000 + index, frames, start_angle=angle)


def _position(model, loc, cov, num_samples, seed):
  """Mean `[T, 2]` over latent samples of E[position | z]; loc `[T, Dz]`, cov `[T, Dz, Dz]`."""
  noise = tf.random.stateless_normal(tf.concat([[num_samples], tf.shape(loc)], 0),
                                     seed=[seed, 3])  # [K, T, Dz]
  z = loc + tf.linalg.matvec(tf.linalg.cholesky(cov), noise)
  return model.decoders[pendulum.TARGET].mean(z).numpy().mean(0)


def _sources_first(beliefs):
  """`[T, M, 1, Dz]` -> `[M, T, Dz]`: the frames as the batch of stacked beliefs."""
  return tf.transpose(beliefs[:, :, 0], [1, 0, 2])


def _frame_weights(model, loc, scale, present=None):
  """The per-frame robust weights `[T, M, 1]` (model's calibrated pairwise thresholds)
  of the cameras present (`present` `[T, M]`, default all)."""
  mask = None if present is None else tf.transpose(tf.constant(present, tf.float32))
  weights = robust.robust_weights(_sources_first(loc), _sources_first(scale), mask,
                                  thresholds=model.conflict_thresholds)  # [M, T]
  return tf.transpose(weights)[:, :, None]


def _rmse(prediction, truth, frames):
  return float(np.sqrt(np.mean((prediction[frames] - truth[frames]) ** 2)))


def _poe(loc, scale, present=None):
  """Per-frame PoE `(loc [T, Dz], cov [T, Dz, Dz])` of `[T, M, 1, Dz]` beliefs."""
  loc_star, scale_star = filtering.frame_poe(
      loc, scale, None if present is None else present[..., None])  # [T, 1, Dz]
  return loc_star[:, 0], tf.linalg.diag(tf.square(scale_star[:, 0]))


def _camera_dropout_masks(num_frames, num_sources, rate, rng):
  """`[T, M]` float32 presence: each camera absent with probability `rate`, at least
  one present per frame (where none is, one drawn uniformly), as `data.Missingness`."""
  absent = rng.random((num_frames, num_sources)) < rate
  keep = rng.integers(num_sources, size=num_frames)
  none = absent.all(-1)
  absent[none, keep[none]] = False
  return (~absent).astype(np.float32)


def run_filter_experiment(workdir: str, output_dir: str, num_fit: int = 10,
                          num_calibration: int = 10, num_healthy: int = 10,
                          target_rate: float = 0.005, dropout: float = 0.2,
                          num_samples: int = 500, seed: int = 1,
                          frames_per_rotation: int = 120,
                          faults: Sequence[str] = tuple(pendulum_faults.FAULTS),
                          unlisted_faults: Sequence[str] = tuple(
                              pendulum_faults.UNLISTED_FAULTS),
                          camera_dropout: float = 0.3, draw: bool = True) -> Dict:
  """Runs steps 1-5 of the module docstring; writes `results.md` (and with `draw` the
  PNG of every sequence) and returns the numbers."""
  model, config = workdir_lib.load_trained(workdir)
  name = workdir_lib.run_name(workdir)
  fitted = filtering.fit_filter(
      [_healthy(model, config, seed, frames_per_rotation, i)[1:] for i in range(num_fit)],
      [_healthy(model, config, seed, frames_per_rotation, num_fit + i)[1:]
       for i in range(num_calibration)], target_rate)
  transition, thresholds = fitted.transition, fitted.thresholds
  trend = fitted.trend_thresholds
  rows, healthy_alarms = {}, []
  for i in range(num_healthy):
    _, loc, scale = _healthy(model, config, seed, frames_per_rotation,
                             num_fit + num_calibration + i)
    _, _, health = filtering.robust_filter_sequence(
        loc, scale, transition, thresholds, frame_weights=_frame_weights(model, loc, scale),
        trend_thresholds=trend)
    healthy_alarms.append(health["alarm"].numpy()[:, :, 0].any(-1))  # [T]
  fail = 2 * frames_per_rotation
  after = np.arange(fail, ROTATIONS * frames_per_rotation)
  before = np.arange(fail)
  unlisted = set(unlisted_faults)
  paths = []
  for fault in (None,) + tuple(faults) + tuple(unlisted_faults):
    truth, loc, scale = _beliefs(model, config, seed, frames_per_rotation, fault)
    plain, _ = filtering.filter_sequence(loc, scale, transition)
    prediction_only, _, _ = filtering.robust_filter_sequence(loc, scale, transition,
                                                             thresholds)
    frame_weights = _frame_weights(model, loc, scale)
    no_trend, _, _ = filtering.robust_filter_sequence(loc, scale, transition, thresholds,
                                                      frame_weights=frame_weights)
    robust_f, _, health = filtering.robust_filter_sequence(
        loc, scale, transition, thresholds, frame_weights=frame_weights,
        trend_thresholds=trend)
    per_frame = pendulum_sensors.run_sequence(model, config, fault, seed=seed,
                                              num_samples=num_samples,
                                              frames_per_rotation=frames_per_rotation)
    position = {k: _position(model, v[0][:, 0], v[1][:, 0], num_samples, seed)
                for k, v in (("filter", plain), ("prediction only", prediction_only),
                             ("no trend test", no_trend), ("robust filter", robust_f))}
    alarm = health["alarm"].numpy()[after, 0, 0]
    first = np.flatnonzero(alarm)
    poe_all = per_frame["predictions"]["PoE(camera0, camera1, camera2)"][0]
    # The healthy sequence on its frames before the failure time and on those after it
    # (the same frames as the faults' rows: the reference of their "vs. healthy").
    frame_sets = ({"healthy": before, HEALTHY_AFTER: after} if fault is None
                  else {fault: after})
    for row_name, frames in frame_sets.items():
      rows[row_name] = {
          "PoE": _rmse(poe_all, truth, frames),
          "PoE(healthy)": _rmse(per_frame["predictions"]["PoE(camera1, camera2)"][0],
                                truth, frames),
          "robust": _rmse(per_frame["predictions"][pendulum_sensors.ROBUST][0], truth,
                          frames),
          "filter": _rmse(position["filter"], truth, frames),
          "robust filter, prediction only": _rmse(position["prediction only"], truth,
                                                   frames),
          "robust filter, no trend test": _rmse(position["no trend test"], truth, frames),
          "robust filter": _rmse(position["robust filter"], truth, frames),
          "detected": float(alarm.mean()) if fault else float("nan"),
          "delay": int(first[0]) if fault and len(first) else -1,
          "unlisted": fault in unlisted,
      }
    if draw:
      paths.append(pendulum_figures.fig5_filter({
          "truth": truth, "fault_start": None if fault is None else fail,
          "frames_per_rotation": frames_per_rotation,
          "predictions": {"per-frame PoE of all cameras": poe_all,
                          "per-frame robust": per_frame["predictions"][
                              pendulum_sensors.ROBUST][0],
                          "robust filter": position["robust filter"]},
          "weights": {"robust filter": health["weight"].numpy()[:, 0, 0],
                      "per-frame robust": per_frame["weights"][0]},
          "alarm": health["alarm"].numpy()[:, 0, 0],
          "source": model.sources[0],
          "title": (f"Data set {config.dataset}, model {name} (step "
                    f"{model.trained_steps}): "
                    + (f"{model.sources[0]} fails ({fault}"
                       + (", not in the built-in list" if fault in unlisted else "")
                       + f") at frame {fail}" if fault else "all cameras healthy")),
      }, os.path.join(output_dir, f"filter_{fault or 'healthy'}.png")))
  # Frames with every camera missing; each camera missing on its own.
  dropped_rmse = {"PoE (prior)": [], "filter": []}
  per_camera = {k: [] for k in ("PoE (present)", "filter", "robust filter", "PoE (all)",
                                "filter (all)")}
  per_camera_alarms, per_camera_present = [], []
  for i in range(num_healthy):
    truth, loc, scale = _healthy(model, config, seed, frames_per_rotation, 100 + i)
    num_frames, num_sources = loc.shape[:2]
    rng = np.random.default_rng([seed, 11, i])
    missing = rng.random(num_frames) < dropout
    missing[0] = False
    present = np.repeat((~missing)[:, None, None], num_sources, 1).astype(np.float32)
    filtered, _ = filtering.filter_sequence(loc, scale, transition, present)
    poe = _poe(loc, scale, present[:, :, 0])
    dropped_rmse["PoE (prior)"].append(_rmse(
        _position(model, poe[0], poe[1], num_samples, seed), truth, missing))
    dropped_rmse["filter"].append(_rmse(
        _position(model, filtered[0][:, 0], filtered[1][:, 0], num_samples, seed), truth,
        missing))
    cameras = _camera_dropout_masks(num_frames, num_sources, camera_dropout,
                                    np.random.default_rng([seed, 12, i]))  # [T, M]
    every = np.arange(num_frames)
    poe = _poe(loc, scale, cameras)
    filtered, _ = filtering.filter_sequence(loc, scale, transition, cameras[..., None])
    robust_f, _, health = filtering.robust_filter_sequence(
        loc, scale, transition, thresholds, present=cameras[..., None],
        frame_weights=_frame_weights(model, loc, scale, cameras), trend_thresholds=trend)
    poe_all = _poe(loc, scale)
    filtered_all, _ = filtering.filter_sequence(loc, scale, transition)
    for key, (m, c) in (("PoE (present)", poe), ("PoE (all)", poe_all),
                        ("filter", (filtered[0][:, 0], filtered[1][:, 0])),
                        ("robust filter", (robust_f[0][:, 0], robust_f[1][:, 0])),
                        ("filter (all)", (filtered_all[0][:, 0], filtered_all[1][:, 0]))):
      per_camera[key].append(_rmse(_position(model, m, c, num_samples, seed), truth, every))
    per_camera_alarms.append(health["alarm"].numpy()[:, :, 0].any(-1))  # [T]
    per_camera_present.append(cameras)
  result = {"rows": rows, "false_alarms": float(np.concatenate(healthy_alarms).mean()),
            "dropout": {k: float(np.mean(v)) for k, v in dropped_rmse.items()},
            "camera_dropout": {k: float(np.mean(v)) for k, v in per_camera.items()},
            "camera_dropout_false_alarms": float(np.concatenate(per_camera_alarms).mean()),
            "camera_dropout_missing": float(1. - np.concatenate(per_camera_present).mean()),
            "thresholds": thresholds.tolist(), "trend_thresholds": trend.tolist()}
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "results.md"), "w") as f:
    f.write(_markdown(result, name, model.trained_steps, num_samples, dropout, target_rate,
                      num_fit, num_calibration, num_healthy, camera_dropout, seed))
  result["paths"] = paths + [os.path.join(output_dir, "results.md")]
  return result


COLUMNS = ["PoE", "PoE(healthy)", "robust", "filter", "robust filter, prediction only",
           "robust filter, no trend test", "robust filter"]


def _table(rows, healthy) -> list:
  """Markdown lines of the RMSE table of `rows` (`{sequence: row}`); "vs. healthy"
  relative to the robust filter's RMSE `healthy`."""
  lines = ["| sequence | " + " | ".join(COLUMNS) + " | robust filter vs. healthy | "
           "detected | delay |", "|---|" + "---:|" * (len(COLUMNS) + 3)]
  for fault, row in rows.items():
    detected = "" if np.isnan(row["detected"]) else f"{100 * row['detected']:.1f} %"
    reference = fault in ("healthy", HEALTHY_AFTER)
    delay = "" if reference else (str(row["delay"]) if row["delay"] >= 0 else "never")
    ratio = "" if reference else f"{100 * (row['robust filter'] / healthy - 1.):+.0f} %"
    lines.append(f"| {fault} | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS)
                 + f" | {ratio} | {detected} | {delay} |")
  return lines


def _markdown(result, name, step, num_samples, dropout, target_rate, num_fit,
              num_calibration, num_healthy, camera_dropout, seed) -> str:
  rows = result["rows"]
  healthy = rows[HEALTHY_AFTER]["robust filter"]
  references = {k: rows[k] for k in ("healthy", HEALTHY_AFTER)}
  listed = {k: v for k, v in rows.items() if not v["unlisted"]}
  unlisted = {k: v for k, v in rows.items() if v["unlisted"]}
  per_camera = result["camera_dropout"]
  lines = [
      f"Model: {name} (step {step}). Transition fitted to the PoE means of {num_fit} "
      f"healthy sequences; thresholds of the prediction conflict and of the trend test "
      f"calibrated together on {num_calibration} others at a target of "
      f"{100 * target_rate:.1f} % frames with an alarm; predictions "
      f"the mean of {num_samples} latent samples; seed {seed}.", "",
      "RMSE of the position (healthy: the healthy sequence before the failure time; "
      f"{HEALTHY_AFTER}: the same after it; faults: after camera 0 fails); robust filter "
      "vs. healthy: its RMSE relative to the robust filter's on the same frames of the "
      f"healthy sequence (row {HEALTHY_AFTER}; target within +10 %); detected: camera 0's "
      "alarm (either test) under the robust filter on the faulty frames, delay: frames to "
      "its first alarm.", ""] + _table(listed, healthy)
  if unlisted:
    lines += ["", "Faults not in the built-in list (`pendulum_faults.UNLISTED_FAULTS`; the "
              "filter and its thresholds were not tuned on them):", ""] + _table(
                  {**references, **unlisted}, healthy)
  lines += ["", f"Robust filter, frames of {num_healthy} healthy sequences with any "
            f"camera's alarm: {100 * result['false_alarms']:.1f} %.", "",
            f"Every camera missing on {100 * dropout:.0f} % of the frames of {num_healthy} "
            "healthy sequences, RMSE on those frames: per-frame PoE (the prior's guess) "
            f"{result['dropout']['PoE (prior)']:.3f}, filter (prediction) "
            f"{result['dropout']['filter']:.3f}.", "",
            f"Each camera missing on its own with probability {camera_dropout:.1f} (at least "
            f"one per frame; {100 * result['camera_dropout_missing']:.1f} % of the camera "
            f"frames missing) in the same {num_healthy} healthy sequences, RMSE on every "
            "frame (mean over the sequences): per-frame PoE of the present cameras "
            f"{per_camera['PoE (present)']:.3f}, filter {per_camera['filter']:.3f}, robust "
            f"filter {per_camera['robust filter']:.3f}; without drop-outs: per-frame PoE "
            f"{per_camera['PoE (all)']:.3f}, filter {per_camera['filter (all)']:.3f}. "
            "Robust filter, frames with any camera's alarm: "
            f"{100 * result['camera_dropout_false_alarms']:.1f} %.", ""]
  return "\n".join(lines)
