"""What `bin/train` writes for TensorBoard: described scalars, a layout, the config.

A workdir holds three TensorBoard runs:

  <workdir>/train   training scalars, every `log_every` steps:
                    bound          the training objective L_<objective> per example,
                                   K = num_samples, mean over the minibatches since
                                   the previous point (nats, higher is better)
                    learning_rate  the optimizer's at that step (schedules included)
                    grad_norm      global L2 norm of d loss / d weights, last step
                    param_norm     global L2 norm of the trainable weights
                    steps_per_sec  training speed since the previous point
                    config         (text) the run's config, machine and commit
  <workdir>/eval    test bounds, every `eval_every` steps (not the initial model's:
                    far below, it would flatten the curves; the console shows
                    it): `bound` (the training objective) and
                    `bound_ind`, `bound_moe`, `bound_poe` (L_ind, Eq. 1; L_MoE,
                    App. B; L_PoE, Eq. 4), K = eval_num_samples, on the `eval_size` test examples
  <workdir>/eval_missing   with `missing_rate` > 0 only: the same test bounds on
                    the test examples with their sources missing as in training
                    (`msnvi_tf.data.Missingness`)
  <workdir>         the hparams session: the config's scalar fields as
                    hyperparameters, the eval bounds as its metrics, so runs
                    side by side (`tensorboard --logdir` of their parent) compare
                    in the HParams dashboard

Every scalar carries a description (unit, sign, K, data) that TensorBoard shows
beside its chart, and a custom_scalars layout (the "Custom Scalars" dashboard)
overlays what the paper compares: the three integrations in one chart, the
training and test objective in another.
"""
import os
from typing import Dict, Mapping

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
from tensorboard.plugins.hparams import api as hparams_api

from msnvi_tf.core import objectives

__all__ = ["RunSummaries", "EVAL_TAGS", "TRAIN_TAGS"]

TRAIN_TAGS = ("bound", "learning_rate", "grad_norm", "param_norm", "steps_per_sec")
EVAL_TAGS = ("bound",) + tuple(f"bound_{k}" for k in objectives.INTEGRATED_BOUNDS)
_NATS = "nats per example, higher is better"
_INTEGRATIONS = {"ind": "each belief on its own, bounds averaged (L_ind, Eq. 1)",
                 "moe": "the mixture of the beliefs (L_MoE, App. B)",
                 "poe": "the product of the beliefs with prior correction (Eq. 3; L_PoE, "
                        "Eq. 4)"}


def _descriptions(config) -> Dict[str, Dict[str, str]]:
  """`{run: {tag: description}}` for the scalars of a run of `config`."""
  examples = config.get("eval_size") or "all"
  test = f"K={config.eval_num_samples}, {examples} test examples"
  train = {
      "bound": f"Training objective L_{config.objective}, K={config.num_samples}, mean over "
               f"the minibatches of {config.batch_size} since the previous point; {_NATS}. "
               "Noisier than the test bound and, with another K, not on its scale.",
      "learning_rate": f"Adam's learning rate at the step ({config.lr_schedule} schedule).",
      "grad_norm": "Global L2 norm of the gradient of the loss (-bound) with respect to the "
                   "trainable weights, at the last step before the point.",
      "param_norm": "Global L2 norm of the trainable weights.",
      "steps_per_sec": "Training steps per second since the previous point (wall clock).",
  }

  def test_bounds(sources: str, bound_note: str) -> Dict[str, str]:
    bounds = {"bound": f"Test bound of the training objective L_{config.objective}, "
                       f"{test}{bound_note}; {_NATS}."}
    for name, what in _INTEGRATIONS.items():
      bounds[f"bound_{name}"] = (f"Test bound with the proposal of {what}, {sources}, "
                                 f"{test}; {_NATS}.")
    return bounds

  absent = f"each source absent with probability {config.missing_rate}"
  return {"train": train, "eval": test_bounds("every source present", ""),
          "eval_missing": test_bounds(f"{absent} (at least one present)", f", {absent}")}


def _layout(config) -> layout_pb2.Layout:
  """The custom_scalars layout: the paper's comparisons in one chart each."""
  chart = layout_pb2.Chart
  multiline = layout_pb2.MultilineChartContent
  return layout_pb2.Layout(category=[
      layout_pb2.Category(title=f"Test bounds ({_NATS})", chart=[
          chart(title=f"ind / MoE / PoE integration, K={config.eval_num_samples}",
                multiline=multiline(tag=[r"^bound_(ind|moe|poe)$"])),
          chart(title=f"L_{config.objective}: training (K={config.num_samples}, run train) "
                      f"vs test (K={config.eval_num_samples}, run eval)",
                multiline=multiline(tag=[r"^bound$"]))]),
      layout_pb2.Category(title="Optimisation", chart=[
          chart(title=tag, multiline=multiline(tag=[f"^{tag}$"]))
          for tag in TRAIN_TAGS[1:]])])


def _hparams(config) -> Dict[str, object]:
  """The config's fields as hyperparameters (bool, number or string)."""
  return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
          for key, value in sorted(config.items())}


def _config_markdown(config, run: Mapping[str, object]) -> str:
  rows = [f"| {key} | `{value}` |" for key, value in sorted({**config, **run}.items())]
  return "\n".join(["| field | value |", "| --- | --- |"] + rows)


class RunSummaries:
  """The TensorBoard writers of one run (no-ops on workers other than the chief)."""

  def __init__(self, workdir: str, config, chief: bool = True):
    self.config = config
    self._descriptions = _descriptions(config)
    runs = ("train", "eval") + (("eval_missing",) if config.get("missing_rate") else ())
    if chief:
      self._writers = {name: tf.summary.create_file_writer(os.path.join(workdir, name))
                       for name in runs}
      self._session = tf.summary.create_file_writer(workdir)
    else:
      self._writers = dict.fromkeys(runs, tf.summary.create_noop_writer())
      self._session = tf.summary.create_noop_writer()
    self._run_name = os.path.basename(os.path.normpath(workdir))

  def _scalars(self, run: str, scalars: Mapping[str, float], step: int):
    writer, descriptions = self._writers[run], self._descriptions[run]
    with writer.as_default(step=step):
      for name, value in scalars.items():
        tf.summary.scalar(name, value, description=descriptions[name])
    writer.flush()

  def train(self, scalars: Mapping[str, float], step: int):
    """Writes training scalars (`TRAIN_TAGS`) at `step`."""
    self._scalars("train", scalars, step)

  def eval(self, results: Mapping[str, float], step: int):
    """Writes the test bounds (`EVAL_TAGS`) of `results` (a `test_step` mean) at `step`,
    and those on test data with missing sources (`missing_*` keys) when it has them."""
    for run, prefix in (("eval", ""), ("eval_missing", "missing_")):
      if f"{prefix}bound" in results:
        self._scalars(run, {"bound": results[f"{prefix}bound"],
                            **{f"bound_{k}": results[f"{prefix}{k}"]
                               for k in objectives.INTEGRATED_BOUNDS}}, step)

  def describe_run(self, run: Mapping[str, object]):
    """Writes the layout, the config (text, with `run`: machine, commit, ...) and hparams.

    Called when a run starts from step 0.
    """
    with self._writers["train"].as_default(step=0):
      tf.summary.experimental.write_raw_pb(
          custom_scalar_summary.pb(_layout(self.config)).SerializeToString(), step=0)
      tf.summary.text("config", _config_markdown(self.config, run))
    self._writers["train"].flush()
    with self._session.as_default(step=0):
      hparams_api.hparams(_hparams(self.config), trial_id=self._run_name)
    self._session.flush()
