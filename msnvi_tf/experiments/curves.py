"""Learning curves of trained workdirs: test bound against steps and wall-clock hours.

`bin/train` writes the evaluation bounds under every integration to
`<workdir>/eval/` (TensorBoard); `read_curves` reads them back with each event's
wall time, and `plot_learning_curves` draws several runs in one PNG, one panel
against hours of training and one against steps.

Hours of training are wall-clock time inside bin/train: every run of bin/train
writes its own event files, which span its time from start to last event; a
run stopped and resumed later counts its runs' spans, not the pause between.
"""
import glob
import os
from typing import Dict, List, Mapping, Optional, Sequence

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

__all__ = ["read_curves", "plot_learning_curves"]


def _event_files(directory: str):
  return sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*")))


def _read(path: str):
  """The `tf.compat.v1.Event`s of one event file, up to a torn last record.

  A run killed while writing an event (SIGKILL, power loss) leaves a partial
  record at the end of its file: the events before it count, as in TensorBoard.
  """
  try:
    for record in tf.data.TFRecordDataset(path):
      yield tf.compat.v1.Event.FromString(record.numpy())
  except tf.errors.DataLossError:
    return


def _sessions(files: Sequence[Sequence]) -> List[List[float]]:
  """`[[start, end], ...]` wall times of the runs of bin/train, in order.

  Args:
    files: the events of each train and eval event file of a workdir. Each run
      writes one event file per directory, opened (its first event, the file
      version) when the run starts; overlapping spans of files are one run.
  """
  spans = []
  for events in files:
    times = [e.wall_time for e in events if e.wall_time]
    if times:
      spans.append([min(times), max(times)])
  sessions = []
  for start, end in sorted(spans):
    if sessions and start <= sessions[-1][1]:
      sessions[-1][1] = max(sessions[-1][1], end)
    else:
      sessions.append([start, end])
  return sessions


def _hours_of_training(wall_time: float, sessions: Sequence[Sequence[float]]) -> float:
  """Hours inside `sessions` up to `wall_time`."""
  return sum(max(0., min(wall_time, end) - start) for start, end in sessions) / 3600.


def _value(summary_value) -> float:
  if summary_value.HasField("simple_value"):
    return float(summary_value.simple_value)
  return float(tf.make_ndarray(summary_value.tensor))


def read_curves(workdir: str) -> Dict[str, Dict[str, np.ndarray]]:
  """`{tag: {"step", "hours", "value"}}` of the eval scalars of `workdir`, by step.

  Hours: of training up to the evaluation (the runs of bin/train, pauses between
  them excluded; see the module docstring). A step logged twice (a resumed run)
  keeps the value written last (by wall time: event files written within one
  second need not sort by name in writing order).

  Raises:
    FileNotFoundError: the workdir has no evaluation scalars (no event files,
      or only their headers: a run stopped before its first evaluation).
  """
  files = {directory: [list(_read(path))
                       for path in _event_files(os.path.join(workdir, directory))]
           for directory in ("train", "eval")}
  events = sorted((e for f in files["eval"] for e in f), key=lambda e: e.wall_time)
  sessions = _sessions(files["train"] + files["eval"])
  points: Dict[str, Dict[int, tuple]] = {}
  for event in events:
    for value in event.summary.value:
      points.setdefault(value.tag, {})[event.step] = (
          _hours_of_training(event.wall_time, sessions), _value(value))
  if not points:
    raise FileNotFoundError(f"No evaluation events in {workdir}/eval: train it with bin/train.")
  curves = {}
  for tag, by_step in points.items():
    steps = np.array(sorted(by_step))
    hours, values = zip(*(by_step[s] for s in steps))
    curves[tag] = {"step": steps, "hours": np.array(hours), "value": np.array(values)}
  return curves


def plot_learning_curves(runs: Mapping[str, str], path: str,
                         tags: Sequence[str] = ("bound_poe",),
                         title: str = "", references: Optional[Mapping[str, float]] = None
                         ) -> str:
  """Draws `-tag` (nats, lower is better) of every run against hours and steps.

  Args:
    runs: `{label: workdir}`.
    path: the PNG to write.
    tags: eval scalars to draw per run (solid, dashed, ... in this order); a
      tag a run lacks, or one equal to the previous tag throughout (the IWAE's
      single encoder), is skipped.
    title: figure title.
    references: optional `{label: nats}` drawn as horizontal dotted lines (the
      paper's numbers), in the colour of the run of that label if there is one.

  Returns:
    `path`.

  Raises:
    FileNotFoundError: a run has no evaluation of `tags` (the message names
      every such workdir); nothing is written.
  """
  read = {}
  for label, workdir in runs.items():
    try:
      read[label] = read_curves(workdir)
    except FileNotFoundError:
      read[label] = {}
  empty = [workdir for label, workdir in runs.items()
           if not any(tag in read[label] for tag in tags)]
  if empty:
    raise FileNotFoundError(
        f"No evaluation events ({', '.join(tags)}) in {', '.join(empty)}: nothing to draw "
        "for them, no figure written. Leave them out, or train them past their first "
        "evaluation (eval_every) with bin/train.")
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
  styles = ["-", "--", ":", "-."]
  colours = plt.get_cmap("tab10")
  for i, label in enumerate(runs):
    curves = read[label]
    previous = None
    for tag, style in zip(tags, styles):
      if tag not in curves:
        continue
      curve = curves[tag]
      if previous is not None and np.array_equal(curve["value"], previous):
        continue
      previous = curve["value"]
      for ax, x in zip(axes, ("hours", "step")):
        ax.plot(curve[x], -curve["value"], style, color=colours(i % 10), marker=".",
                label=f"{label} ({tag.replace('bound_', '')})")
  labels = list(runs)
  for j, (name, nats) in enumerate((references or {}).items()):
    colour = colours((labels.index(name) if name in runs else len(runs) + j) % 10)
    for ax in axes:
      ax.axhline(nats, color=colour, linestyle=":", linewidth=1,
                 label=f"paper: {name} ({nats:.2f})" if ax is axes[1] else None)
  axes[0].set_xlabel("hours of training (wall clock, pauses between runs excluded)")
  axes[1].set_xlabel("training steps")
  axes[0].set_ylabel("negative test bound (nats, lower is better)")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
