"""Figures 8 and 9 (App. G): conditional generations on CUB-shaped data.

Fig. 8: images generated from latent samples of different beliefs. Row 1: the
target images; rows 2-4: z ~ q_img(z | x_img); rows 5-15: z ~ q_mask(z | x_mask).
Fig. 9: the same for masks: row 1 the target masks; rows 2-4 from the masks'
belief; rows 5-15 from the images' belief. Each cell shows the mean of
p(x_t | z_k) for one sample z_k (the terms of Eq. 6).
"""
import os
from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["conditional_grid", "plot_conditional", "fig8_images", "fig9_masks",
           "cub_figures"]


def conditional_grid(model, x, target: str,
                     rows: Sequence[Tuple[str, int]]) -> np.ndarray:
  """Targets and per-sample generations, stacked as the figure's rows.

  Args:
    model: `MultiSourceVAE` with a decoder `target` and the encoders in `rows`.
    x: batch dict `{"image": [B, S, S, 3], "mask": [B, S, S, 1]}`.
    target: the generated observation.
    rows: `(source, number of samples)` blocks, in order.

  Returns:
    `[1 + sum(n), B, S, S, C]` float32: the targets, then the means of
    p(x_t | z_k) for z_k ~ q_source, block by block.
  """
  blocks = [np.asarray(x[target], np.float32)[None]]  # [1, B, S, S, C]
  for source, num in rows:
    _, samples = model.predict_targets(x, sources=[source], targets=[target],
                               num_samples=num, return_samples=True)
    blocks.append(np.asarray(samples[target], np.float32))  # [n, B, S, S, C]
  return np.concatenate(blocks, 0)


def plot_conditional(grid: np.ndarray, path: str, title: str,
                     row_labels: Sequence[str]) -> str:
  """Saves a `[R, B, S, S, C]` grid as a PNG of R rows and B columns."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  num_rows, num_cols = grid.shape[:2]
  fig, axes = plt.subplots(num_rows, num_cols, figsize=(1.1 * num_cols + 1.2, 1.1 * num_rows),
                           squeeze=False)
  for r in range(num_rows):
    for c in range(num_cols):
      cell = np.clip(grid[r, c], 0., 1.)
      ax = axes[r, c]
      if cell.shape[-1] == 1:
        ax.imshow(cell[..., 0], cmap="gray", vmin=0., vmax=1.)
      else:
        ax.imshow(cell)
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def _figure(model, x, target, rows, path, title):
  rows = [(s, n) for s, n in rows if s in model.encoders]
  grid = conditional_grid(model, x, target, rows)
  labels = ["target"] + [f"from {s}" for s, n in rows for _ in range(n)]
  return plot_conditional(grid, path, title, labels)


def fig8_images(model, x, path: str, from_image: int = 3, from_mask: int = 11,
                name: str = "") -> str:
  """Fig. 8: images generated from the image's and from the mask's belief."""
  return _figure(model, x, "image", (("image", from_image), ("mask", from_mask)), path,
                 f"{name}Fig. 8: images from the image's belief (rows 2-4) and from the "
                 "mask's")


def fig9_masks(model, x, path: str, from_mask: int = 3, from_image: int = 11,
               name: str = "") -> str:
  """Fig. 9: masks generated from the mask's and from the image's belief."""
  return _figure(model, x, "mask", (("mask", from_mask), ("image", from_image)), path,
                 f"{name}Fig. 9: masks from the mask's belief (rows 2-4) and from the "
                 "image's")


def cub_figures(model, x, out_dir: str, name: str = "") -> List[str]:
  """The figures of App. G that the model can draw (it needs the target's decoder).

  `name` (data set and model, e.g. "shapes, L_hybrid") starts each title.
  """
  name = f"{name}\n" if name else ""
  paths = []
  if "image" in model.decoders:
    paths.append(fig8_images(model, x, os.path.join(out_dir, "fig8_images.png"), name=name))
  if "mask" in model.decoders:
    paths.append(fig9_masks(model, x, os.path.join(out_dir, "fig9_masks.png"), name=name))
  return paths
