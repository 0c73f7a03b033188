"""Sec. 5.1: Figs. 2 and 6 of a trained toy model, written as PNG files.

Random draws use TensorFlow's global generator: seed it (as `bin/plot --seed`
does) for a reproducible figure.
"""
import os
from typing import List

from matplotlib import lines as mlines
from matplotlib import patches as mpatches

from msnvi_tf.data import toy
from msnvi_tf.experiments import figures

__all__ = ["fig2_beliefs", "fig6_sir", "toy_figures"]

# One marker and ellipse line style per belief; the integrated belief has its own.
_MARKERS = ("x", "+", "1", "2", "3", "4")
_LINESTYLES = ("-", "--", ":", "-.")
_INTEGRATED_MARKER = "o"


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
  ax.scatter(points["x"][:, 0], points["y"][:, 0], c=figures.point_colours(num_components),
             marker="*", s=150, edgecolors="k", linewidths=0.8, zorder=3)
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
                 component_std: float = 0.1, name: str = "") -> str:
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
    name: the data set and model, first line of the title.

  Returns:
    `path`.
  """
  _check_toy_model(model)
  points = toy.test_points(num_components, rotation_deg)
  rows, integrated = _toy_beliefs(model, points)
  colours = figures.point_colours(num_components)
  fig, axes = figures.new_figure(2, 2, (
      f"{name}Fig. 2: beliefs for {num_components} test points (component means rotated "
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
    figures.legend_below(data_ax, _data_legend(beliefs))
    figures.legend_below(latent_ax, [
        mlines.Line2D([], [], color="k", ls=ls, marker=m, label=label)
        for label, m, ls, _ in beliefs] + [
            mlines.Line2D([], [], color="0.75", ls=":", label="prior: 1 std")])
  figures.share_limits(axes[:, 1])
  return figures.save_png(fig, path)


def fig6_sir(model, path: str, num_components: int = 8, rotation_deg: float = 2.,
             num_samples: int = 100, num_proposals: int = 1000, name: str = "") -> str:
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
    name: the data set and model, first line of the title.

  Returns:
    `path`.
  """
  _check_toy_model(model)
  points = toy.test_points(num_components, rotation_deg)
  colours = figures.point_colours(num_components)
  proposals = [(f"q(z | {s})", _MARKERS[i % len(_MARKERS)], [s])
               for i, s in enumerate(model.sources)]
  proposals_poe = [(f"PoE q*(z | {', '.join(model.sources)})", _INTEGRATED_MARKER,
                    model.sources)]
  fig, axes = figures.new_figure(2, 2, (
      f"{name}Fig. 6: latent samples for {num_components} test points, before and after "
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
      figures.legend_below(ax, handles)
  figures.share_limits(axes.ravel())
  return figures.save_png(fig, path)


def toy_figures(model, config, out_dir: str, name: str = "") -> List[str]:
  """Writes Figs. 2 and 6 of a toy model to `out_dir`; returns their paths.

  `name` (data set and model) is the first line of each title.
  """
  name = f"{name}\n" if name else ""
  return [
      fig2_beliefs(model, os.path.join(out_dir, "fig2_beliefs.png"),
                   config.num_components, component_std=config.component_std, name=name),
      fig6_sir(model, os.path.join(out_dir, "fig6_sir.png"), config.num_components,
               name=name),
  ]
