"""Plotting helpers shared by the experiments' figures, and ROC curves.

Each figure is one function `fig*(..., path, ...)` that draws with matplotlib's
Agg canvas (no pyplot, no display needed), saves a PNG to `path` and returns the
path. The figures of an experiment live in its package (`toy.figures`,
`mnist.figures`, `pendulum.figures`, `cub.figures`); the experiment's `plot`
says which ones `bin/plot` draws.
"""
import os

import numpy as np
from matplotlib import figure as mfigure
from matplotlib.backends import backend_agg

__all__ = ["new_figure", "save_png", "point_colours", "share_limits", "legend_below",
           "roc_curves"]


def new_figure(nrows, ncols, title, panel_size=(5.2, 4.6)):
  """A figure on an Agg canvas with a grid of axes `[nrows, ncols]`."""
  fig = mfigure.Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows + 0.6),
                       layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  fig.suptitle(title)
  return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_png(fig, path):
  """Writes `fig` as a PNG to `path`, creating its directory; returns `path`."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=110)
  return path


def point_colours(num):
  """Distinct colours, one per test point."""
  palette = [
      "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
      "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
  return [palette[i % len(palette)] for i in range(num)]


def share_limits(axes):
  """Gives `axes` the union of their data limits and equal aspect, to compare them."""
  lims = np.array([(ax.get_xlim(), ax.get_ylim()) for ax in axes])  # [A, 2, 2]
  for ax in axes:
    ax.set_xlim(lims[:, 0, 0].min(), lims[:, 0, 1].max())
    ax.set_ylim(lims[:, 1, 0].min(), lims[:, 1, 1].max())
    ax.set_aspect("equal")


def legend_below(ax, handles):
  """Legend below the axes, where it hides no data."""
  ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13),
            ncol=2, fontsize=7, frameon=False)


def roc_curves(curves, path: str, title: str) -> str:
  """ROC curves of a conflict score, one panel per fault type; dots: the alarm level 1.

  Args:
    curves: `{fault: {name: ((fpr [U], tpr [U]), auc, (fpr, tpr) of the alarm
      level)}}` (`msnvi_tf.experiments.pendulum.sensors.health_table` and the MNIST
      report build them), e.g. names "calibrated" and "tau = 1".
    path: output PNG file.
    title: figure title.

  Returns:
    `path`.
  """
  ncols = min(4, len(curves))
  nrows = -(-len(curves) // ncols)
  fig, axes = new_figure(nrows, ncols, title, panel_size=(3.4, 3.2))
  for ax in axes.ravel()[len(curves):]:
    ax.set_visible(False)
  for ax, (fault, entries) in zip(axes.ravel(), curves.items()):
    for k, (name, ((fpr, tpr), auc, point)) in enumerate(entries.items()):
      colour = f"C{k}"
      ax.plot(fpr, tpr, color=colour, lw=1.2, label=f"{name} (AUC {auc:.3f})")
      ax.plot(*point, "o", color=colour, ms=5)
    chance = np.linspace(0., 1., 2001)
    ax.plot(chance, chance, color="0.6", lw=0.7, ls=":")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0., 1.)
    ax.set_ylim(0., 1.02)
    ax.set_title(fault, fontsize=9)
    ax.set_xlabel("false-positive rate (healthy)", fontsize=8)
    ax.set_ylabel("true-positive rate (faulty)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
  return save_png(fig, path)
