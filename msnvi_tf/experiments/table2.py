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
asterisk model of the masks) are None.
"""
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from msnvi_tf.core import estimators

__all__ = [
    "ROWS",
    "PAPER_TABLE2",
    "label_of",
    "single_source_bound",
    "pixel_accuracy",
    "segmentation_accuracy",
    "evaluate_table2",
    "table2_markdown",
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


def label_of(config) -> str:
  """The Table 2 column of a training config: "ind", "hybrid*", "iwae (img-to-img)", ...

  The asterisk marks a model with a decoder left out (`targets` other than
  "image,mask", both sources still feeding inference); the IWAE has no asterisk.
  """
  targets = [t.strip() for t in str(config.targets).split(",")]
  label = config.objective
  if config.objective != "iwae" and sorted(targets) != ["image", "mask"]:
    label += "*"
  return label + (" (img-to-img)" if targets == ["image"] else "")


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
                    max_examples: Optional[int] = None) -> Dict[str, Optional[float]]:
  """The Table 2 column of one model, averaged over `dataset`.

  Args:
    model: trained `MultiSourceVAE` of the CUB architecture.
    dataset: batches `{"image", "mask"}`.
    num_samples: K of the bounds.
    accuracy_samples: latent samples of Eq. (6) (100 in the paper).
    max_examples: stop after this many examples (None: the whole pass).

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
  for x in dataset:
    if max_examples is not None and count >= max_examples:
      break
    for row, fn in bound_fns.items():
      values[row].append(-fn(x).numpy())
    if rows["accuracy"]:
      values["accuracy"].append(accuracy_fn(x).numpy())
    count += int(x["image"].shape[0])
  if not count:
    raise ValueError("The evaluation dataset is empty.")
  results = {row: (float(np.mean(np.concatenate(values[row])[:max_examples]))
                   if rows[row] else None) for row in ROWS}
  results["num_examples"] = min(count, max_examples or count)
  return results


def table2_markdown(columns: Mapping[str, Mapping[str, Optional[float]]],
                    paper: bool = True) -> str:
  """Table 2 as markdown: one column per model, the paper's value beside each.

  Args:
    columns: `{label: evaluate_table2 result}`; labels such as "ind", "hybrid*"
      or "iwae" (or "iwae (img-to-img)") get the paper's number for comparison.
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
      cell = "-" if value is None else (f"{value:.3f}" if row == "accuracy"
                                        else f"{value:.1f}")
      reference = PAPER_TABLE2.get(label.split(" ")[0], {}).get(row)
      if paper and reference is not None:
        cell += f" (paper {reference:g})"
      cells.append(cell)
    lines.append(f"| {row.replace('_', '-')} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
