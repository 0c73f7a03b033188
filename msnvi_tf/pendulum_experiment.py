"""Sec. 5.3 experiment: three cameras, a failing sensor, conflict and robust integration.

For every fault type of `msnvi_tf.data.pendulum.FAULTS`, the pendulum rotates
three times in front of the cameras and camera 0 fails after two rotations. On
that sequence the experiment computes

  * the predictive mean and std of the bob's (x, y) from every single camera,
    every PoE subset (Eq. 3) and the robust integration (`msnvi_tf.robust`),
    from `num_samples` latent samples (Eq. 6): mean and std over z_k ~ q_S of the
    decoder means E[x | z_k], i.e. the spread that the belief induces;
  * the conflict measures c(m || m') of Eq. (2) for every ordered pair;
  * the robust weights w_m of Eq. (R5);
  * the RMSE of x and y against the truth before and after the failure:

        RMSE_d = sqrt(mean_t (xhat_{t,d} - x_{t,d})^2),  d in {x, y},      (1)

    over the frames t < t_fail ("before") or t >= t_fail ("after").

`run_experiment` writes Fig. 5 per fault type (`plots.fig5_pendulum`) and the
RMSE table as Markdown.
"""
import itertools
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from msnvi_tf import beliefs as beliefs_lib
from msnvi_tf import plots
from msnvi_tf import robust
from msnvi_tf import training
from msnvi_tf.data import pendulum

__all__ = ["ROBUST", "subsets", "label", "run_sequence", "rmse_table",
           "results_markdown", "run_experiment"]

ROBUST = "robust"


def subsets(sources: Sequence[str]) -> List[tuple]:
  """Every non-empty subset of `sources`, singles first, the full set last."""
  return [combo for size in range(1, len(sources) + 1)
          for combo in itertools.combinations(sources, size)]


def label(subset: Sequence[str]) -> str:
  """Row name of a subset: the camera itself, or "PoE(...)" of several."""
  return subset[0] if len(subset) == 1 else "PoE(" + ", ".join(subset) + ")"


def run_sequence(model, config, fault: Optional[str], num_rotations: int = 3,
                 frames_per_rotation: int = 120, fail_after: float = 2.,
                 fault_sensor: int = 0, num_samples: int = 500, seed: int = 1):
  """Renders a sequence with a failing camera and runs every integration on it.

  Args:
    model: trained pendulum `MultiSourceVAE`.
    config: its config (the camera rig).
    fault: a key of `pendulum.FAULTS`, or None for healthy cameras.
    num_rotations: rotations in the sequence.
    frames_per_rotation: frames per rotation.
    fail_after: rotations before the camera fails.
    fault_sensor: index of the failing camera.
    num_samples: latent samples per prediction.
    seed: seed of the pixel noise (and of the "noise" fault).

  Returns:
    A dict with `angles [T]`, `images {camera: [T, H, W]}`, `truth [T, 2]`,
    `fault`, `fault_sensor`, `fault_start` (first faulty frame), `sources`,
    `predictions {label: (mean [T, 2], std [T, 2])}`, `conflict [T, M, M]` and
    `weights [M, T]`.
  """
  num_frames = num_rotations * frames_per_rotation
  fault_start = int(round(fail_after * frames_per_rotation))
  batch, angles = pendulum.make_sequence(
      pendulum.Rig.from_config(config), num_frames, seed, config.noise_std,
      num_rotations, fault, fault_sensor, fault_start)
  x = {k: tf.constant(v) for k, v in batch.items()}
  sources = model.sources
  methods = [(label(s), list(s), "poe") for s in subsets(sources)]
  methods.append((ROBUST, sources, ROBUST))
  predictions = {}
  for name, subset, method in methods:
    _, samples = model.predict(x, sources=subset, targets=[pendulum.TARGET],
                               method=method, num_samples=num_samples,
                               return_samples=True)
    samples = samples[pendulum.TARGET].numpy()  # [K, T, 2]
    predictions[name] = (samples.mean(0), samples.std(0))
  loc, scale = beliefs_lib.stack_beliefs(model.encode(x), sources)  # [M, T, Dz]
  return {
      "angles": angles, "images": {s: batch[s] for s in sources},
      "truth": batch[pendulum.TARGET], "fault": fault, "fault_sensor": fault_sensor,
      "fault_start": fault_start, "sources": sources, "predictions": predictions,
      "conflict": model.conflict(x).numpy(),
      "weights": robust.robust_weights(loc, scale).numpy(),
  }


def _rmse(pred, truth):
  """Eq. (1): `[T, 2]`, `[T, 2]` -> `[2]` (x, y)."""
  return np.sqrt(np.mean(np.square(pred - truth), 0))


def rmse_table(runs: Dict[str, dict]) -> Dict[str, Dict[str, np.ndarray]]:
  """RMSE (x, y) of every prediction before and after the failure, Eq. (1).

  Args:
    runs: `{fault: run_sequence(...)}`; all runs share the frames before the
      failure (same seed), whose RMSE is taken from the first run.

  Returns:
    `{label: {"before": [2], fault: [2], ...}}`.
  """
  first = next(iter(runs.values()))
  table = {}
  for name in first["predictions"]:
    start = first["fault_start"]
    row = {"before": _rmse(first["predictions"][name][0][:start], first["truth"][:start])}
    for fault, run in runs.items():
      start = run["fault_start"]
      row[fault] = _rmse(run["predictions"][name][0][start:], run["truth"][start:])
    table[name] = row
  return table


def results_markdown(table, runs: Dict[str, dict], rows: Sequence[str],
                     header: str = "") -> str:
  """The RMSE table (and robust-weight summary) as Markdown.

  Args:
    table: `rmse_table(runs)`.
    runs: the runs it was computed from.
    rows: labels to show, in order.
    header: text placed above the table.

  Returns:
    Markdown text.
  """
  columns = ["before"] + list(runs)
  titles = ["before failure"] + [f"after: {f}" for f in runs]
  lines = [header] if header else []
  lines.append("| prediction from | " + " | ".join(
      f"{t} x | {t} y" for t in titles) + " |")
  lines.append("|---|" + "---:|" * (2 * len(columns)))
  for name in rows:
    cells = [f"{v:.3f}" for c in columns for v in table[name][c]]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("| robust weights | " + " | ".join(titles) + " |")
  lines.append("|---|" + "---:|" * len(columns))
  for m, source in enumerate(next(iter(runs.values()))["sources"]):
    cells = []
    for c in columns:
      run = next(iter(runs.values())) if c == "before" else runs[c]
      w = run["weights"][m]
      w = w[:run["fault_start"]] if c == "before" else w[run["fault_start"]:]
      cells.append(f"{w.mean():.3f}")
    lines.append(f"| mean w of {source} | " + " | ".join(cells) + " |")
  run = next(iter(runs.values()))
  unchanged = np.all(run["weights"][:, :run["fault_start"]] >= 1., 0).mean()
  lines.append("")
  lines.append(f"Before the failure, the robust integration equals the PoE of all "
               f"cameras (every w_m = 1) on {100. * unchanged:.1f} % of the frames.")
  return "\n".join(lines) + "\n"


def run_experiment(workdir: str, out_dir: str,
                   faults: Sequence[str] = pendulum.FAULTS,
                   frames_per_rotation: int = 120, num_samples: int = 500,
                   seed: int = 1) -> List[str]:
  """Loads a trained workdir, runs every fault, writes Fig. 5 PNGs and results.md.

  Args:
    workdir: a workdir written by `bin/train --dataset=pendulum`.
    out_dir: output directory.
    faults: fault types to simulate on camera 0.
    frames_per_rotation: frames per rotation (3 rotations, failure after 2).
    num_samples: latent samples per prediction.
    seed: seed of the pixel noise; the latent samples use `seed` too.

  Returns:
    The written paths.
  """
  model, config = training.load_trained(workdir)
  if config.dataset != "pendulum":
    raise ValueError(f"{workdir} holds a {config.dataset!r} model, not 'pendulum'.")
  tf.random.set_seed(seed)
  runs = {f: run_sequence(model, config, f, frames_per_rotation=frames_per_rotation,
                          num_samples=num_samples, seed=seed) for f in faults}
  paths = [plots.fig5_pendulum(run, os.path.join(out_dir, f"fig5_{f}.png"),
                               robust.THRESHOLD)
           for f, run in runs.items()]
  sources = model.sources
  rows = list(sources) + [label(sources), label(sources[1:]), ROBUST]
  header = (f"RMSE of the predicted bob position (mean of {num_samples} latent "
            f"samples) against the truth; camera 0 fails after 2 of 3 rotations "
            f"({frames_per_rotation} frames per rotation). Model: {workdir} "
            f"(L_{config.objective}, {int(model.optimizer.iterations.numpy())} "
            "steps).\n")
  path = os.path.join(out_dir, "results.md")
  os.makedirs(out_dir, exist_ok=True)
  with open(path, "w") as f:
    f.write(results_markdown(rmse_table(runs), runs, rows, header))
  return paths + [path]
