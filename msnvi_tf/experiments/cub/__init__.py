"""Sec. 5.4, CUB-200-2010 images and masks (and the `shapes` stand-in): Table 2, Figs. 8, 9.

  table2    the bounds and the segmentation accuracy of Table 2, next to the paper's
  figures   Figs. 8 and 9 (App. G)

`EXPERIMENT` is what `bin/evaluate` and `bin/plot` run for a cub or shapes
workdir (registered in `msnvi_tf/__init__.py`); its functions' keyword
arguments are the options, with the experiment's defaults.
"""
import json
import logging
import os
from typing import List

import keras

from msnvi_tf import data as data_lib
from msnvi_tf import registry
from msnvi_tf.experiments import generic
from msnvi_tf.experiments.cub import figures
from msnvi_tf.experiments.cub import table2
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["EXPERIMENT", "evaluate", "plot"]

log = logging.getLogger("msnvi_tf")


def evaluate(runs, output_dir, num_samples=None, eval_size=0, eval_batch_size=8,
             accuracy_samples=100, seed=0, merge=False) -> List[str]:
  """Table 2, the paper's numbers beside: table2.md, table2.csv and table2.json.

  table2.md holds the paper's columns (a mask model and an image model merged
  into one, `table2.merge_columns`), then one column per model and the workdir
  and step (checkpoint) each model came from; table2.csv one row per cell with
  the model, step and K it came from; table2.json the results per model. With
  `merge`, the models of an existing table2.json that are not evaluated again
  stay in the table (models evaluated as they finish). `num_samples`: K of the
  bounds (default: the config's `eval_num_samples`); `accuracy_samples`: latent
  samples of Eq. (6).
  """
  columns = {}
  if merge and os.path.exists(os.path.join(output_dir, "table2.json")):
    with open(os.path.join(output_dir, "table2.json")) as f:
      columns = json.load(f)
    again = {workdir_lib.run_name(run.workdir) for run in runs}
    columns = {label: c for label, c in columns.items() if c.get("workdir") not in again}
  for run in runs:
    model, config = workdir_lib.load_trained(  # float32: no machine-dependent numbers
        run.workdir, eval_batch_size=eval_batch_size, precision="float32")
    keras.utils.set_random_seed(seed)
    label = run.label or table2.label_of(config)
    if label in columns:
      label += f" ({workdir_lib.run_name(run.workdir)})"
    k = num_samples or config.eval_num_samples
    results = table2.evaluate_table2(
        model, data_lib.test_batches(config), k, accuracy_samples, eval_size or None,
        progress=f"Table 2 {label}")
    columns[label] = {**results, "workdir": workdir_lib.run_name(run.workdir),
                      "step": model.trained_steps, "num_samples": k,
                      "train_num_samples": config.num_samples}
    log.info("%s (%s, step %d): %s", label, run.workdir, model.trained_steps, results)
  merged = table2.merge_columns(columns)
  k_values = sorted({c["num_samples"] for c in columns.values()})
  table = (f"Negative bounds (nats per example, lower is better; K = "
           f"{', '.join(map(str, k_values))}) and segmentation accuracy (higher is "
           f"better), ours (paper, CUB at 128x128).\n\n"
           + table2.table2_markdown(merged) + "\n\nPer model:\n\n"
           + table2.table2_markdown(columns) + "\n\nModels: " + "; ".join(
               f"{label}: {c['workdir']} at step {c['step']}" for label, c in columns.items())
           + ".\n")
  log.info("Table 2:\n%s", table)
  return [generic.write_text(output_dir, "table2.md", table),
          generic.write_csv(output_dir, "table2.csv", table2.table2_rows(columns)),
          generic.write_text(output_dir, "table2.json", json.dumps(columns, indent=2) + "\n")]


def plot(runs, output_dir, num_columns=8, seed=0) -> List[str]:
  """Figs. 8 and 9 (App. G) of every run, on the first `num_columns` test examples."""
  paths = []
  for run in runs:
    model, config = workdir_lib.load_trained(run.workdir)
    keras.utils.set_random_seed(seed)
    batch = next(iter(data_lib.test_batches(config).unbatch().batch(num_columns)))
    name = (f"{config.dataset}, {run.label or table2.label_of(config)} trained with "
            f"K={config.num_samples} ({workdir_lib.run_name(run.workdir)}, step "
            f"{model.trained_steps}); first {len(batch['image'])} test scenes")
    paths += figures.cub_figures(model, batch, generic.run_dir(output_dir, run, runs), name)
  return paths


EXPERIMENT = registry.Experiment(evaluate, plot)
