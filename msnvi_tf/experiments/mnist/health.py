"""Sensor-health report on MNIST-QU / MNIST-NO: one source corrupted (beyond the paper).

The calibrated conflict alarms (`msnvi_tf.core.calibration`, `msnvi_tf.core.robust`) are
generic over data sets with three or more sources. Here one source of the
test images (default: the first, "q0" of MNIST-QU or "noisy0" of MNIST-NO) is
corrupted in ways that keep it a plausible binary digit part but make its
content wrong, or loudly (`CORRUPTIONS`):

  swap    the same source of another test digit with a different label;
  shift   its content moved right by `shift` pixels (zeros enter on the left);
  rotate  its content turned by 90 degrees;
  blank   all pixels 0 (a dead sensor; many digits leave a quadrant empty);
  noise   i.i.d. Bernoulli(0.5) pixels (loud).

The test set is split in halves: the first calibrates the thresholds (replacing
the stored calibration for this report), the second gives the healthy examples
(false alarms, ROC negatives) and, corrupted, the faulty ones. Per corruption:
detection rate of the corrupted source's alarm, alarms on healthy sources, the
ROC and AUC of its score, and the pixel RMSE of the reconstructed clean digit
(the mean of p(x_t | z) over `num_samples` latent samples of a belief, every
target) against the healthy binarised test digit, from the PoE of all sources,
the PoE of the healthy ones and the robust integration with calibrated
thresholds and with tau = 1. There is no time axis, so no delay.
"""
import math
import os
from typing import List, Sequence

import numpy as np
import tensorflow as tf

from msnvi_tf.core import calibration
from msnvi_tf.core import integration
from msnvi_tf.data import mnist
from msnvi_tf.data import mnist_files
from msnvi_tf.experiments import figures
from msnvi_tf.experiments import health_report
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["CORRUPTIONS", "corrupt", "run_experiment"]

CORRUPTIONS = ("swap", "shift", "rotate", "blank", "noise")
_CALIBRATED, _FIXED = health_report.CALIBRATED, health_report.FIXED
_CHUNK = 1000  # examples per encoder / decoder call


def _partners(labels, rng) -> np.ndarray:
  """For every example, another example with a different label."""
  labels = np.asarray(labels)
  partner = rng.permutation(len(labels))
  for _ in range(1000):
    same = labels[partner] == labels
    if not same.any():
      return partner
    partner[same] = rng.integers(0, len(labels), int(same.sum()))
  raise ValueError("corrupt('swap') needs examples of at least two labels.")


def corrupt(values, kind: str, seed: int, labels=None, shift: int = 3) -> np.ndarray:
  """One source's examples `[N, D]` (binary square images, D = side^2) corrupted.

  Args:
    values: `[N, D]` healthy examples.
    kind: one of `CORRUPTIONS`.
    seed: seed of "swap" and "noise".
    labels: `[N]` digit labels ("swap" only).
    shift: pixels of "shift".

  Returns:
    `[N, D]` float32.

  Raises:
    ValueError: unknown kind, non-square D, or "swap" without labels.
  """
  if kind not in CORRUPTIONS:
    raise ValueError(f"Unknown corruption {kind!r}; choose one of {CORRUPTIONS}.")
  values = np.asarray(values, np.float32)
  num, dim = values.shape
  side = math.isqrt(dim)
  if side * side != dim:
    raise ValueError(f"corrupt needs square images; got {dim} values per example.")
  rng = np.random.default_rng(seed)
  images = values.reshape(num, side, side)
  if kind == "swap":
    if labels is None:
      raise ValueError("corrupt('swap') needs the labels.")
    out = images[_partners(labels, rng)]
  elif kind == "shift":
    out = np.zeros_like(images)
    out[:, :, shift:] = images[:, :, :side - shift]
  elif kind == "rotate":
    out = np.rot90(images, 1, axes=(1, 2))
  elif kind == "blank":
    out = np.zeros_like(images)
  else:
    out = (rng.random(images.shape) < 0.5).astype(np.float32)
  return np.ascontiguousarray(out).reshape(num, dim)


def _beliefs(model, x):
  """Stacked beliefs `([M, N, Dz], [M, N, Dz])` float32 of all sources, in chunks."""
  num = len(next(iter(x.values())))
  parts = [model.encode_stacked({s: tf.constant(x[s][i:i + _CHUNK]) for s in model.sources},
                                model.sources)
           for i in range(0, num, _CHUNK)]
  return tf.concat([p[0] for p in parts], 1), tf.concat([p[1] for p in parts], 1)


def _reconstruction_rmse(model, loc, scale, mask, truth, num_samples, seed) -> float:
  """Pixel RMSE of the mean of p(x_t | z), z ~ the masked PoE, against `truth`."""
  errors = []
  num = loc.shape[1]
  for i in range(0, num, _CHUNK):
    q_loc, q_scale = integration.poe_stacked(
        loc[:, i:i + _CHUNK], scale[:, i:i + _CHUNK], mask[:, i:i + _CHUNK])
    shape = tf.concat([[num_samples], tf.shape(q_loc)], 0)  # [K, n, Dz]
    z = q_loc + q_scale * tf.random.stateless_normal(shape, seed=[seed, i])
    for t in model.targets:
      mean = tf.reduce_mean(model.decoders[t].mean(z), 0).numpy()  # [n, D]
      errors.append(np.square(mean - truth[t][i:i + _CHUNK]).ravel())
  return float(np.sqrt(np.mean(np.concatenate(errors))))


def _corruption_row(model, test, healthy, source: str, kind: str, labels,
                    num_samples: int, seed: int) -> dict:
  """One corruption's detection, ROC and reconstruction RMSEs on the test half.

  Args:
    model: the trained model, calibrated.
    test: `{name: [N, D]}` healthy test examples.
    healthy: `health_report.health_both` of the healthy examples.
    source: the corrupted source.
    kind: a key of `CORRUPTIONS`.
    labels: `[N]` classes of the test examples (for "swap").
    num_samples: latent samples per reconstruction.
    seed: seed of the corruption and the latent samples.

  Returns:
    `{"rmse": {integration: float}, _CALIBRATED | _FIXED: {"rate",
    "misattributed", ..., "auc", "curve"}}`.
  """
  m = model.sources.index(source)
  x = dict(test)
  x[source] = corrupt(test[source], kind, seed, labels)
  c_loc, c_scale = _beliefs(model, x)  # each [M, N, Dz]
  health = health_report.health_both(model, c_loc, c_scale)
  everyone = tf.ones(c_loc.shape[:2])  # [M, N]
  others = tf.constant([[float(i != m)] for i in range(len(model.sources))]) * everyone
  row = {"rmse": {
      name: _reconstruction_rmse(model, c_loc, c_scale, mask, test, num_samples, seed)
      for name, mask in (("PoE(all)", everyone), ("PoE(healthy)", others),
                         ("robust", health[_CALIBRATED]["weight"]),
                         ("robust, tau = 1", health[_FIXED]["weight"]))}}
  for key in (_CALIBRATED, _FIXED):
    negative, positive = healthy[key]["score"][m], health[key]["score"][m]
    row[key] = health_report.detection(health[key]["alarm"], m)
    row[key]["auc"] = health_report.roc_auc(negative, positive)
    row[key]["curve"] = (health_report.roc_curve(negative, positive), row[key]["auc"],
                         (float(np.mean(negative > 1.)), float(np.mean(positive > 1.))))
  return row


def run_experiment(workdir: str, output_dir: str,
                   faults: Sequence[str] = CORRUPTIONS, num_samples: int = 16,
                   seed: int = 1, source: str = "", num_examples: int = 0) -> List[str]:
  """Calibrates on half the test set, corrupts one source of the other half, reports.

  Args:
    workdir: a workdir written by `bin/train --dataset=mnist_qu` (or mnist_no).
    output_dir: where results.md and roc.png are written.
    faults: corruptions to apply (`CORRUPTIONS`).
    num_samples: latent samples per reconstruction.
    seed: seed of the corruptions and latent samples.
    source: the corrupted source (default: the model's first).
    num_examples: the first N test images, halved as above (0: all 10,000).

  Returns:
    The written paths.
  """
  model, config = workdir_lib.load_trained(workdir, eval_size=num_examples)
  if len(model.sources) < 3:
    raise ValueError(f"{workdir}: the report needs >= 3 sources; the model has "
                     f"{model.sources}.")
  source = source or model.sources[0]
  if source not in model.sources:
    raise ValueError(f"{workdir}: no source {source!r}; the model has {model.sources}.")
  examples = {k: v.numpy() for k, v in mnist.make_test_examples(config).items()}
  labels = mnist_files.load_split(config, "test")[1][:len(examples[model.sources[0]])]
  half = len(labels) // 2
  calib = {k: v[:half] for k, v in examples.items()}
  test = {k: v[half:] for k, v in examples.items()}
  target = config.conflict_false_alarm_rate
  result = model.calibrate_conflict(
      tf.data.Dataset.from_tensor_slices(calib).batch(_CHUNK), target)
  healthy = health_report.health_both(model, *_beliefs(model, test))
  rows = {kind: _corruption_row(model, test, healthy, source, kind, labels[half:],
                                num_samples, seed) for kind in faults}
  os.makedirs(output_dir, exist_ok=True)
  roc = figures.roc_curves(
      {k: {key: r[key]["curve"] for key in (_CALIBRATED, _FIXED)} for k, r in rows.items()},
      os.path.join(output_dir, "roc.png"),
      f"{config.dataset}: ROC of {source}'s conflict score (healthy vs. corrupted)")
  path = os.path.join(output_dir, "results.md")
  with open(path, "w") as f:
    f.write(_markdown(rows, healthy, result, workdir, config, model, source, half,
                      num_samples, seed))
  return [roc, path]


def _markdown(rows, healthy, result, workdir, config, model, source, half, num_samples,
              seed) -> str:
  rate = health_report.format_rate
  num = healthy[_CALIBRATED]["alarm"].shape[1]
  false_alarms = {k: rate(calibration.false_alarm_rate(healthy[k]["alarm"]))
                  for k in (_CALIBRATED, _FIXED)}
  lines = [
      f"Model: {workdir_lib.run_name(workdir)} ({config.dataset}, L_{config.objective}, "
      f"{model.trained_steps} steps). Thresholds calibrated on "
      f"test images 0-{half - 1} (quantile {result.level:.4f}, target "
      f"{config.conflict_false_alarm_rate}); "
      f"report on test images {half}-{2 * half - 1} with {source} corrupted; "
      f"{num_samples} latent samples per reconstruction; seed {seed}.", "",
      f"False alarms (healthy images with any source's alarm, {num} images): "
      f"calibrated {false_alarms[_CALIBRATED]}, tau = 1 {false_alarms[_FIXED]}.", "",
      "| corruption | detected (cal.) | healthy source alarmed (cal.) | AUC (cal.) | "
      "detected (tau = 1) | AUC (tau = 1) | RMSE PoE(all) | RMSE PoE(healthy) | "
      "RMSE robust (cal.) | RMSE robust (tau = 1) |",
      "|---|" + "---:|" * 9]
  for kind, r in rows.items():
    cal, fixed, rmse = r[_CALIBRATED], r[_FIXED], r["rmse"]
    lines.append(
        f"| {kind} | {rate(cal['rate'])} | {rate(cal['misattributed'])} | {cal['auc']:.3f} | "
        f"{rate(fixed['rate'])} | {fixed['auc']:.3f} | {rmse['PoE(all)']:.4f} | "
        f"{rmse['PoE(healthy)']:.4f} | {rmse['robust']:.4f} | {rmse['robust, tau = 1']:.4f} |")
  return "\n".join(lines) + "\n"
