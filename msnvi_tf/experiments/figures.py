"""Figures of the paper from a trained model, written as PNG files.

Each figure is one function `fig*(model, path, ...)` that draws with matplotlib's
Agg canvas (no pyplot, no display needed), saves a PNG to `path` and returns the
path. `FIGURES` maps a data set name (`config.dataset`) to a function
`(model, config, out_dir) -> [paths]` that writes all figures of that data set;
a new data set adds its figure functions and one entry there.

Random draws use TensorFlow's global generator: seed it (as `bin/plot --seed`
does) for a reproducible figure.
"""
import os
from typing import Callable, Dict, List, Sequence

import numpy as np
from matplotlib import figure as mfigure
from matplotlib import lines as mlines
from matplotlib import patches as mpatches
from matplotlib.backends import backend_agg

from msnvi_tf.data import toy

__all__ = ["FIGURES", "plot_figures", "fig2_beliefs", "fig6_sir", "toy_figures",
           "fig5_pendulum", "roc_curves"]

# One marker and ellipse line style per belief; the integrated belief has its own.
_MARKERS = ("x", "+", "1", "2", "3", "4")
_LINESTYLES = ("-", "--", ":", "-.")
_INTEGRATED_MARKER = "o"


def _new_figure(nrows, ncols, title, panel_size=(5.2, 4.6)):
  """A figure on an Agg canvas with a grid of axes `[nrows, ncols]`."""
  fig = mfigure.Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows + 0.6),
                       layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  fig.suptitle(title)
  return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path):
  """Writes `fig` as a PNG to `path`, creating its directory; returns `path`."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=110)
  return path


def _colours(num):
  """Distinct colours, one per test point."""
  palette = [
      "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
      "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
  return [palette[i % len(palette)] for i in range(num)]


def _check_toy_model(model):
  """Raises ValueError unless the model has decoders "x", "y" and Dz >= 2."""
  missing = [t for t in ("x", "y") if t not in model.decoders]
  if missing:
    raise ValueError(
        f"Toy figures need decoders for 'x' and 'y'; the model has {model.targets}.")
  if model.latent_dim < 2:
    raise ValueError(f"Toy figures plot 2 latent dimensions; Dz={model.latent_dim}.")


def _toy_beliefs(model, points):
  """`[(label, marker, linestyle, belief)]`: every source's belief, then the PoE."""
  beliefs = model.encode(points)
  rows = [(f"q(z | {s})", _MARKERS[i % len(_MARKERS)],
           _LINESTYLES[i % len(_LINESTYLES)], beliefs[s])
          for i, s in enumerate(model.sources)]
  label = "PoE q*(z | " + ", ".join(model.sources) + ")"
  integrated = (label, _INTEGRATED_MARKER, "-", model.integrate(beliefs, "poe"))
  return rows, integrated


def _draw_mixture(ax, points, component_std):
  """True data distribution (1 and 2 std circles) and the test points."""
  num_components = len(points["x"])
  for mean in toy.component_means(num_components):
    for k in (1, 2):
      ax.add_patch(mpatches.Circle(mean, k * component_std, fill=False,
                                   ec="0.6", lw=0.8, ls="-" if k == 1 else ":"))
  ax.scatter(points["x"][:, 0], points["y"][:, 0], c=_colours(num_components), marker="*",
             s=150, edgecolors="k", linewidths=0.8, zorder=3)
  ax.set_aspect("equal")
  ax.set_xlim(-1.6, 1.6)
  ax.set_ylim(-1.6, 1.6)
  ax.set_xlabel("x")
  ax.set_ylabel("y")


def _latent_axes(ax):
  """Labels a latent-space panel and draws the prior's 1-std circle."""
  ax.add_patch(mpatches.Circle((0., 0.), 1., fill=False, ec="0.75", lw=0.8, ls=":"))
  ax.set_xlabel("z1")
  ax.set_ylabel("z2")


def _share_limits(axes):
  """Gives `axes` the union of their data limits and equal aspect, to compare them."""
  lims = np.array([(ax.get_xlim(), ax.get_ylim()) for ax in axes])  # [A, 2, 2]
  for ax in axes:
    ax.set_xlim(lims[:, 0, 0].min(), lims[:, 0, 1].max())
    ax.set_ylim(lims[:, 1, 0].min(), lims[:, 1, 1].max())
    ax.set_aspect("equal")


def _legend(ax, handles):
  """Legend below the axes, where it hides no data."""
  ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13),
            ncol=2, fontsize=7, frameon=False)


def _data_legend(rows):
  """Legend entries of a data-space panel: one marker per belief, then the data."""
  handles = [mlines.Line2D([], [], color="k", ls="", marker=m,
                           label=f"mean of p(x, y | z), z ~ {label}")
             for label, m, _, _ in rows]
  handles.append(mlines.Line2D([], [], color="0.4", ls="", marker="*", ms=10,
                               mec="k", label="test point"))
  handles.append(mlines.Line2D([], [], color="0.6",
                               label="data: 1 std (solid), 2 std (dotted)"))
  return handles


def fig2_beliefs(model, path: str, num_components: int = 8,
                 rotation_deg: float = 2., num_latent: int = 10,
                 component_std: float = 0.1) -> str:
  """Fig. 2: individual beliefs (a) and their PoE integration (b) on the toy data.

  Test points are the mixture means rotated by `rotation_deg` (one colour each).
  Right: each belief as an ellipse of width/height 2 std around its mean in
  latent space (line style per source). Left: for each belief, `num_latent`
  latent samples decoded to the means of p(x | z) and p(y | z) (marker per
  source), over the true components drawn as circles of 1 and 2 std.

  Args:
    model: a trained toy `MultiSourceVAE` (decoders "x" and "y").
    path: output PNG file.
    num_components: C, the mixture components (and test points).
    rotation_deg: rotation of the test points from the component means.
    num_latent: latent samples per belief on the left.
    component_std: std of the components, for the background circles.

  Returns:
    `path`.
  """
  _check_toy_model(model)
  points = toy.test_points(num_components, rotation_deg)
  rows, integrated = _toy_beliefs(model, points)
  colours = _colours(num_components)
  fig, axes = _new_figure(2, 2, (
      f"Fig. 2: beliefs for {num_components} test points (component means rotated "
      f"by {rotation_deg:g} deg); colour = test point"))
  for r, (beliefs, name) in enumerate(
      ((rows, "(a) individual beliefs"), ([integrated], "(b) integrated belief (PoE)"))):
    data_ax, latent_ax = axes[r]
    _draw_mixture(data_ax, points, component_std)
    _latent_axes(latent_ax)
    for _, marker, linestyle, belief in beliefs:
      z = belief.sample(num_latent)  # [K, C, Dz]
      x = model.decoders["x"].mean(z).numpy()[..., 0]  # [K, C]
      y = model.decoders["y"].mean(z).numpy()[..., 0]
      loc = belief.mean().numpy()  # [C, Dz]
      std = belief.stddev().numpy()
      for c in range(num_components):
        data_ax.scatter(x[:, c], y[:, c], color=colours[c], marker=marker, s=36,
                        linewidths=1.2, alpha=0.9, zorder=2)
        latent_ax.add_patch(mpatches.Ellipse(
            loc[c, :2], 2. * std[c, 0], 2. * std[c, 1], fill=False, ec=colours[c],
            ls=linestyle, lw=1.6))
        latent_ax.plot(loc[c, 0], loc[c, 1], color=colours[c], marker=marker, ms=6)
    data_ax.set_title(f"{name}\ndecoded means of {num_latent} z per belief", fontsize=10)
    latent_ax.set_title(f"{name}\nlatent space: ellipses = mean +/- 1 std", fontsize=10)
    _legend(data_ax, _data_legend(beliefs))
    _legend(latent_ax, [
        mlines.Line2D([], [], color="k", ls=ls, marker=m, label=label)
        for label, m, ls, _ in beliefs] + [
            mlines.Line2D([], [], color="0.75", ls=":", label="prior: 1 std")])
  _share_limits(axes[:, 1])
  return _save(fig, path)


def fig6_sir(model, path: str, num_components: int = 8, rotation_deg: float = 2.,
             num_samples: int = 100, num_proposals: int = 1000) -> str:
  """Fig. 6: latent samples before and after sampling importance resampling.

  Row (a): samples from each individual belief (left) and after SIR with that
  belief as proposal and the likelihood of all targets (right). Row (b): the
  same with the PoE-integrated belief as proposal (`model.sir`). Colour per
  test point, marker per proposal.

  Args:
    model: a trained toy `MultiSourceVAE`.
    path: output PNG file.
    num_components: C, the test points (mixture means rotated by `rotation_deg`).
    rotation_deg: rotation of the test points.
    num_samples: points shown per test point and proposal, in each panel.
    num_proposals: proposals SIR resamples from.

  Returns:
    `path`.
  """
  _check_toy_model(model)
  points = toy.test_points(num_components, rotation_deg)
  colours = _colours(num_components)
  proposals = [(f"q(z | {s})", _MARKERS[i % len(_MARKERS)], [s])
               for i, s in enumerate(model.sources)]
  proposals_poe = [(f"PoE q*(z | {', '.join(model.sources)})", _INTEGRATED_MARKER,
                    model.sources)]
  fig, axes = _new_figure(2, 2, (
      f"Fig. 6: latent samples for {num_components} test points, before and after "
      "SIR with the likelihood of all targets; colour = test point"))
  for r, (rows, name) in enumerate(
      ((proposals, "(a) individual beliefs"), (proposals_poe, "(b) integrated belief"))):
    before_ax, after_ax = axes[r]
    for label, marker, sources in rows:
      z, resampled = model.sir(points, sources=sources, method="poe",
                               num_samples=num_proposals, num_resamples=num_samples)
      for ax, samples in ((before_ax, z.numpy()[:num_samples]),
                          (after_ax, resampled.numpy())):
        for c in range(num_components):
          ax.scatter(samples[:, c, 0], samples[:, c, 1], color=colours[c],
                     marker=marker, s=12 if marker == _INTEGRATED_MARKER else 20,
                     linewidths=1., alpha=0.5)
    handles = [mlines.Line2D([], [], color="k", ls="", marker=m, label=label)
               for label, m, _ in rows]
    for ax, what in ((before_ax, f"{num_samples} samples from the belief"),
                     (after_ax, f"{num_samples} samples after SIR from "
                                f"{num_proposals} proposals")):
      _latent_axes(ax)
      ax.set_title(f"{name}\n{what}", fontsize=10)
      _legend(ax, handles)
  _share_limits(axes.ravel())
  return _save(fig, path)


def toy_figures(model, config, out_dir: str) -> List[str]:
  """Writes Figs. 2 and 6 of a toy model to `out_dir`; returns their paths."""
  return [
      fig2_beliefs(model, os.path.join(out_dir, "fig2_beliefs.png"),
                   config.num_components, component_std=config.component_std),
      fig6_sir(model, os.path.join(out_dir, "fig6_sir.png"), config.num_components),
  ]


# config.dataset -> function (model, config, out_dir) -> [written paths].
FIGURES: Dict[str, Callable[..., Sequence[str]]] = {
    "toy": toy_figures,
}


def plot_figures(model, config, out_dir: str) -> List[str]:
  """Writes every figure of `config.dataset` to `out_dir`; returns the paths.

  Raises:
    ValueError: no figures are defined for the data set.
  """
  if config.dataset not in FIGURES:
    raise ValueError(f"No figures for dataset {config.dataset!r}; figures exist "
                     f"for {sorted(FIGURES)}.")
  return list(FIGURES[config.dataset](model, config, out_dir))


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
    run: a dict of `msnvi_tf.experiments.pendulum_sensors.run_sequence`.
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
  frames = np.linspace(0, len(degrees) - 1, num_thumbnails).round().astype(int)
  for i, s in enumerate(sources):
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
  return _save(fig, path)


def roc_curves(curves, path: str, title: str) -> str:
  """ROC curves of a conflict score, one panel per fault type; dots: the alarm level 1.

  Args:
    curves: `{fault: {name: ((fpr [U], tpr [U]), auc, (fpr, tpr) of the alarm
      level)}}` (`msnvi_tf.experiments.pendulum_sensors.health_table` and the MNIST
      report build them), e.g. names "calibrated" and "tau = 1".
    path: output PNG file.
    title: figure title.

  Returns:
    `path`.
  """
  ncols = min(4, len(curves))
  nrows = -(-len(curves) // ncols)
  fig, axes = _new_figure(nrows, ncols, title, panel_size=(3.4, 3.2))
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
  return _save(fig, path)
