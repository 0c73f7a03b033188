"""Sec. 5.3 experiment: three cameras, a failing sensor, conflict and robust integration.

For every fault type of `msnvi_tf.data.pendulum_faults.FAULTS`, the pendulum rotates
three times in front of the cameras and camera 0 fails after two rotations. On
that sequence the experiment computes

  * the predictive mean and std of the bob's (x, y) from every single camera,
    every PoE subset (Eq. 3) and the robust integration (`msnvi_tf.core.robust`)
    with the model's calibrated thresholds and with tau = 1, from
    `num_samples` latent samples (Eq. 6): mean and std over z_k ~ q_S of the
    decoder means E[x | z_k], the same noise for every prediction;
  * the conflict measures c(m || m') of Eq. (2) for every ordered pair, and
    every camera's score, alarm and robust weight (Eqs. R2-R6);
  * the RMSE of the position against the truth before and after the failure:

        RMSE = sqrt(1/(2|T|) sum_{t in T} sum_{d in {x, y}} (xhat_td - x_td)^2),  (1)

    over the frames T = {t < t_fail} ("before") or {t >= t_fail} ("after").

Beyond the paper, the sensor-health report (`msnvi_tf.experiments.health_report`): false
alarms on `num_healthy` healthy sequences (other noise, other start angles),
and per fault type the detection rate and delay of camera 0's alarm, the
alarms on healthy cameras after the failure, the RMSE of the robust
integration minus that of the PoE of the healthy cameras, and the ROC of
camera 0's score, each with the calibrated thresholds, with tau = 1, and for
the sequential monitor (`msnvi_tf.core.monitor`, calibrated on `num_healthy` further
healthy sequences). A model that is not calibrated (trained before calibration
existed) is calibrated first on `calibration_size` healthy frames at random
angles.

`run_experiment` writes Fig. 5 per fault type (`pendulum.figures.fig5_pendulum`), the ROC
curves (`figures.roc_curves`) and results.md (`pendulum.report`).
"""
import itertools
import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from msnvi_tf.core import calibration
from msnvi_tf.core import conflict as conflict_lib
from msnvi_tf.core import integration
from msnvi_tf.core import monitor as monitor_lib
from msnvi_tf.data import pendulum
from msnvi_tf.data import pendulum_faults
from msnvi_tf.experiments import figures
from msnvi_tf.experiments import health_report
from msnvi_tf.experiments.pendulum import figures as pendulum_figures
from msnvi_tf.experiments.pendulum import report as pendulum_report
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["ROBUST", "ROBUST_FIXED", "CALIBRATED", "FIXED", "MONITOR", "subsets", "label",
           "ensure_calibrated", "faulty_sequence", "run_sequence", "healthy_health", "health_table",
           "run_experiment"]

ROBUST = "robust"  # with the model's thresholds
ROBUST_FIXED = "robust, tau = 1"
CALIBRATED, FIXED = health_report.CALIBRATED, health_report.FIXED
MONITOR = f"monitor (W = {monitor_lib.WINDOW})"


def subsets(sources: Sequence[str]) -> List[tuple]:
  """Every non-empty subset of `sources`, singles first, the full set last."""
  return [combo for size in range(1, len(sources) + 1)
          for combo in itertools.combinations(sources, size)]


def label(subset: Sequence[str]) -> str:
  """Row name of a subset: the camera itself, or "PoE(...)" of several."""
  return subset[0] if len(subset) == 1 else "PoE(" + ", ".join(subset) + ")"


def _predict(model, loc, scale, num_samples: int, seed: int):
  """Mean and std `[T, 2]` over latent samples of E[position | z] (Eq. 6)."""
  shape = tf.concat([[num_samples], tf.shape(loc)], 0)  # [K, T, Dz]
  z = loc + scale * tf.random.stateless_normal(shape, seed=[seed, 0])
  samples = model.decoders[pendulum.TARGET].mean(z).numpy()  # [K, T, 2]
  return samples.mean(0), samples.std(0)


def faulty_sequence(rig, num_frames, seed, noise_std=0.1, num_rotations=3., fault=None,
                    fault_sensor=0, fault_start=None, start_angle=0.):
  """`pendulum.make_sequence`, also with a fault of `pendulum_faults.UNLISTED_FAULTS`.

  An unlisted fault is injected into the healthy sequence of the same seed
  (`pendulum_faults.inject_unlisted_fault`, its randomness from `seed`), so its
  healthy cameras and frames are those of every other fault's sequence.
  """
  if fault not in pendulum_faults.UNLISTED_FAULTS:
    return pendulum.make_sequence(rig, num_frames, seed, noise_std, num_rotations, fault,
                                  fault_sensor, fault_start, start_angle)
  batch, angles = pendulum.make_sequence(rig, num_frames, seed, noise_std, num_rotations,
                                         start_angle=start_angle)
  start = (2 * num_frames) // 3 if fault_start is None else fault_start
  faulty = pendulum_faults.inject_unlisted_fault(
      np.stack([batch[s] for s in pendulum.SOURCES]), rig.render(angles), fault,
      fault_sensor, start, seed)
  batch.update({s: faulty[i] for i, s in enumerate(pendulum.SOURCES)})
  return batch, angles


def _sequence(model, config, num_frames, seed, num_rotations, fault=None,
              fault_sensor=0, fault_start=None, start_angle=0.):
  """A rendered sequence and the stacked beliefs `[M, T, Dz]` of its frames."""
  batch, angles = faulty_sequence(
      pendulum.Rig.from_config(config), num_frames, seed, config.noise_std,
      num_rotations, fault, fault_sensor, fault_start, start_angle)
  x = {k: tf.constant(v) for k, v in batch.items()}
  loc, scale = model.encode_stacked(x, model.sources)
  return batch, angles, loc, scale


def run_sequence(model, config, fault, num_rotations: int = 3,
                 frames_per_rotation: int = 120, fail_after: float = 2.,
                 fault_sensor: int = 0, num_samples: int = 500, seed: int = 1):
  """Renders a sequence with a failing camera and runs every integration on it.

  Args:
    model: trained pendulum `MultiSourceVAE` (its conflict thresholds are used).
    config: its config (the camera rig).
    fault: one of `pendulum_faults.FAULTS` or `UNLISTED_FAULTS`, or None for
      healthy cameras.
    num_rotations: rotations in the sequence.
    frames_per_rotation: frames per rotation.
    fail_after: rotations before the camera fails.
    fault_sensor: index of the failing camera.
    num_samples: latent samples per prediction.
    seed: seed of the pixel noise, the "noise" fault and the latent samples.

  Returns:
    A dict with `angles [T]`, `images {camera: [T, H, W]}`, `truth [T, 2]`,
    `fault`, `fault_sensor`, `fault_start` (first faulty frame), `sources`,
    `predictions {label: (mean [T, 2], std [T, 2])}`, `conflict [T, M, M]`,
    `thresholds [M, M]`, `health` (`health_report.health_both`) and
    `weights [M, T]` (the calibrated robust weights).
  """
  fault_start = int(round(fail_after * frames_per_rotation))
  batch, angles, loc, scale = _sequence(
      model, config, num_rotations * frames_per_rotation, seed, num_rotations, fault,
      fault_sensor, fault_start)
  sources = model.sources
  health = health_report.health_both(model, loc, scale)
  masks = {label(s): np.array([[float(m in s)] for m in sources]) for s in subsets(sources)}
  masks[ROBUST] = health[CALIBRATED]["weight"]
  masks[ROBUST_FIXED] = health[FIXED]["weight"]
  predictions = {
      name: _predict(model, *integration.poe_stacked(
          loc, scale, tf.constant(mask, tf.float32)), num_samples, seed)
      for name, mask in masks.items()}
  return {
      "angles": angles, "images": {s: batch[s] for s in sources},
      "truth": batch[pendulum.TARGET], "fault": fault, "fault_sensor": fault_sensor,
      "fault_start": fault_start, "sources": sources, "predictions": predictions,
      "conflict": conflict_lib.conflict_stacked(loc, scale).numpy(),
      "thresholds": model.conflict_thresholds.numpy(), "health": health,
      "weights": health[CALIBRATED]["weight"],
  }


def healthy_health(model, config, num_sequences: int, frames_per_rotation: int = 120,
                   num_rotations: int = 3, seed: int = 1, first: int = 0) -> List[dict]:
  """`health_report.health_both` of healthy sequences `first` to `first + num_sequences - 1`.

  Sequence i has the noise seed `seed + 1000 + i` and a random start angle.

  Returns:
    One `{CALIBRATED | FIXED: {"score", "alarm", "weight": [M, T]}}` per sequence.
  """
  parts = []
  for i in range(first, first + num_sequences):
    start_angle = float(np.random.default_rng([seed, i]).uniform(0., 2. * np.pi))
    _, _, loc, scale = _sequence(model, config, num_rotations * frames_per_rotation,
                                 seed + 1000 + i, num_rotations, start_angle=start_angle)
    parts.append(health_report.health_both(model, loc, scale))
  return parts


def _concat(parts, key, field):
  """`[M, sum T]`: one field of `healthy_health` parts, all frames."""
  return np.concatenate([p[key][field] for p in parts], 1)


def health_table(runs: Dict[str, dict], healthy: List[dict], rmse,
                 monitor: monitor_lib.MonitorCalibration) -> Dict[str, dict]:
  """Sensor-health numbers per fault (see `msnvi_tf.experiments.health_report`).

  Args:
    runs: `{fault: run_sequence(...)}`.
    healthy: `healthy_health(...)`, the negatives of the ROC.
    rmse: `pendulum_report.rmse_table(runs)`.
    monitor: the calibrated sequential monitor (`msnvi_tf.core.monitor`), run on the
      calibrated per-frame scores.

  Returns:
    `{fault: {CALIBRATED | FIXED | MONITOR: {"rate", "delay", "misattributed",
    "excess_rmse" (not for MONITOR), "auc", "roc": (fpr, tpr), "point": (fpr,
    tpr) of the alarm}}}`.
  """
  negatives = {CALIBRATED: _concat(healthy, CALIBRATED, "score"),
               FIXED: _concat(healthy, FIXED, "score"),
               MONITOR: np.concatenate(
                   [monitor_lib.windowed_log_scores(p[CALIBRATED]["score"], monitor.window)
                    for p in healthy], 1)}  # each [M, N]
  alarm_levels = {CALIBRATED: 1., FIXED: 1., MONITOR: monitor.thresholds[:, None]}
  robust_rows = {CALIBRATED: ROBUST, FIXED: ROBUST_FIXED, MONITOR: None}
  table = {}
  for fault, run in runs.items():
    m, start = run["fault_sensor"], run["fault_start"]
    healthy_rows = label([s for i, s in enumerate(run["sources"]) if i != m])
    scores = {CALIBRATED: run["health"][CALIBRATED]["score"],
              FIXED: run["health"][FIXED]["score"],
              MONITOR: monitor_lib.windowed_log_scores(run["health"][CALIBRATED]["score"],
                                                       monitor.window)}  # each [M, T]
    row = {}
    for key, score in scores.items():
      level = np.broadcast_to(alarm_levels[key], (score.shape[0], 1))  # [M, 1]
      negative, positive = negatives[key][m], score[m, start:]
      entry = health_report.detection(score > level, m, start)
      robust_row = robust_rows[key]
      if robust_row:
        entry["excess_rmse"] = rmse[robust_row][fault] - rmse[healthy_rows][fault]
      entry["auc"] = health_report.roc_auc(negative, positive)
      entry["roc"] = health_report.roc_curve(negative, positive)
      entry["point"] = (float(np.mean(negative > level[m, 0])),
                        float(np.mean(positive > level[m, 0])))
      row[key] = entry
    table[fault] = row
  return table


def _false_alarms(healthy: List[dict],
                  monitor: monitor_lib.MonitorCalibration) -> Dict[str, float]:
  """`{CALIBRATED | FIXED | MONITOR: false-alarm rate}` on `healthy_health` parts."""
  rates = {k: calibration.false_alarm_rate(_concat(healthy, k, "alarm"))
           for k in (CALIBRATED, FIXED)}
  rates[MONITOR] = calibration.false_alarm_rate(np.concatenate(
      [monitor_lib.monitor_alarms(p[CALIBRATED]["score"], monitor) for p in healthy], 1))
  return rates


def ensure_calibrated(model, config, calibration_size: int = 5000, seed: int = 1) -> str:
  """Calibrates the conflict thresholds of an uncalibrated model; says how they were.

  A model calibrated at the end of training keeps its thresholds; otherwise they
  are calibrated on `calibration_size` healthy frames at random angles.
  """
  if model.conflict_calibrated:
    return "at the end of training, on the evaluation set"
  target = config.conflict_false_alarm_rate
  data = pendulum.healthy_frames(config, calibration_size, seed + 7)
  result = model.calibrate_conflict(
      tf.data.Dataset.from_tensor_slices(data).batch(1000), target)
  return (f"by this experiment on {calibration_size} healthy frames at "
          f"random angles (quantile {result.level:.4f})")


def run_experiment(workdir: str, output_dir: str,
                   faults: Sequence[str] = pendulum_faults.FAULTS,
                   frames_per_rotation: int = 120, num_samples: int = 500,
                   seed: int = 1, num_healthy: int = 10,
                   calibration_size: int = 5000) -> List[str]:
  """Loads a trained workdir, runs every fault, writes Fig. 5, the ROC PNG and results.md.

  Args:
    workdir: a workdir written by `bin/train --dataset=pendulum`.
    output_dir: output directory.
    faults: fault types to simulate on camera 0.
    frames_per_rotation: frames per rotation (3 rotations, failure after 2).
    num_samples: latent samples per prediction.
    seed: seed of the pixel noise and the latent samples.
    num_healthy: healthy sequences for the false alarms and the ROC.
    calibration_size: healthy frames (random angles) to calibrate a model
      that is not calibrated yet.

  Returns:
    The written paths.
  """
  model, config = workdir_lib.load_trained(workdir)
  if config.dataset != "pendulum":
    raise ValueError(f"{workdir} holds a {config.dataset!r} model, not 'pendulum'.")
  target = config.conflict_false_alarm_rate
  calibrated_by = ensure_calibrated(model, config, calibration_size, seed)
  runs = {f: run_sequence(model, config, f, frames_per_rotation=frames_per_rotation,
                          num_samples=num_samples, seed=seed) for f in faults}
  healthy = healthy_health(model, config, num_healthy, frames_per_rotation, seed=seed)
  monitor = monitor_lib.calibrate_monitor(
      [p[CALIBRATED]["score"] for p in healthy_health(
          model, config, num_healthy, frames_per_rotation, seed=seed, first=num_healthy)],
      monitor_lib.WINDOW, target)
  rmse = pendulum_report.rmse_table(runs)
  health = health_table(runs, healthy, rmse, monitor)
  os.makedirs(output_dir, exist_ok=True)
  paths = [pendulum_figures.fig5_pendulum(run, os.path.join(output_dir, f"fig5_{f}.png"))
           for f, run in runs.items()]
  paths.append(figures.roc_curves(
      {f: {k: (e["roc"], e["auc"], e["point"]) for k, e in row.items()}
       for f, row in health.items()},
      os.path.join(output_dir, "roc.png"),
      f"ROC of {model.sources[0]}'s conflict score (healthy frames vs. frames after "
      "its failure)"))
  sources = model.sources
  rows = list(sources) + [label(sources), label(sources[1:]), ROBUST, ROBUST_FIXED]
  header = (f"Model: {workdir_lib.run_name(workdir)} (L_{config.objective}, "
            f"{model.trained_steps} steps); conflict thresholds "
            f"calibrated {calibrated_by} (target false-alarm rate {target}). Camera 0 "
            f"fails after 2 of 3 rotations ({frames_per_rotation} frames per "
            f"rotation); predictions are the mean of {num_samples} latent samples; "
            f"the monitor (`msnvi_tf.core.monitor`, W = {monitor.window}) calibrated on "
            f"{num_healthy} other healthy sequences ({monitor.num_frames} frames, "
            f"quantile {monitor.level:.4f}); seed {seed}.\n")
  path = os.path.join(output_dir, "results.md")
  with open(path, "w") as f:
    num_frames = _concat(healthy, CALIBRATED, "alarm").shape[1]
    f.write(pendulum_report.results_markdown(
        rmse, health, _false_alarms(healthy, monitor), num_frames, rows, header))
  return paths + [path]
