"""`train_and_evaluate(config, workdir)`: the training loop behind `bin/train`.

Trains `config.objective` on `config.dataset` into `workdir` (its files:
`msnvi_tf.runtime.workdir`): TensorBoard scalars (training bound, steps/s; eval
bounds under every integration: ind / MoE / PoE), checkpoints, the final
metrics and a SavedModel.

A re-run resumes exactly: the checkpoint holds the whole training state,
evaluation noise restarts at every evaluation, and the training data are a
function of (seed, step) (`msnvi_tf.data.training_batches`), so a run killed at
any moment and re-run with the same command ends with the same weights as one
never stopped. SIGTERM or Ctrl-C checkpoints the step reached and raises
`Interrupted` (`bin/train` exits with 128 + the signal). A diverging loss stops
training with a message that names the last good checkpoint
(`check_divergence`: NaN / inf, or a bound far below the initial model's).
"""
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Dict

import logging

import keras
import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf import data as data_lib
from msnvi_tf import registry
from msnvi_tf.core import objectives
from msnvi_tf.runtime import config as config_lib
from msnvi_tf.runtime import hardware
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import summaries as summaries_lib
from msnvi_tf.runtime import workdir as workdir_lib
from msnvi_tf.runtime.config import Config

__all__ = ["train_and_evaluate", "evaluate_bounds", "check_divergence", "Interrupted",
           "log_to_stdout", "format_time", "calibrate_filter", "FILTER_SEQUENCES"]

log = hardware.log


def evaluate_bounds(model, dataset, test_fn=None, strategy=None) -> Dict[str, float]:
  """Mean of `test_step` metrics over one pass of `dataset` (on every replica).

  The model's evaluation noise restarts from its seed, so the result depends on
  the weights only (a resumed run evaluates as the uninterrupted one did).
  """
  strategy = strategy or tf.distribute.get_strategy()
  test_fn = test_fn or tf.function(model.test_step, reduce_retracing=True)
  model.reset_eval_rng()  # Every evaluation draws the same noise: a function of the weights.
  for metric in model.metrics:
    metric.reset_state()
  count = 0
  for batch in strategy.experimental_distribute_dataset(dataset):
    strategy.run(test_fn, args=(batch,))
    count += 1
  if not count:
    raise ValueError("The evaluation dataset is empty.")
  results = {m.name: float(m.result()) for m in model.metrics}
  for metric in model.metrics:
    metric.reset_state()
  return results


def _calibrate_conflict(model, dataset, config):
  """Calibrates the robust integration's conflict thresholds on held-out data.

  Models with two or more sources only; `config.conflict_false_alarm_rate` is
  the target (`msnvi_tf.core.calibration`). Every worker computes the same thresholds.
  """
  if len(model.sources) < 2:
    return
  result = model.calibrate_conflict(dataset, config.conflict_false_alarm_rate)
  log.info("Conflict thresholds calibrated on %d held-out examples: quantile %.4f, "
           "alarms on %.2f %% of them.", result.num_examples, result.level,
           100. * result.false_alarm_rate)


# Healthy sequences the latent filter is fitted on / calibrated on (data sets with
# `sequences`): sequences 0..9 and 10..19 of the config's seed.
FILTER_SEQUENCES = (10, 10)


def calibrate_filter(model, config):
  """Fits the latent filter of a data set with sequences and stores it in the model.

  The data set's `sequences` (registry) of `config.seed`: the transition is
  fitted on the first `FILTER_SEQUENCES[0]`, the thresholds of the
  prediction conflict and of the trend test calibrated on the next
  `FILTER_SEQUENCES[1]` at
  `config.conflict_false_alarm_rate` (`MultiSourceVAE.calibrate_filter`).
  Training calls it with the conflict calibration, before the final
  checkpoint; for a model trained before (an old workdir), call it and export.
  Every worker computes the same filter.

  Returns:
    The `filtering.FilterFit`, or None for a data set without sequences.
  """
  sequences = registry.for_config(config).sequences
  if sequences is None:
    return None
  num_fit, num_calibration = FILTER_SEQUENCES
  healthy = sequences(config, num_fit + num_calibration, config.seed)
  result = model.calibrate_filter(healthy[:num_fit], healthy[num_fit:],
                                  config.conflict_false_alarm_rate)
  log.info("Latent filter fitted on %d frames of %d healthy sequences; prediction-"
           "conflict and trend thresholds calibrated on %d frames of %d others: alarms "
           "on %.2f %% of them.", result.num_fit_frames, num_fit, result.num_calibration_frames,
           num_calibration, 100. * result.false_alarm_rate)
  return result


def log_to_stdout(level=logging.INFO):
  """Shows the progress log on stdout (what `bin/` scripts call)."""
  if not any(getattr(h, "_msnvi", False) for h in log.handlers):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler._msnvi = True  # pylint: disable=protected-access
    log.addHandler(handler)
  log.setLevel(level)
  log.propagate = False


def format_time(seconds) -> str:
  """Seconds as h:mm:ss (progress lines and ETAs)."""
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _param_norm(model) -> float:
  """Global L2 norm of the trainable weights."""
  return float(tf.linalg.global_norm(
      [tf.convert_to_tensor(v) for v in model.trainable_variables]))


def _setup_machine(config: Config):
  """`(strategy, policy, jit)`; logs them. Threads and strategy come before TF starts."""
  shown = hardware.configure_threads(config.intra_op_threads,
                                     xla=str(config.jit_compile).lower() in hardware.ON)
  strategy = hardware.make_strategy(config.distribute)
  policy, reason = hardware.resolve(config.precision)
  jit = hardware.resolve_jit(config.jit_compile, strategy)
  log.info("Precision: %s (%s). XLA: %s. Intra-op threads: %s. Replicas: %d (%s).",
           policy, reason, jit, shown, strategy.num_replicas_in_sync,
           type(strategy).__name__)
  return strategy, policy, jit


class Interrupted(Exception):
  """Training stopped on SIGTERM or SIGINT after checkpointing; re-run to resume."""

  def __init__(self, signum, step, checkpoint):
    self.signum, self.step, self.checkpoint = signum, step, checkpoint
    super().__init__(
        f"{signal.Signals(signum).name} received: stopped at step {step} with a "
        f"checkpoint, {checkpoint}. Re-run the same command to resume.")


class _StopOnSignal:
  """Turns SIGTERM / SIGINT into a request the loop honours after the current chunk.

  A scheduler's SIGTERM (preemption, the end of a job's time) or Ctrl-C then
  costs no steps: the loop checkpoints where it stands and raises `Interrupted`.
  A second signal acts as if unhandled (SIGTERM ends the process, SIGINT raises
  KeyboardInterrupt). Handlers are installed from the main thread of a single
  worker only (the workers of a cluster must checkpoint together).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, enabled=True):
    self.enabled = enabled and threading.current_thread() is threading.main_thread()
    self.signum, self._previous = None, {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # Asked twice: stop now.
      signal.signal(signum, self._previous[signum])
      signal.raise_signal(signum)
      return
    self.signum = signum
    log.info("%s received: checkpointing after the current steps, then stopping "
             "(send it again to stop at once).", signal.Signals(signum).name)

  def __enter__(self):
    if self.enabled:
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


class _Loop:
  """The training loop of one run: chunks of steps, logging, evaluation, checkpoints."""

  def __init__(self, model, config, strategy, jit, datasets, summaries):
    self.model, self.config, self.strategy = model, config, strategy
    self.train_ds, self.eval_ds = datasets
    # Test batches with presence masks: evaluated with them and, as `eval_ds`
    # (also what calibrates the conflict thresholds), without.
    self.eval_ds, self.missing_eval_ds = data_lib.split_masks(self.eval_ds)
    self.summaries = summaries
    train_step = tf.function(model.train_step, jit_compile=jit)
    self.test_fn = tf.function(model.test_step, jit_compile=jit, reduce_retracing=True)
    iterator = iter(strategy.experimental_distribute_dataset(self.train_ds))

    @tf.function
    def train_chunk(num):
      logs = {"loss": tf.constant(0.), "bound": tf.constant(0.), "grad_norm": tf.constant(0.)}
      for _ in tf.range(num):
        per_replica = strategy.run(train_step, args=(next(iterator),))
        logs = {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}
      return logs

    self.train_chunk = train_chunk

  def evaluate_bounds(self):
    """The test bounds; with masked test batches also `missing_<bound>` on those."""
    results = evaluate_bounds(self.model, self.eval_ds, self.test_fn, self.strategy)
    if self.missing_eval_ds is not None:
      missing = evaluate_bounds(self.model, self.missing_eval_ds, self.test_fn, self.strategy)
      results.update({f"missing_{k}": missing[k]
                      for k in ("bound",) + objectives.INTEGRATED_BOUNDS})
    return results

  def _log_progress(self, logs, current, clock):
    """Writes the training scalars and a progress line; `clock` is `[time, step]`."""
    total, now = self.config.num_steps, time.time()
    rate = (current - clock[1]) / max(now - clock[0], 1e-9)
    clock[:] = [now, current]
    self.summaries.train({
        "bound": float(logs["bound"]), "steps_per_sec": rate,
        "learning_rate": float(tf.convert_to_tensor(self.model.optimizer.learning_rate)),
        "grad_norm": float(logs["grad_norm"]), "param_norm": _param_norm(self.model)},
        current)
    log.info("step %d/%d | %.0f steps/s | ETA %s | bound %.4f", current, total, rate,
             format_time((total - current) / max(rate, 1e-9)), float(logs["bound"]))
    for metric in self.model.metrics:
      metric.reset_state()

  def _log_eval(self, results, current, summary=True):
    if summary:
      self.summaries.eval(results, current)
    for prefix, note in (("", "" if summary else " (the initial model)"),
                         ("missing_", ", test sources missing as in training (bounds of "
                                      "the present entries only)")):
      if f"{prefix}bound" in results:
        log.info("eval step %d%s | bound %.4f | ind %.4f | moe %.4f | poe %.4f", current,
                 note, *(results[prefix + k] for k in ("bound",) + objectives.INTEGRATED_BOUNDS))

  def run(self, step, manager, stop, initial_bound):
    """Trains from `step` to `config.num_steps`; returns the last evaluation (or None).

    A run from step 0 first evaluates the initial model: `initial_bound` (a
    checkpointed variable) keeps its bound for `check_divergence`.

    Raises `Interrupted` after checkpointing when `stop` (a `_StopOnSignal`) saw
    a signal; `FloatingPointError` when training diverged (nothing saved after).
    """
    config, total = self.config, self.config.num_steps
    intervals = (config.log_every, config.eval_every, config.checkpoint_every)
    current = int(step.numpy())
    if current == 0:
      initial = self.evaluate_bounds()
      # Not in TensorBoard: tens to hundreds of nats below, it would flatten the curves.
      self._log_eval(initial, 0, summary=False)
      initial_bound.assign(initial["bound"])
    check = functools.partial(check_divergence, initial_bound=float(initial_bound.numpy()),
                              tolerance=config.divergence_tolerance,
                              checkpoint=manager.latest_checkpoint)
    clock, results = [time.time(), current], None
    while current < total:
      boundary = min([total] + [(current // i + 1) * i for i in intervals if i > 0])
      num = min(config.steps_per_call, boundary - current)
      logs = self.train_chunk(tf.constant(num))
      current = int(step.assign_add(num).numpy())
      check(float(logs["bound"]), current, "training bound")
      if current % config.log_every == 0 or current == total:
        self._log_progress(logs, current, clock)
      if current % config.eval_every == 0 or current == total:
        results = self.evaluate_bounds()
        self._log_eval(results, current)
        check(results["bound"], current, "eval bound")
      stopping = stop.signum is not None and current < total
      if current % config.checkpoint_every == 0 or current == total or stopping:
        if current == total:  # The final checkpoint and the export hold the calibrations.
          _calibrate_conflict(self.model, self.eval_ds, config)
          calibrate_filter(self.model, config)
        manager.save(checkpoint_number=current)
        check.keywords["checkpoint"] = manager.latest_checkpoint
      if stopping:
        raise Interrupted(stop.signum, current, manager.latest_checkpoint)
    return results


def check_divergence(bound, step, what, initial_bound, tolerance, checkpoint):
  """Raises FloatingPointError when training diverged.

  The rule: a value that is NaN or infinite, or a bound b (nats per example,
  higher is better) with

    b < b0 - tolerance * max(|b0|, 1),

  b0 being the eval bound of the initial model (NaN: unknown, e.g. a workdir
  begun before b0 was kept; then only NaN / inf count). With the default
  tolerance 1, a bound twice as bad as at initialisation (or 1 nat worse for
  |b0| < 1) has diverged: training moves bounds up, an unstable optimiser
  (e.g. a learning rate of 1.0) sends them down by orders of magnitude. The
  training bound is checked after every chunk of steps, before any
  checkpoint, so the newest checkpoint is the last good one.

  Args:
    bound: the bound reached.
    step: the step reached.
    what: its name in the message.
    initial_bound: b0 (NaN: unknown).
    tolerance: the rule's tolerance (0: only NaN / inf).
    checkpoint: the newest checkpoint (None: none yet).
  """
  if math.isfinite(bound):
    if not (tolerance > 0 and math.isfinite(initial_bound)):
      return
    floor = initial_bound - tolerance * max(abs(initial_bound), 1.)
    if bound >= floor:
      return
    reason = (f"{what} {bound:.6g} fell below {floor:.6g}, the initial model's eval "
              f"bound {initial_bound:.6g} minus divergence_tolerance={tolerance:g} x "
              f"max(|{initial_bound:.6g}|, 1)")
  else:
    reason = f"{what} {bound}"
  kept = (f"The last good checkpoint, {checkpoint}, was kept" if checkpoint else
          "No checkpoint was written yet")
  raise FloatingPointError(
      f"Training diverged at step {step}: {reason}. {kept}; lower the learning rate "
      "or check the data.")


def _finished_metrics(workdir, start, num_steps, chief=True):
  """The saved final metrics when the workdir's run is done and nothing is left to do.

  A re-run of a finished run, or one asking for fewer steps than were trained,
  changes nothing (it says so); None when there is training, evaluation or an
  export left to do.
  """
  path = os.path.join(workdir, "metrics.json")
  if start < num_steps or not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    metrics = json.load(f)
  if metrics.get("step") != start or not tf.io.gfile.exists(
      os.path.join(workdir, "export", str(start))):
    return None
  if not chief:
    return metrics
  if start > num_steps:
    log.warning("%s holds a run trained to step %d, beyond num_steps=%d: nothing was "
                "trained and nothing changed (a new --workdir trains %d steps).",
                workdir, start, num_steps, num_steps)
  else:
    log.info("%s is trained to step %d already: nothing to do.", workdir, start)
  print(f"Eval of step {start} ({path}), nats per example, higher is better: "
        f"ind {metrics['ind']:.4f} | moe {metrics['moe']:.4f} | poe {metrics['poe']:.4f}",
        flush=True)
  return metrics


def _summary(config, results, workdir, start, elapsed, export_dir) -> str:
  """The closing message of `train_and_evaluate`."""
  current = results["step"]
  return (f"Finished {config.dataset} / L_{config.objective}: step {current} "
          f"({current - start} steps in {format_time(elapsed)}).\n"
          f"Eval (K={config.eval_num_samples}), nats per example, higher is better: "
          f"training bound {results['bound']:.4f} | ind {results['ind']:.4f} | "
          f"moe {results['moe']:.4f} | poe {results['poe']:.4f}\n"
          f"Results in {workdir}:\n"
          f"  TensorBoard:  tensorboard --logdir {workdir}\n"
          f"  checkpoints:  {os.path.join(workdir, 'checkpoints')}\n"
          f"  SavedModel:   {export_dir}\n"
          f"  metrics:      {os.path.join(workdir, 'metrics.json')}")


def train_and_evaluate(config: Config, workdir: str) -> Dict[str, float]:
  """Trains, evaluates, checkpoints and exports; resumes when re-run.

  Args:
    config: a config from `configs` (its fields: `msnvi_tf.runtime.config.FIELDS`).
    workdir: directory for checkpoints, TensorBoard logs and the export.

  Returns:
    The final evaluation metrics: "bound" (training objective), "ind", "moe",
    "poe" bounds per example (nats, higher is better), "loss", "step", and
    "param_norm" (global norm of the trainable weights).

  Raises:
    ValueError: a field's value breaks its rule (`config.validate`); nothing
      was written.
    workdir.WorkdirBusy: another process is training in `workdir` (the chief
      holds `<workdir>/.lock` for the whole run); nothing was written.
  """
  config = Config(config)
  config_lib.validate(config, registry.for_config(config).splits)  # before anything is written
  workdir_lib.resolve_numerics(config, workdir)  # a resume keeps the first start's
  strategy, policy, jit = _setup_machine(config)
  chief = hardware.is_chief(strategy)
  if not chief:
    return _train_and_evaluate(config, workdir, strategy, policy, jit, chief)
  with workdir_lib.lock(workdir):
    workdir_lib.prepare(config, workdir)
    workdir_lib.clean_interrupted(workdir)
    run = dict(argv=sys.argv, commit=workdir_lib.code_version(),
               machine=workdir_lib.machine(), precision=policy, jit_compile=jit)
    workdir_lib.log_run(workdir, "start", **run)
    try:
      results = _train_and_evaluate(config, workdir, strategy, policy, jit, chief, run)
    except Interrupted as e:
      workdir_lib.log_run(workdir, "end", status="interrupted", step=e.step)
      raise
    except BaseException as e:
      workdir_lib.log_run(workdir, "end", status=f"failed: {type(e).__name__}: {e}"[:500])
      raise
    workdir_lib.log_run(workdir, "end", status="finished", step=results["step"])
    return results


def _train_and_evaluate(config, workdir, strategy, policy, jit, chief, run=None):
  """`train_and_evaluate` once the machine is set up and the workdir locked.

  `run`: what the chief logs of this invocation (commit, machine, ...), shown
  with the config in TensorBoard.
  """
  # Other workers write their (required) checkpoints to a scratch dir.
  logdir = workdir if chief else os.path.join(
      workdir, f"worker_tmp_{strategy.cluster_resolver.task_id}")
  keras.utils.set_random_seed(config.seed)
  with hardware.policy(policy), strategy.scope():
    model = optimizers.compile_model(architectures.build_model(config), config)
    step = tf.Variable(0, dtype=tf.int64, name="step")
    initial_bound = tf.Variable(math.nan, dtype=tf.float32, name="initial_bound")
  checkpoint = workdir_lib.checkpoint(model, step, initial_bound)
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(logdir, "checkpoints"),
                                       config.max_checkpoints)
  restored = workdir_lib.restore(checkpoint, workdir)
  start = int(step.numpy())
  with hardware.policy(policy):
    datasets = data_lib.make_datasets(config, start_step=start)
  if restored:
    if config.lr_schedule == "constant":
      model.optimizer.learning_rate = config.learning_rate  # The config's, not the saved.
    log.info("Resumed from %s at step %d.", restored, start)
  log.info("Training %s with L_%s for %d steps (K=%d, batch %d) in %s.", config.dataset,
           config.objective, config.num_steps, config.num_samples, config.batch_size,
           workdir)
  # Before anything is written: a finished run re-runs on a read-only disk too.
  done = _finished_metrics(workdir, start, config.num_steps, chief)  # every worker alike
  if done is not None:
    return done
  summaries = summaries_lib.RunSummaries(workdir, config, chief)
  loop = _Loop(model, config, strategy, jit, datasets, summaries)
  if chief:  # config.json: once, atomically, as the first step is about to run.
    workdir_lib.write_config(config, workdir, precision=policy, jit_compile=jit,
                             intra_op_threads=hardware.intra_op_threads())
    if start == 0:
      summaries.describe_run({k: v for k, v in (run or {}).items() if k != "argv"})
  log.info("Bounds in nats per example, higher is better: 'step' lines show the training "
           "bound (K=%d, minibatches since the previous line), 'eval' lines the test bounds "
           "(K=%d, %s test examples) of L_%s and of the ind / MoE / PoE integrations.",
           config.num_samples, config.eval_num_samples, config.get("eval_size") or "all",
           config.objective)
  t_start = time.time()
  with _StopOnSignal(enabled=hardware.num_workers(strategy) == 1) as stop:
    # None: nothing left to train.
    results = loop.run(step, manager, stop, initial_bound) or loop.evaluate_bounds()
  results["step"] = int(step.numpy())
  # Identical on every worker when replicas stay in sync.
  results["param_norm"] = _param_norm(model)
  if not chief:
    tf.io.gfile.rmtree(logdir)
    return results
  workdir_lib.write_json(os.path.join(workdir, "metrics.json"), results)
  export_dir = workdir_lib.export_once(model, workdir, results["step"], config)
  print(_summary(config, results, workdir, start, time.time() - t_start, export_dir),
        flush=True)
  return results
