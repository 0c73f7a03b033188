"""Sec. 5.3, the pendulum: three cameras, a failing sensor, and filtering over time.

  sensors        Fig. 5, the RMSE table and the sensor-health report per fault
  report         their results.md
  figures        Fig. 5
  latent_filter  the latent filter against per-frame integration (beyond the paper)

`EXPERIMENT` is what `bin/evaluate` and `bin/plot` run for a pendulum workdir
(registered in `msnvi_tf/__init__.py`); its functions' keyword arguments are
the options, with the experiment's defaults.
"""
import os
from typing import List

from msnvi_tf import registry
from msnvi_tf.data import pendulum_faults
from msnvi_tf.experiments import generic
from msnvi_tf.experiments.pendulum import figures
from msnvi_tf.experiments.pendulum import latent_filter
from msnvi_tf.experiments.pendulum import sensors
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["EXPERIMENT", "evaluate", "plot"]


def evaluate(runs, output_dir, faults=None, frames_per_rotation=120, num_samples=500,
             seed=1, filter=False) -> List[str]:  # pylint: disable=redefined-builtin
  """The Sec. 5.3 report of every run: Fig. 5 per fault, roc.png, results.md.

  `faults`: of `pendulum_faults.FAULTS` (default: all); `frames_per_rotation`:
  of the 3 rotations; `num_samples`: latent samples of each prediction (Eq. 6).
  With `filter`, also the latent filter's report (`latent_filter`: those faults and
  every one of `pendulum_faults.UNLISTED_FAULTS`: `filter_<fault>.png` per
  sequence and results.md) in `<run's output dir>/filter/`.
  """
  faults = generic.choose("faults", faults, list(pendulum_faults.FAULTS))
  paths = []
  for run in runs:
    out = generic.run_dir(output_dir, run, runs)
    paths += sensors.run_experiment(run.workdir, out, faults, frames_per_rotation,
                                    num_samples, seed)
    if filter:
      paths += latent_filter.run_filter_experiment(
          run.workdir, os.path.join(out, "filter"), num_samples=num_samples, seed=seed,
          frames_per_rotation=frames_per_rotation, faults=faults)["paths"]
  return paths


def plot(runs, output_dir, faults=None, frames_per_rotation=120, num_samples=500,
         seed=1) -> List[str]:
  """Fig. 5 of every run for every fault (`fig5_<fault>.png`)."""
  faults = generic.choose("faults", faults, list(pendulum_faults.FAULTS))
  paths = []
  for run in runs:
    model, config = workdir_lib.load_trained(run.workdir)
    sensors.ensure_calibrated(model, config, seed=seed)
    for fault in faults:
      sequence = sensors.run_sequence(model, config, fault,
                                      frames_per_rotation=frames_per_rotation,
                                      num_samples=num_samples, seed=seed)
      paths.append(figures.fig5_pendulum(sequence, os.path.join(
          generic.run_dir(output_dir, run, runs), f"fig5_{fault}.png")))
  return paths


EXPERIMENT = registry.Experiment(evaluate, plot)
