"""results.md of the pendulum sensor experiment (`sensors.run_experiment`).

The RMSE of the predicted position before and after the failure (Eq. 1 of
`sensors`), the false alarms on healthy sequences and the per-fault
sensor-health table.
"""
from typing import Dict, Sequence

import numpy as np

from msnvi_tf.experiments import health_report

__all__ = ["rmse_table", "results_markdown"]


def _rmse(pred, truth):
  """Eq. (1): `[T, 2]`, `[T, 2]` -> float."""
  return float(np.sqrt(np.mean(np.square(pred - truth))))


def rmse_table(runs: Dict[str, dict]) -> Dict[str, Dict[str, float]]:
  """RMSE of the position from every prediction before and after the failure, Eq. (1).

  Args:
    runs: `{fault: sensors.run_sequence(...)}`; all runs share the frames before the
      failure (same seed), whose RMSE is taken from the first run.

  Returns:
    `{label: {"before": float, fault: float, ...}}`.
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


def results_markdown(rmse, health, false_alarms, num_frames: int, rows: Sequence[str],
                     header: str) -> str:
  """results.md: the RMSE table, the false alarms and the health table.

  Args:
    rmse: `rmse_table(runs)`.
    health: `sensors.health_table(...)`.
    false_alarms: `{detector: rate}` of the healthy sequences, in column order;
      the first two detectors (calibrated, tau = 1) also have robust RMSEs.
    num_frames: frames of the healthy sequences.
    rows: RMSE table rows (prediction labels).
    header: the paragraph above the tables.

  Returns:
    The Markdown text.
  """
  faults = list(health)
  rate, delay = health_report.format_rate, health_report.format_delay
  lines = [header, "RMSE of the predicted position (Eq. 1):", "",
           "| prediction from | before failure | " + " | ".join(
               f"after: {f}" for f in faults) + " |",
           "|---|" + "---:|" * (len(faults) + 1)]
  for name in rows:
    lines.append(f"| {name} | " + " | ".join(
        f"{rmse[name][c]:.3f}" for c in ["before"] + faults) + " |")
  detectors = tuple(false_alarms)
  lines += ["", f"False alarms (frames of healthy sequences with any camera's alarm, "
            f"{num_frames} frames): " + ", ".join(
                f"{k} {rate(false_alarms[k])}" for k in detectors) + ".", "",
            "| fault | " + " | ".join(f"detected, delay ({k})" for k in detectors)
            + " | healthy camera alarmed (calibrated) | " + " | ".join(
                f"robust - PoE(healthy) RMSE ({k})" for k in detectors[:2])
            + " | " + " | ".join(f"AUC ({k})" for k in detectors) + " |",
            "|---|" + "---:|" * 9]
  for fault in faults:
    row = health[fault]
    lines.append(
        f"| {fault} | " + " | ".join(
            f"{rate(row[k]['rate'])}, {delay(row[k]['delay'])}" for k in detectors)
        + f" | {rate(row[detectors[0]]['misattributed'])} | " + " | ".join(
            f"{row[k]['excess_rmse']:+.3f}" for k in detectors[:2])
        + " | " + " | ".join(f"{row[k]['auc']:.3f}" for k in detectors) + " |")
  return "\n".join(lines) + "\n"
