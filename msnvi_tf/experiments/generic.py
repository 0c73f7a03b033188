"""What `bin/evaluate` and `bin/plot` do for a data set without an experiment of its own.

`generic_evaluation` writes the ind / MoE / PoE bounds of the test set,
`learning_curves` the test bound against hours and steps; both take the
`dispatch.Run`s of the workdirs (see `msnvi_tf.experiments.dispatch`). Also the
helpers the experiments share: `write_text`, `write_csv`, `run_dir`, `choose`.
"""
import csv
import io
import json
import logging
import os
from typing import List, Mapping, Optional, Sequence

from msnvi_tf import data as data_lib
from msnvi_tf.core import objectives
from msnvi_tf.experiments import curves
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["write_text", "write_csv", "run_dir", "choose", "generic_evaluation",
           "learning_curves"]

log = logging.getLogger("msnvi_tf")


def write_text(output_dir: str, name: str, text: str) -> str:
  """Writes `text` to `output_dir/name`, creating the directory; returns the path."""
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, name)
  with open(path, "w") as f:
    f.write(text)
  return path


def write_csv(output_dir: str, name: str, rows: Sequence[Mapping]) -> str:
  """Writes `rows` (dicts; the first one's keys are the header, None is empty) as CSV."""
  fields = list(rows[0]) if rows else []
  text = io.StringIO()
  writer = csv.DictWriter(text, fields, lineterminator="\n", extrasaction="ignore")
  writer.writeheader()
  writer.writerows({k: "" if row.get(k) is None else row[k] for k in fields} for row in rows)
  return write_text(output_dir, name, text.getvalue())


def run_dir(output_dir: str, run, runs: Sequence) -> str:
  """Where one run's own report goes: `output_dir`, or `output_dir/<workdir name>` of several."""
  return output_dir if len(runs) == 1 else os.path.join(
      output_dir, workdir_lib.run_name(run.workdir))


def choose(option: str, chosen: Optional[Sequence[str]], known: Sequence[str]) -> List[str]:
  """`chosen` (all of `known` if None), each checked to be one of `known`.

  Raises:
    ValueError: an unknown choice (the message names `option` and the choices).
  """
  unknown = [c for c in chosen or () if c not in known]
  if unknown:
    raise ValueError(f"{option}: choose from {list(known)}; got {unknown}.")
  return list(chosen or known)


def generic_evaluation(runs, output_dir, num_samples=None, eval_size=0,
                       eval_batch_size=None) -> List[str]:
  """The ind / MoE / PoE bounds of the test set: bounds.md and bounds.json.

  Each model is named by its workdir and the step of the checkpoint evaluated.
  `num_samples` (K) and `eval_batch_size` default to the run's config's
  (`eval_num_samples`, `eval_batch_size`); `eval_size`: the first N test
  examples (0: all).
  """
  results = []
  for run in runs:
    overrides = {"eval_size": eval_size} if eval_size else {}
    model, config = workdir_lib.load_trained(  # float32: no machine-dependent numbers
        run.workdir, precision="float32", eval_batch_size=eval_batch_size or
        run.config.eval_batch_size, eval_num_samples=num_samples or
        run.config.eval_num_samples, **overrides)
    metrics = training.evaluate_bounds(model, data_lib.test_batches(config))
    results.append({"label": run.label or workdir_lib.run_name(run.workdir),
                    "workdir": workdir_lib.run_name(run.workdir), "step": model.trained_steps,
                    "dataset": config.dataset, "objective": config.objective,
                    "num_samples": config.eval_num_samples,
                    **{k: metrics[k] for k in objectives.INTEGRATED_BOUNDS}})
  lines = ["| model | objective | step | K | -L_ind | -L_MoE | -L_PoE |", "|" + " --- |" * 7]
  lines += [f"| {r['label']} | {r['objective']} | {r['step']} | {r['num_samples']} | "
            + " | ".join(f"{-r[k]:.2f}" for k in objectives.INTEGRATED_BOUNDS) + " |"
            for r in results]
  # As the paper's Tables 1 and 3: evaluated with (rows) against trained with (columns).
  lines += ["", "Test bounds (nats per example, higher is better), evaluated with (rows) "
            "\\ trained with (columns):", "",
            "| evaluated with \\ trained with | " + " | ".join(r["label"] for r in results)
            + " |", "|" + " --- |" * (len(results) + 1)]
  lines += [f"| L_{'MoE' if k == 'moe' else 'PoE' if k == 'poe' else k} | "
            + " | ".join(f"{r[k]:.3f}" for r in results) + " |"
            for k in objectives.INTEGRATED_BOUNDS]
  table = "\n".join(lines) + "\n"
  log.info("Negative test bounds (nats per example, lower is better):\n%s", table)
  return [write_text(output_dir, "bounds.md", table),
          write_text(output_dir, "bounds.json", json.dumps(results, indent=2) + "\n")]


def learning_curves(runs, output_dir, reference=None, tags=("bound_poe",),
                    name="learning_curves.png", title="") -> List[str]:
  """Test bounds of every run against hours and steps: `<output_dir>/<name>`.

  `reference(config)`: the published PoE bound of a run's model, or None; drawn
  as a dotted line in the run's colour (`dispatch.plot`: its experiment's
  `reference`, the paper's Table 1 for MNIST).
  `tags`: the eval scalars drawn per run (`curves.plot_learning_curves`).
  """
  named = {run.label or workdir_lib.run_name(run.workdir): run
           for run in runs}
  references = {label: reference(run.config) for label, run in named.items()} if reference else {}
  return [curves.plot_learning_curves(
      {label: run.workdir for label, run in named.items()},
      os.path.join(output_dir, name), tags=tags, title=title,
      references={label: nats for label, nats in references.items() if nats is not None})]
