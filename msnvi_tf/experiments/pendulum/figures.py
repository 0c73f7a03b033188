"""Fig. 5 of the paper: the pendulum's cameras, predictions and conflicts over time;
and its counterpart for the latent filter (`fig5_filter`).

Drawn with matplotlib's Agg canvas (no pyplot, no display needed), like every
figure of `msnvi_tf.experiments`.
"""
import os

import numpy as np
from matplotlib import figure as mfigure
from matplotlib.backends import backend_agg
from PIL import Image

from msnvi_tf.experiments.figures import save_png

__all__ = ["fig5_pendulum", "fig5_filter"]


def _camera_strips(fig, grid, run, degrees, num_thumbnails):
  """Fig. 5's top rows: each camera's images at `num_thumbnails` frames."""
  frames = np.linspace(0, len(degrees) - 1, num_thumbnails).round().astype(int)
  for i, s in enumerate(run["sources"]):
    ax = fig.add_subplot(grid[i, :])
    images = run["images"][s][frames]  # [F, H, W]
    size = images.shape[-1]
    strip = np.concatenate([np.pad(im, ((0, 0), (0, 2)), constant_values=1.)
                            for im in images], 1)
    ax.imshow(strip, cmap="gray", vmin=0., vmax=1., interpolation="nearest")
    ax.set_xticks((np.arange(len(frames)) * (size + 2) + size / 2.),
                  [f"{degrees[f]:.0f} deg" for f in frames], fontsize=7)
    ax.set_yticks([])
    ax.set_ylabel(s, fontsize=8)


def _conflict_panels(fig, grid, run, degrees, fail):
  """Fig. 5's bottom rows: conflicts in units of their thresholds, robust weights."""
  sources = run["sources"]
  conflict_ax = fig.add_subplot(grid[-2, :])
  weight_ax = fig.add_subplot(grid[-1, :], sharex=conflict_ax)
  for i, a in enumerate(sources):
    for j, b in enumerate(sources):
      if i != j:
        conflict = run["conflict"][:, i, j] / run["thresholds"][i, j]
        conflict_ax.semilogy(degrees, np.maximum(conflict, 1e-3), lw=0.9,
                             label=f"c({a} || {b}) / tau")
    weight_ax.plot(degrees, run["weights"][i], lw=1., label=f"w of {a}")
  conflict_ax.axhline(1., color="k", ls=":", lw=1., label="alarm level")
  conflict_ax.set_title("conflict measure of Eq. (2) in units of its threshold", fontsize=9)
  conflict_ax.legend(fontsize=7, ncol=4)
  weight_ax.set_title("robust integration weights w_m", fontsize=9)
  weight_ax.set_ylim(-0.05, 1.05)
  weight_ax.legend(fontsize=7, ncol=3)
  weight_ax.set_xlabel("angle (deg)")
  for ax in (conflict_ax, weight_ax):
    if fail is not None:
      ax.axvline(fail, color="r", lw=1.)
    ax.tick_params(labelsize=7)


def fig5_pendulum(run, path: str, num_thumbnails: int = 9) -> str:
  """Fig. 5: predictions from single cameras and PoE subsets, conflict over the angle.

  Top: the three camera images at `num_thumbnails` frames. Middle: one panel
  per prediction (each camera, each PoE subset, the robust integration) with
  the predicted x and y over the angle: mean and bands of 1 and 2 std over the
  latent samples, truth dashed. Bottom: the conflict measures c(m || m') of
  Eq. (2) for every ordered pair in units of their thresholds tau_mm' (log
  scale, the alarm level 1 dotted) and the robust weights. A red line marks
  the failure of the faulty camera.

  Args:
    run: a dict of `msnvi_tf.experiments.pendulum.sensors.run_sequence`.
    path: output PNG file.
    num_thumbnails: frames shown in the image rows.

  Returns:
    `path`.
  """
  sources = run["sources"]
  degrees = np.rad2deg(run["angles"] - run["angles"][0])  # [T]
  fail = degrees[run["fault_start"]] if run["fault"] else None
  predictions = run["predictions"]
  pred_rows = (len(predictions) + 1) // 2
  fig = mfigure.Figure(figsize=(10., 1.7 * pred_rows + 1.6 * len(sources) / 3. + 4.3),
                       layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  fig.suptitle(
      f"Fig. 5: pendulum seen by {len(sources)} cameras; "
      + (f"{sources[run['fault_sensor']]} fails ({run['fault']}) at "
         f"{fail:.0f} deg" if fail is not None else "all cameras healthy"))
  grid = fig.add_gridspec(len(sources) + pred_rows + 2, 2,
                          height_ratios=[0.9] * len(sources) + [1.] * pred_rows + [1.2, 0.8])
  _camera_strips(fig, grid, run, degrees, num_thumbnails)
  truth = run["truth"]
  colours = ("#1f77b4", "#ff7f0e")
  for k, (name, (mean, std)) in enumerate(predictions.items()):
    ax = fig.add_subplot(grid[len(sources) + k // 2, k % 2])
    for d, (axis, colour) in enumerate(zip("xy", colours)):
      for n, alpha in ((2., 0.15), (1., 0.3)):
        ax.fill_between(degrees, mean[:, d] - n * std[:, d], mean[:, d] + n * std[:, d],
                        color=colour, alpha=alpha, lw=0)
      ax.plot(degrees, mean[:, d], color=colour, lw=1., label=f"{axis}: mean, 1 and 2 std")
      ax.plot(degrees, truth[:, d], color="k", lw=0.7, ls="--")
    if fail is not None:
      ax.axvline(fail, color="r", lw=1.)
    ax.set_ylim(-1.8, 1.8)
    ax.set_title(name, fontsize=9)
    ax.tick_params(labelsize=7)
  ax.legend(fontsize=7, loc="lower left", ncol=2)
  _conflict_panels(fig, grid, run, degrees, fail)
  return save_png(fig, path)



def _running_rmse(prediction, truth, window: int) -> np.ndarray:
  """`[T]` RMSE (x and y together) over the frames max(0, t - window + 1)..t."""
  squared = np.concatenate([[0.], np.cumsum(np.mean((prediction - truth) ** 2, -1))])
  end = np.arange(1, len(truth) + 1)
  begin = np.maximum(end - window, 0)
  return np.sqrt((squared[end] - squared[begin]) / (end - begin))


FILTER_STYLES = {  # prediction -> (colour, line width)
    "per-frame PoE of all cameras": ("#7f7f7f", 1.),
    "per-frame robust": ("#ff7f0e", 1.),
    "robust filter": ("#1f77b4", 1.3),
}


def fig5_filter(run, path: str, dpi: int = 100) -> str:
  """Fig. 5 with the latent filter: predictions, their errors and one camera's weights.

  Rows: the predicted x and y of the bob against the truth over time (the
  per-frame PoE of all cameras, the per-frame robust integration and the
  robust filter); each prediction's running RMSE (Eq. 1 of `sensors`) over the
  last `frames_per_rotation / 12` frames (log scale); the failing camera's weight under the robust filter and under the
  per-frame robust integration, with a tick at every frame its alarm under the
  robust filter is raised. A red dotted line marks the failure. One legend, below
  the panels.

  Args:
    run: `{"truth": [T, 2], "predictions": {name: [T, 2]}` (names of
      `FILTER_STYLES`, others drawn in default colours), `"weights": {"robust
      filter" | "per-frame robust": [T]}`, `"alarm": [T] bool`, `"source"`: the
      camera's name, `"fault_start"`: frame or None, `"frames_per_rotation"`,
      `"title"`}.
    path: output PNG file.
    dpi: its resolution.

  Returns:
    `path`.
  """
  truth = np.asarray(run["truth"])
  frames = np.arange(len(truth))
  window = max(run["frames_per_rotation"] // 12, 1)
  fig = mfigure.Figure(figsize=(10., 8.), dpi=dpi, layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  fig.suptitle(run["title"], fontsize=10)
  axes = fig.subplots(4, 1, sharex=True, height_ratios=[1., 1., 1., 0.8])
  for d, axis in enumerate("xy"):
    axes[d].plot(frames, truth[:, d], color="k", ls="--", lw=1., label="truth")
    axes[d].set_ylabel(f"bob {axis} (units of R)", fontsize=8)
    axes[d].set_ylim(-1.5, 1.5)
  for name, prediction in run["predictions"].items():
    colour, width = FILTER_STYLES.get(name, (None, 1.))
    for d in range(2):
      axes[d].plot(frames, prediction[:, d], color=colour, lw=width, label=name)
    axes[2].semilogy(frames, np.maximum(_running_rmse(prediction, truth, window), 1e-3),
                     color=colour, lw=width, label=name)
  axes[2].set_ylabel(f"RMSE, last {window} frames\n(units of R)", fontsize=8)
  source = run["source"]
  weight_ax = axes[3]
  weight_ax.plot(frames, run["weights"]["robust filter"], color="#1f77b4", lw=1.3,
                 label=f"weight of {source}, robust filter")
  weight_ax.plot(frames, run["weights"]["per-frame robust"], color="#ff7f0e", lw=0.8,
                 ls="-.", label=f"weight of {source}, per-frame robust")
  alarms = np.flatnonzero(run["alarm"])
  weight_ax.plot(alarms, np.full(len(alarms), 1.15), ls="none", marker="|", ms=7,
                 color="#d62728", label=f"alarm of {source}, robust filter")
  weight_ax.set_ylim(-0.05, 1.25)
  weight_ax.set_yticks([0., 0.5, 1.])
  weight_ax.set_ylabel("weight (0 to 1)", fontsize=8)
  per_rotation = run["frames_per_rotation"]
  weight_ax.set_xlabel(f"time (frames; {per_rotation} frames per rotation, "
                       f"{360. / per_rotation:g} deg per frame)", fontsize=8)
  weight_ax.set_xlim(0, len(truth) - 1)
  for ax in axes:
    if run["fault_start"] is not None:
      ax.axvline(run["fault_start"], color="#d62728", ls=":", lw=1.2,
                 label=f"{source} fails")
    ax.tick_params(labelsize=7)
  handles, labels = {}, []
  for ax in axes:
    for handle, text in zip(*ax.get_legend_handles_labels()):
      if text not in handles:
        handles[text] = handle
        labels.append(text)
  fig.legend([handles[t] for t in labels], labels, loc="outside lower center", ncol=4,
             fontsize=8)
  # Written as a 128-colour palette PNG: a third of the size of the RGBA one for the docs.
  fig.canvas.draw()
  image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  image.quantize(colors=128).save(path, optimize=True, dpi=(dpi, dpi))
  return path
