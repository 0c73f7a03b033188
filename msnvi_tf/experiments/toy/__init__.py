"""Sec. 5.1, the toy mixture of Gaussians: Figs. 2 and 6 (`figures`).

`EXPERIMENT` is what `bin/evaluate` and `bin/plot` run for a toy workdir
(registered in `msnvi_tf/__init__.py`): the generic test bounds (the rows of
Table 3) and these figures.
"""
from typing import List

import keras

from msnvi_tf import registry
from msnvi_tf.experiments import generic
from msnvi_tf.experiments.toy import figures
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["EXPERIMENT", "plot"]


def plot(runs, output_dir, seed=0) -> List[str]:
  """Figs. 2 and 6 of every run."""
  paths = []
  for run in runs:
    model, config = workdir_lib.load_trained(run.workdir)
    keras.utils.set_random_seed(seed)
    name = (f"toy mixture of Gaussians, {run.label or 'L_' + config.objective} "
            f"({workdir_lib.run_name(run.workdir)}, step {model.trained_steps})")
    paths += figures.toy_figures(model, config, generic.run_dir(output_dir, run, runs), name)
  return paths


EXPERIMENT = registry.Experiment(plot=plot)
