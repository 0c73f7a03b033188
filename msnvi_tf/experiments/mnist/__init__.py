"""Sec. 5.2, MNIST-TB / -QU / -NO: Table 1, Figs. 3, 4 and 7, sensor health.

  table1    the Table 1 grid of trained models, next to the paper's
  large_k   large-K log-likelihood estimates per proposal (Table 1's last rows)
  figures   Figs. 3, 4 and 7
  health    sensor health on MNIST-QU / -NO (beyond the paper)

`EXPERIMENT` is what `bin/evaluate` and `bin/plot` run for an MNIST workdir
(registered with the three data sets in `msnvi_tf/__init__.py`); its functions'
keyword arguments are the options, with the experiment's defaults.
"""
import logging
import os
from typing import List

from msnvi_tf import registry
from msnvi_tf.experiments import generic
from msnvi_tf.experiments.mnist import figures
from msnvi_tf.experiments.mnist import health
from msnvi_tf.experiments.mnist import table1
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["EXPERIMENT", "evaluate", "plot"]

log = logging.getLogger("msnvi_tf")

# The variants with three or more sources, whose conflicts can name a faulty one.
HEALTH_VARIANTS = ("mnist_qu", "mnist_no")


def evaluate(runs, output_dir, num_samples=16, eval_size=0, eval_batch_size=500,
             large_k=1000, large_k_examples=500, chunk_size=0, large_k_proposals=None,
             large_k_precision="float32", large_k_seed=0, merge=False,
             sensor_health=False, faults=None, seed=1) -> List[str]:
  """The Table 1 grid (`table1`); with `sensor_health`, the MNIST-QU / -NO report.

  Writes table1.md, table1.csv, large_k.csv, large_k_proposals.csv and
  results.json to `output_dir`; with `merge`, the models of an existing
  results.json that are not evaluated again stay in the table. A run's label
  names its column; two models of one column (two seeds) get two, the later
  one named after its workdir too. The sensor-health report (`health`) of each
  run goes to `<output_dir>[/<workdir name>]/sensor_health`.
  """
  if sensor_health:
    other = [f"{r.workdir} ({r.config.dataset})" for r in runs
             if r.config.dataset not in HEALTH_VARIANTS]
    if other:
      raise ValueError(f"sensor_health needs {' or '.join(HEALTH_VARIANTS)} workdirs "
                       f"(three or more sources); got {', '.join(other)}.")
    faults = generic.choose("faults", faults, health.CORRUPTIONS)
  elif faults:
    raise ValueError("faults: only with sensor_health (the MNIST sensor-health report).")
  results = ((table1.load_results(os.path.join(output_dir, "results.json")) or [])
             if merge else [])
  for run in runs:
    result = table1.evaluate_workdir(
        run.workdir, num_samples, eval_size, large_k, large_k_examples, chunk_size,
        eval_batch_size=eval_batch_size, large_k_proposals=large_k_proposals,
        large_k_precision=large_k_precision, large_k_seed=large_k_seed)
    results = [r for r in results if r["workdir"] != result["workdir"]]
    column = run.label or result["column"]
    if (result["dataset"], column) in {(r["dataset"], r["column"]) for r in results}:
      column += f" ({workdir_lib.run_name(run.workdir)})"
    results.append({**result, "column": column})
    log.info("%s: %s / %s at step %d: -ind %.2f | -moe %.2f | -poe %.2f", run.workdir,
             result["dataset"], column, result["step"], -result["ind"],
             -result["moe"], -result["poe"])
  paths = list(table1.write_grid(results, output_dir).values())
  log.info("Table 1:\n%s", table1.format_markdown(results))
  for run in runs if sensor_health else ():
    paths += health.run_experiment(
        run.workdir, os.path.join(generic.run_dir(output_dir, run, runs), "sensor_health"),
        faults, num_samples=num_samples, seed=seed, num_examples=eval_size)
  return paths


def plot(runs, output_dir, label_workdir=None, num_examples=500, chain_steps=150,
         num_samples=100, seed=0) -> List[str]:
  """Figs. 3, 4 and 7 of the first run; further runs add their Markov chains to Fig. 4.

  `label_workdir`: a model trained with `use_label` (Fig. 3b); `num_examples`:
  the test examples of Fig. 4 (10,000 in the paper); `chain_steps`: its Markov
  chain steps; `num_samples`: L, latent samples per score.
  """
  model, config = workdir_lib.load_trained(runs[0].workdir)
  chains = {run.label or table1.column_of(run.config): workdir_lib.load_trained(run.workdir)[0]
            for run in runs[1:]}
  label_model = workdir_lib.load_trained(label_workdir)[0] if label_workdir else None
  return list(figures.plot_mnist_figures(
      model, config, output_dir, chains, label_model, num_examples, chain_steps,
      num_samples, seed=seed).values())


EXPERIMENT = registry.Experiment(evaluate, plot, reference=table1.paper_bound)
