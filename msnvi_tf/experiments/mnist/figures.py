"""MNIST figures of the paper as PNG: Fig. 3 (conditional generation), Fig. 4 and
Fig. 7 (imputation). Images are drawn from the means of p(x_t | z) (Eq. 6 with
one latent sample per drawing)."""
import json
import os
from typing import Dict, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from msnvi_tf.core import imputation
from msnvi_tf.data import mnist
from msnvi_tf.data import mnist_files
from msnvi_tf.experiments.mnist import table1

__all__ = [
    "FIG4_MISSING",
    "image_grid",
    "sampled_images",
    "conditional_generation_figure",
    "label_generation_figure",
    "imputation_curves_figure",
    "imputation_chain_figure",
    "plot_mnist_figures",
]

# The missing parts of Figs. 4 and 7: MNIST-TB without its bottom half, MNIST-QU
# without its bottom-right quarter (MNIST-NO: Fig. 3 only).
FIG4_MISSING = {"mnist_tb": ("bottom",), "mnist_qu": ("q3",)}


def image_grid(rows: Sequence[np.ndarray], path: str,
               row_labels: Optional[Sequence[str]] = None, title: str = ""):
  """Writes a PNG of grey images, one row per entry of `rows` (each `[C, 28, 28]`)."""
  num_rows, num_cols = len(rows), max(len(r) for r in rows)
  fig, axes = plt.subplots(num_rows, num_cols, squeeze=False,
                           figsize=(0.6 * num_cols + (1.4 if row_labels else 0.2),
                                    0.6 * num_rows + (0.4 if title else 0.1)))
  for i, row in enumerate(rows):
    for j in range(num_cols):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if j < len(row):
        ax.imshow(np.asarray(row[j]), cmap="gray", vmin=0., vmax=1.,
                  interpolation="nearest")
    if row_labels:
      axes[i, 0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center",
                            fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout(pad=0.1, h_pad=0.05, w_pad=0.05, rect=(0, 0, 1, 0.95 if title else 1))
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _image_targets(model, variant):
  targets = mnist.target_shapes(variant)
  return [t for t in model.targets if t in targets]


def sampled_images(model, x, variant: str, sources: Sequence[str],
                   num_draws: int = 3, method: str = "poe"):
  """Means of p(x | z_k) for z_k ~ q_S(z | x_S), as images `[num_draws, B, 28, 28]` (Eq. 6)."""
  _, means = model.predict_targets(x, sources=sources, targets=_image_targets(model, variant),
                           method=method, num_samples=num_draws,
                           return_samples=True)  # {t: [K, B, D]}
  return mnist.assemble_image(means, variant).numpy()


def conditional_generation_figure(model, x, variant: str, path: str,
                                  num_draws: int = 3, method: str = "poe", title: str = ""):
  """Fig. 3a: originals, then `num_draws` rows per single source, then the integration.

  Row 1: the (clean) target images; then for every image source m, rows of
  E[x | z], z ~ q_m(z | x_m); last, rows with z ~ the `method` integration of
  all image sources. `title`: the figure's title.
  """
  sources = [s for s in model.sources if s != "label"]
  rows = [mnist.assemble_image({t: x[t] for t in _image_targets(model, variant)},
                               variant).numpy()]
  labels = ["data"]
  for subset, name in [([s], s) for s in sources] + [(sources, method.upper())]:
    images = sampled_images(model, x, variant, subset, num_draws, method)
    rows += list(images)
    labels += [name] * num_draws
  return image_grid(rows, path, labels, title)


def label_generation_figure(model, variant: str, path: str, num_draws: int = 8):
  """Fig. 3b: E[x | z], z ~ q_label(z | class), one column per class 0-9."""
  if "label" not in model.sources:
    raise ValueError("The model has no 'label' source; train it with use_label=True.")
  x = {"label": tf.eye(mnist.NUM_CLASSES)}  # [10, 10]
  images = sampled_images(model, x, variant, ["label"], num_draws)  # [K, 10, 28, 28]
  return image_grid(list(images), path, [f"draw {k + 1}" for k in range(num_draws)],
                    "from labels 0-9")


def imputation_curves_figure(curves: Mapping[str, Mapping], path: str, title: str = ""):
  """Fig. 4: mean ln p(x_u | .) per step of each chain, and Eq. (6) as a line.

  Args:
    curves: `{label: {"chain": [T + 1] array, "eq6": float or None}}`.
    path: PNG path.
    title: figure title.
  """
  fig, ax = plt.subplots(figsize=(5, 3.2))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, (label, curve) in enumerate(curves.items()):
    color = colors[i % len(colors)]
    if curve.get("chain") is not None:
      ax.plot(np.asarray(curve["chain"]), color=color, label=f"{label}: Markov chain")
    if curve.get("eq6") is not None:
      ax.axhline(curve["eq6"], color=color, linestyle="--", label=f"{label}: Eq. (6)")
  ax.set_xlabel("Markov chain step")
  ax.set_ylabel("log-likelihood of the missing part (nats)")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def imputation_chain_figure(x, means: Mapping[str, tf.Tensor], variant: str,
                            path: str, steps: Sequence[int], title: str = ""):
  """Fig. 7: per row one example, per column a chain step: observed part kept,
  missing part replaced by the chain's mean E[x_u | z] at that step.

  Args:
    x: the batch the chain ran on (observed parts are taken from it).
    means: `{missing target: [T + 1, B, D]}` from `markov_chain_imputation`.
    variant: "mnist_tb" or "mnist_qu".
    path: PNG path.
    steps: chain steps to show.
    title: the figure's title, before the steps shown.
  """
  parts = dict(mnist.split_image(tf.zeros([1, mnist.NUM_PIXELS]), variant))
  columns = []
  for t in steps:
    filled = {k: x[k] for k in parts}
    filled.update({k: m[t] for k, m in means.items()})
    columns.append(mnist.assemble_image(filled, variant).numpy())  # [B, 28, 28]
  rows = list(np.stack(columns, 1))  # B x [S, 28, 28]
  return image_grid(rows, path, title=(f"{title}: " if title else "")
                    + f"chain means at steps {', '.join(map(str, steps))}")


def _exemplars(config, num_examples):
  """Indices of the first test example of each digit 0-9 among `num_examples`."""
  labels = mnist_files.load_split(config, "test")[1][:num_examples]
  return [int(np.argmax(labels == c)) for c in range(mnist.NUM_CLASSES)
          if np.any(labels == c)]


def plot_mnist_figures(model, config, out_dir: str,
                       chain_models: Optional[Mapping[str, object]] = None,
                       label_model=None, num_examples: int = 500,
                       chain_steps: int = 150, num_samples: int = 100,
                       chain_figure_steps: int = 50, seed: int = 0) -> Dict[str, str]:
  """Fig. 3, Fig. 4 and Fig. 7 of a trained multi-source model, as PNGs.

  Args:
    model, config: a trained multi-source model of an MNIST variant.
    out_dir: output directory.
    chain_models: optional `{name: model}` of the same variant (a hard-wired
      IWAE, models trained with other objectives): further Markov chains in Fig. 4.
    label_model: optional model trained with `use_label` (Fig. 3b).
    num_examples: first N test examples of Fig. 4.
    chain_steps: Markov chain steps of Fig. 4 (150 in the paper).
    num_samples: L, latent samples per score.
    chain_figure_steps: steps shown in Fig. 7 (every fifth, 50 in the paper).
    seed: seed of the chains.

  Returns:
    `{figure name: path}`; Fig. 4's curves are also written to imputation.json.
  """
  variant = config.dataset
  tf.io.gfile.makedirs(out_dir)
  test_config = config.copy()
  test_config.eval_size = num_examples
  x = mnist.make_test_examples(test_config)
  exemplars = _exemplars(config, num_examples)
  x_ex = {k: tf.gather(v, exemplars) for k, v in x.items()}
  steps = getattr(model, "trained_steps", None)
  name = f"{variant}, {table1.column_of(config)}" + (f" at step {steps}" if steps else "")
  paths = {"fig3a": conditional_generation_figure(
      model, x_ex, variant, os.path.join(out_dir, f"fig3a_{variant}.png"),
      title=f"Fig. 3a, {name}: data, draws from each source's belief and from their PoE")}
  if label_model is not None:
    paths["fig3b"] = label_generation_figure(
        label_model, variant, os.path.join(out_dir, f"fig3b_{variant}.png"))
  if variant not in FIG4_MISSING:
    return paths
  missing = list(FIG4_MISSING[variant])
  observed = [s for s in model.sources if s not in missing and s != "label"]
  curves = {table1.column_of(config): imputation.imputation_curves(
      model, x, observed, missing, chain_steps, num_samples, seed)}
  for name, other in (chain_models or {}).items():
    chain, _ = imputation.markov_chain_imputation(
        other, x, missing, chain_steps, num_samples, seed=seed)
    curves[name] = {"chain": tf.reduce_mean(chain, -1).numpy(), "eq6": None}
  paths["fig4"] = imputation_curves_figure(
      curves, os.path.join(out_dir, f"fig4_{variant}.png"),
      f"Fig. 4, {name}: missing {', '.join(missing)} ({int(tf.shape(x[missing[0]])[0])} "
      f"test images, L={num_samples})")
  with tf.io.gfile.GFile(os.path.join(out_dir, f"imputation_{variant}.json"), "w") as f:
    json.dump({k: {"chain": None if v["chain"] is None else
                   [float(c) for c in v["chain"]], "eq6": v["eq6"]}
               for k, v in curves.items()}, f, indent=1)
  _, means = imputation.markov_chain_imputation(
      model, x_ex, missing, chain_figure_steps, num_samples, seed=seed,
      return_means=True)
  paths["fig7"] = imputation_chain_figure(
      x_ex, means, variant, os.path.join(out_dir, f"fig7_{variant}.png"),
      list(range(0, chain_figure_steps + 1, 5)),
      f"Fig. 7, {name}: Markov chain imputing {', '.join(missing)}")
  return paths
