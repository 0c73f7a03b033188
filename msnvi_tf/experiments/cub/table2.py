"""Table 2 of Sec. 5.2: single-source / single-target bounds and segmentation accuracy.

For a model trained on images and masks (any objective of Table 2):
  img-to-seg  -L with the image's belief as proposal and the mask as the only
              observation,
                L = ln (1/K) sum_k p(x_mask | z_k) p(z_k) / q_img(z_k | x_img),
                z_k ~ q_img                                        (Sec. 2, Eq. 1)
  img-to-img  the same with the image as the observation;
  accuracy    pixel accuracy of the predicted segmentation: p(x_mask | x_img) of
              Eq. (6) estimated with 100 samples z ~ q_img, thresholded at 1/2.
Rows that need a decoder or encoder the model lacks (e.g. img-to-img of an
asterisk model of the masks) are None. The paper's asterisk and IWAE columns
combine two models, one of the masks (img-to-seg, accuracy) and one of the
images (img-to-img): `merge_columns` makes those columns from one column per
model.
"""
import math
from typing import Dict, List, Mapping, Optional

import numpy as np
import tensorflow as tf

from msnvi_tf.core import estimators
from msnvi_tf.runtime import progress as progress_lib

__all__ = [
    "ROWS",
    "PAPER_TABLE2",
    "label_of",
    "single_source_bound",
    "pixel_accuracy",
    "segmentation_accuracy",
    "evaluate_table2",
    "merge_columns",
    "table2_markdown",
    "table2_rows",
]

ROWS = ("img_to_seg", "img_to_img", "accuracy")
# Table 2 of the paper (CUB, 128x128): negative ELBOs (nats) and accuracy.
PAPER_TABLE2 = {
    "ind": {"img_to_seg": 5326., "img_to_img": -26179., "accuracy": 0.808},
    "ind*": {"img_to_seg": 3264., "img_to_img": -26663., "accuracy": 0.870},
    "hybrid": {"img_to_seg": 5924., "img_to_img": -29285., "accuracy": 0.810},
    "hybrid*": {"img_to_seg": 3337., "img_to_img": -29668., "accuracy": 0.872},
    "iwae": {"img_to_seg": 3228., "img_to_img": -30415., "accuracy": 0.855},
}


IMG_TO_IMG = " (img-to-img)"  # the label suffix of a model of the images alone.


def label_of(config) -> str:
  """The Table 2 column of a training config: "ind", "hybrid*", "iwae (img-to-img)", ...

  The asterisk marks a model with a decoder left out (`targets` other than
  "image,mask", both sources still feeding inference); the IWAE has no asterisk.
  A model trained with K = 1 (Fig. 8c's L_hybrid) is "hybrid (K=1)": the paper's
  columns are K = 80.
  """
  targets = [t.strip() for t in str(config.targets).split(",")]
  label = config.objective
  if config.objective != "iwae" and sorted(targets) != ["image", "mask"]:
    label += "*"
  if config.num_samples == 1:
    label += " (K=1)"
  return label + (IMG_TO_IMG if targets == ["image"] else "")


def _paper(label: str, row: str) -> Optional[float]:
  """The paper's value of a column label in `row` (None: the paper has no such column)."""
  base = label[:-len(IMG_TO_IMG)] if label.endswith(IMG_TO_IMG) else label
  return PAPER_TABLE2.get(base, {}).get(row)


def single_source_bound(model, x, source: str, target: str, num_samples: int,
                        chunk_size: int = 20, seed: Optional[int] = None):
  """Importance-weighted bound of one target with one source's belief as proposal.

  L = ln (1/K) sum_k p(x_t | z_k) p(z_k) / q_s(z_k | x_s), z_k ~ q_s (Eq. 1 with
  a single source and target), by `estimators.log_likelihood`: the decoder runs
  on `chunk_size` samples at a time so that memory stays bounded.

  Args:
    model: a `MultiSourceVAE` with an encoder `source` and a decoder `target`.
    x: batch dict holding `source` and `target`.
    source: name of the belief.
    target: name of the observation.
    num_samples: K.
    chunk_size: samples per decoder call.
    seed: int for reproducible samples, None for new ones (`estimators`).

  Returns:
    `[B]` float32.
  """
  q = model.encode(x, [source])[source]
  return estimators.log_likelihood(
      q, lambda z: model.log_joint(x, z, [target]), num_samples,
      estimators.as_seed(seed), chunk_size)


def pixel_accuracy(predicted, mask, threshold: float = 0.5):
  """Fraction of pixels where `predicted >= threshold` agrees with `mask`.

  Args:
    predicted: `[B, ...]` predicted foreground probabilities.
    mask: `[B, ...]` true mask in {0, 1}.
    threshold: decision threshold.

  Returns:
    `[B]` float32 accuracies.
  """
  hit = tf.equal(tf.cast(predicted, tf.float32) >= threshold,
                 tf.cast(mask, tf.float32) >= 0.5)
  hit = tf.reshape(tf.cast(hit, tf.float32), [tf.shape(hit)[0], -1])  # [B, P]
  return tf.reduce_mean(hit, -1)


def segmentation_accuracy(model, x, num_samples: int = 100, source: str = "image",
                          target: str = "mask"):
  """Pixel accuracy of p(x_mask | x_img) (Eq. 6) from `num_samples` z ~ q_img: `[B]`."""
  predicted = model.predict_targets(x, sources=[source], targets=[target],
                            num_samples=num_samples)[target]  # [B, S, S, 1]
  return pixel_accuracy(predicted, x[target])


def evaluate_table2(model, dataset, num_samples: int, accuracy_samples: int = 100,
                    max_examples: Optional[int] = None,
                    progress: str = "Table 2") -> Dict[str, Optional[float]]:
  """The Table 2 column of one model, averaged over `dataset`.

  Logs progress with an ETA (`msnvi_tf.runtime.progress`) every 30 seconds.

  Args:
    model: trained `MultiSourceVAE` of the CUB architecture.
    dataset: batches `{"image", "mask"}`.
    num_samples: K of the bounds.
    accuracy_samples: latent samples of Eq. (6) (100 in the paper).
    max_examples: stop after this many examples (None: the whole pass).
    progress: the prefix of the progress lines.

  Returns:
    `{"img_to_seg": -L, "img_to_img": -L, "accuracy": acc, "num_examples": N}`,
    None for rows the model cannot evaluate.
  """
  has_image = "image" in model.encoders
  rows = {"img_to_seg": has_image and "mask" in model.decoders,
          "img_to_img": has_image and "image" in model.decoders,
          "accuracy": has_image and "mask" in model.decoders}
  bound_fns = {
      row: tf.function(lambda x, t=target: single_source_bound(
          model, x, "image", t, num_samples))
      for row, target in (("img_to_seg", "mask"), ("img_to_img", "image")) if rows[row]}
  accuracy_fn = tf.function(lambda x: segmentation_accuracy(model, x, accuracy_samples))
  values = {row: [] for row in ROWS}
  count = 0
  batches = int(dataset.cardinality())  # < 0: unknown (or infinite).
  lines = progress_lib.Progress(batches if batches >= 0 else None,
                                f"{progress} (K={num_samples})", unit="batches")
  for i, x in enumerate(dataset):
    if max_examples is not None and count >= max_examples:
      break
    for row, fn in bound_fns.items():
      values[row].append(-fn(x).numpy())
    if rows["accuracy"]:
      values["accuracy"].append(accuracy_fn(x).numpy())
    count += int(x["image"].shape[0])
    lines.update(i + 1)
  if not count:
    raise ValueError("The evaluation dataset is empty.")
  results = {row: (float(np.mean(np.concatenate(values[row])[:max_examples]))
                   if rows[row] else None) for row in ROWS}
  results["num_examples"] = min(count, max_examples or count)
  return results


def merge_columns(columns: Mapping[str, Mapping]) -> Dict[str, Dict]:
  """The paper's columns from one column per model.

  A model of the images alone ("hybrid* (img-to-img)") gives the img-to-img row
  of its column ("hybrid*"), whose other rows come from the model of the masks.
  Every cell remembers the model it came from.

  Args:
    columns: `{label: {row: value, ...}}` per model, as `evaluate_table2` returns
      them (further entries, such as the workdir, are kept per cell).

  Returns:
    `{column: {row: {"value": v, "model": label}}}`, the paper's columns (ind,
    ind*, hybrid, hybrid*, iwae) first, rows a model cannot give left out.
  """
  merged = {}
  for label, result in columns.items():
    column = label[:-len(IMG_TO_IMG)] if label.endswith(IMG_TO_IMG) else label
    cells = merged.setdefault(column, {})
    for row in ROWS:
      value = result.get(row)
      if value is None or (label.endswith(IMG_TO_IMG) and row != "img_to_img"):
        continue
      if row in cells and label.endswith(IMG_TO_IMG):
        continue  # the model of both targets has the row already.
      cells[row] = {"value": value, "model": label}
  order = [c for c in PAPER_TABLE2 if c in merged] + [c for c in merged
                                                      if c not in PAPER_TABLE2]
  return {c: merged[c] for c in order}


def table2_rows(columns: Mapping[str, Mapping]) -> List[Dict]:
  """Long-format rows of the merged table (`merge_columns`), ours beside the paper's.

  Returns:
    One dict per (column, row): `{"column", "row", "ours", "paper", "model"}`
    plus the model's other entries (workdir, step, num_samples, ...).
  """
  rows = []
  for column, cells in merge_columns(columns).items():
    for row in ROWS:
      cell = cells.get(row)
      if cell is None and _paper(column, row) is None:
        continue
      extra = ({k: v for k, v in columns[cell["model"]].items() if k not in ROWS}
               if cell else {})
      rows.append({"column": column, "row": row.replace("_", "-"),
                   "ours": None if cell is None else cell["value"],
                   "paper": _paper(column, row),
                   "model": None if cell is None else cell["model"], **extra})
  return rows


def table2_markdown(columns: Mapping[str, Mapping[str, Optional[float]]],
                    paper: bool = True) -> str:
  """Table 2 as markdown: one column per label, the paper's value beside each.

  Args:
    columns: `{label: evaluate_table2 result}` or `merge_columns`' cells; labels
      such as "ind", "hybrid*" or "iwae" (or "iwae (img-to-img)") get the
      paper's number for comparison.
    paper: add the paper's CUB values where the label matches.

  Returns:
    A markdown table.
  """
  labels = list(columns)
  header = "| | " + " | ".join(labels) + " |"
  lines = [header, "|" + " --- |" * (len(labels) + 1)]
  for row in ROWS:
    cells = []
    for label in labels:
      value = columns[label].get(row)
      if isinstance(value, Mapping):  # a merge_columns cell
        value = value["value"]
      cell = "-" if value is None or not math.isfinite(value) else (
          f"{value:.3f}" if row == "accuracy" else f"{value:.1f}")
      reference = _paper(label, row)
      if paper and reference is not None:
        cell += f" (paper {reference:.3f})" if row == "accuracy" else f" (paper {reference:g})"
      cells.append(cell)
    lines.append(f"| {row.replace('_', '-')} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
