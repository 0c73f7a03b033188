"""`train_and_evaluate(config, workdir)`: the training loop behind `bin/train`.

Trains `config.objective` on `config.dataset`, writing into `workdir`:
  config.json        the config (a re-run must use a compatible one)
  checkpoints/       tf.train checkpoints; a re-run resumes from the latest; the
                     final one also holds the conflict thresholds calibrated on
                     the evaluation data (`msnvi_tf.core.calibration`)
  train/, eval/      TensorBoard scalars: training bound, steps/s; eval bounds
                     under every integration (ind / MoE / PoE)
  metrics.json       the final evaluation
  export/<step>/     SavedModel for TF Serving (see `msnvi_tf.runtime.export`)

A re-run resumes exactly: a checkpoint holds the weights, the optimizer (its
step drives the learning-rate schedule), the training random stream and the
running training metrics, evaluation noise restarts at every evaluation, and
the training data are a function of (seed, step)
(`msnvi_tf.data.training_batches`), so a run killed at any moment and re-run
with the same command ends with the same weights as one never stopped.

Checkpoints and exports are never deleted or overwritten by a failing run: a
damaged newest checkpoint is passed over for the previous one with a warning, a
diverging loss stops training with a message that names the last good
checkpoint, and exports and metrics.json appear only complete (written aside,
then renamed).
"""
import glob
import json
import math
import os
import sys
import time
from typing import Dict, Optional

import logging

import keras
import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf.core import calibration
from msnvi_tf import data as data_lib
from msnvi_tf.runtime import export as export_lib
from msnvi_tf.core import objectives
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import hardware
from msnvi_tf.runtime.config import Config

__all__ = ["train_and_evaluate", "evaluate", "load_config", "load_trained", "log_to_stdout",
           "make_strategy", "resolve_jit", "configure_threads", "format_time",
           "RUNTIME_FIELDS"]

# Fields that may change between runs in one workdir (everything else must match).
RUNTIME_FIELDS = frozenset({
    "num_steps", "steps_per_call", "log_every", "eval_every", "checkpoint_every",
    "eval_batch_size", "max_checkpoints", "data_dir", "precision", "jit_compile",
    "export_num_samples", "eval_num_samples", "learning_rate", "distribute",
    "archive_dir", "tfds_data_dir", "intra_op_threads", "conflict_false_alarm_rate",
})
# Spellings of a config switch that is forced on (jit_compile).
_ON = ("true", "on", "1")
# Progress goes to this logger; `bin/` scripts print it to stdout.
log = logging.getLogger("msnvi_tf")


def _check_workdir(config: Config, workdir: str):
  """Refuses a workdir trained with an incompatible config; writes config.json."""
  path = os.path.join(workdir, "config.json")
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
    current = json.loads(config.to_json())
    diffs = sorted(k for k in set(saved) | set(current)
                   if k not in RUNTIME_FIELDS and saved.get(k) != current.get(k))
    if diffs:
      details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diffs)
      raise ValueError(
          f"Workdir {workdir} holds a run with a different config ({details}). "
          "Its checkpoints were left untouched; pass a new --workdir to train "
          "this config, or the same flags to resume.")
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(config.to_json())


def _build(config: Config):
  """Model with a compiled and built Adam optimizer (Adam as in App. H)."""
  objectives.check_objective(config.objective)
  model = architectures.build_model(config)
  model.compile(optimizer=optimizers.Adam(
      optimizers.learning_rate(config), beta_1=config.beta1, beta_2=config.beta2))
  model.optimizer.build(model.trainable_variables)
  return model


def _checkpoint(model, step):
  """Everything a resumed run needs to continue exactly (see module docstring)."""
  # The Adam state apart from float16's loss scale, which is saved on its own:
  # a checkpoint then restores under every precision policy.
  optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
  extra = {}
  if optimizer is not model.optimizer:
    extra["loss_scale"] = list(model.optimizer.variables)
  return tf.train.Checkpoint(
      step=step, model=model, optimizer=optimizer, rng=model.rng,
      metrics=[v for m in model.metrics for v in m.variables], **extra)


def _candidates(ckpt_dir: str):
  """Checkpoint prefixes in `ckpt_dir`, newest first: the state file's and any `ckpt-N`."""
  paths = set()
  try:
    state = tf.train.get_checkpoint_state(ckpt_dir)
  except Exception:  # pylint: disable=broad-except  (a damaged state file: scan instead)
    state = None
  if state is not None:
    paths.update(os.path.join(ckpt_dir, os.path.basename(p))
                 for p in state.all_model_checkpoint_paths)
  paths.update(p[:-len(".index")] for p in glob.glob(os.path.join(ckpt_dir, "ckpt-*.index")))
  def number(path):
    suffix = path.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1
  return sorted(paths, key=number, reverse=True)


def _first_line(error: Exception) -> str:
  return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _restore(checkpoint, workdir) -> Optional[str]:
  """Restores the newest readable checkpoint of `workdir` (every worker reads the chief's).

  A damaged checkpoint (files truncated or missing, as a run killed while
  writing it, or a full disk, leaves them) is passed over for the one before
  it, with a warning that names it; when every checkpoint is damaged, training
  starts from step 0 (the damaged files are replaced when that step is reached
  again, or rotated out like any old checkpoint). Restoring deletes nothing.

  Returns:
    The restored checkpoint's prefix, or None when there is none to restore.

  Raises:
    RuntimeError: a checkpoint that does not fit the model (another
      architecture or code version); it was left untouched.
  """
  damaged = []
  for path in _candidates(os.path.join(workdir, "checkpoints")):
    try:
      # Objects a checkpoint need not hold (float16's loss scale, or what older
      # checkpoints lack) may be unmatched; config.json guards the architecture.
      checkpoint.restore(path).expect_partial().assert_nontrivial_match()
    except (tf.errors.OpError, IndexError) as e:  # Unreadable files.
      log.warning("Checkpoint %s is damaged (%s) and was skipped; its files were "
                  "left in place.", path, _first_line(e))
      damaged.append(path)
      continue
    except Exception as e:  # pylint: disable=broad-except  (readable, but does not fit)
      raise RuntimeError(
          f"Checkpoint {path} in {workdir} could not be restored ({_first_line(e)}). "
          "Nothing was deleted: pass a new --workdir, or move the checkpoint aside "
          "to resume from an earlier one.") from e
    if damaged:
      log.warning("Resuming from %s, the newest readable checkpoint.", path)
    return path
  if damaged:
    log.warning("No readable checkpoint in %s: training starts from step 0.", workdir)
  return None


def _write_json(path: str, value):
  """Writes `value` as JSON to `path` atomically (aside, then renamed)."""
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    json.dump(value, f, indent=2)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def evaluate(model, dataset, test_fn=None, strategy=None) -> Dict[str, float]:
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
  result = model.calibrate_conflict(
      dataset, config.get("conflict_false_alarm_rate", calibration.FALSE_ALARM_RATE))
  log.info("Conflict thresholds calibrated on %d held-out examples: quantile %.4f, "
           "alarms on %.2f %% of them.", result.num_examples, result.level,
           100. * result.false_alarm_rate)


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
  """The `tf.distribute` strategy for `config.distribute`.

  "auto": MultiWorkerMirroredStrategy when TF_CONFIG is set (several hosts or
  processes), MirroredStrategy with more than one GPU, else the default
  (single-device) strategy. "multi_worker", "mirrored" and "none" force one.
  """
  if kind == "auto":
    if os.environ.get("TF_CONFIG"):
      kind = "multi_worker"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
      kind = "mirrored"
    else:
      kind = "none"
  if kind == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if kind == "mirrored":
    return tf.distribute.MirroredStrategy()
  if kind == "none":
    return tf.distribute.get_strategy()
  raise ValueError(f"Unknown distribute {kind!r}; choose one of "
                   "auto, none, mirrored, multi_worker.")


def configure_threads(value, gpus=None, cores=None, xla=False) -> str:
  """Applies `config.intra_op_threads` (before TF starts); returns it for the log.

  "auto": 1 on CPU-only machines with at most 2 cores when XLA is not forced
  on (`xla`), otherwise TensorFlow's default (0, one thread per core);
  TF_NUM_INTRAOP_THREADS, if set, wins. On the 2-core AMD EPYC here
  (bench/step_time.py, no XLA) one intra-op thread made every step 6-16%
  faster (MNIST-TB L_ind float32 25.6 -> 23.3 ms, CUB hybrid at 32x32 91.9 ->
  81.8 ms): independent ops (each source's decoder, a layer's two backward
  matmuls) then run side by side, one per core, instead of each splitting
  across both. XLA:CPU runs one op at a time and needs the intra-op threads
  (MNIST-TB L_ind with XLA: 26 ms with them, 43 ms without). Once TF has
  started the setting can no longer change; that is logged, not an error.
  """
  if str(value).lower() == "auto":
    if os.environ.get("TF_NUM_INTRAOP_THREADS"):
      return f"{os.environ['TF_NUM_INTRAOP_THREADS']} (TF_NUM_INTRAOP_THREADS)"
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    threads = 1 if not gpus and cores <= 2 and not xla else 0
  else:
    try:
      threads = int(value)
    except ValueError:
      raise ValueError(
          f"intra_op_threads must be 'auto' or an integer, got {value!r}.") from None
  current = tf.config.threading.get_intra_op_parallelism_threads()
  if threads <= 0 or threads == current:
    return str(current or "TF default")
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:
    log.warning("TensorFlow has already started: intra-op threads stay at %s "
                "(wanted %d).", current or "TF default", threads)
    return str(current or "TF default")
  return str(threads)


def resolve_jit(value, strategy=None, gpus=None) -> bool:
  """`config.jit_compile`: True/False, or "auto" = XLA on a GPU with a single replica.

  Measured with bench/step_time.py on a 2-core AMD EPYC (float32, no XLA vs
  XLA): MNIST-TB L_ind 25.7 vs 27.0 ms, CUB hybrid at 32x32 85 vs 136 ms
  (oneDNN's matmuls and convolutions beat XLA:CPU's; the Bernoulli heads are
  fused anyway, see `likelihoods.compiled_kernels`), toy 0.82 vs 0.67 ms. So
  "auto" leaves XLA off on CPUs; on GPUs it fuses the objectives' many small
  ops. Multi-replica training keeps the collective all-reduce outside XLA, so
  "auto" leaves XLA off there too. `gpus` defaults to this machine's.
  """
  text = str(value).lower()
  if text in _ON:
    return True
  if text in ("false", "off", "0"):
    return False
  if text == "auto":
    strategy = strategy or tf.distribute.get_strategy()
    if gpus is None:
      gpus = tf.config.list_physical_devices("GPU")
    return strategy.num_replicas_in_sync == 1 and bool(gpus)
  raise ValueError(f"jit_compile must be True, False or 'auto', got {value!r}.")


def _is_chief(strategy) -> bool:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def load_config(workdir: str) -> Config:
  """The config a workdir was trained with (its config.json).

  Raises:
    FileNotFoundError: no config.json: not a workdir written by bin/train.
  """
  path = os.path.join(workdir, "config.json")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} not found: {workdir} is not a workdir written by bin/train.")
  with tf.io.gfile.GFile(path) as f:
    return Config(json.load(f))


def load_trained(workdir: str, **overrides):
  """`(model, config)` restored from the latest checkpoint of a workdir.

  Args:
    workdir: a directory written by `train_and_evaluate`.
    **overrides: config fields to change for this use: the runtime fields
      (`RUNTIME_FIELDS`) and the evaluation set (`eval_size`, `eval_seed`).

  Raises:
    FileNotFoundError: no config.json or no checkpoint.
    ValueError: an override names an unknown field or one that defines the
      trained model (architecture, objective, data).
  """
  config = load_config(workdir)
  unknown = sorted(set(overrides) - set(config))
  if unknown:
    raise ValueError(f"Unknown config field(s) {unknown} for {workdir}.")
  fixed = sorted(set(overrides) - RUNTIME_FIELDS - {"eval_size", "eval_seed"})
  if fixed:
    raise ValueError(
        f"Cannot override {fixed} when loading {workdir}: they define the trained "
        "model; train a new workdir instead.")
  config.update(overrides)
  with hardware.policy(config.precision):
    model = _build(config)
  if _restore(_checkpoint(model, tf.Variable(0, dtype=tf.int64)), workdir) is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints.")
  return model, config


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


def _write(writer, scalars, step):
  with writer.as_default(step=step):
    for name, value in scalars.items():
      tf.summary.scalar(name, value)
  writer.flush()


def train_and_evaluate(config: Config, workdir: str) -> Dict[str, float]:
  """Trains, evaluates, checkpoints and exports; resumes when re-run.

  Args:
    config: a config from `configs` (see `configs/toy.py` for the fields).
    workdir: directory for checkpoints, TensorBoard logs and the export.

  Returns:
    The final evaluation metrics: "bound" (training objective), "ind", "moe",
    "poe" bounds per example (nats, higher is better), "loss", "step", and
    "param_norm" (global norm of the trainable weights).
  """
  config = Config(config)
  objectives.check_objective(config.objective)
  # First: threads and MultiWorkerMirroredStrategy must be set before TF starts.
  threads = configure_threads(config.get("intra_op_threads", "auto"),
                              xla=str(config.jit_compile).lower() in _ON)
  strategy = make_strategy(config.get("distribute", "auto"))
  chief = _is_chief(strategy)
  if chief:
    _check_workdir(config, workdir)
    logdir = workdir
  else:  # Other workers write their (required) checkpoints to a scratch dir.
    logdir = os.path.join(workdir, f"worker_tmp_{strategy.cluster_resolver.task_id}")
  keras.utils.set_random_seed(config.seed)
  policy, reason = hardware.resolve(config.precision)
  jit = resolve_jit(config.jit_compile, strategy)
  log.info("Precision: %s (%s). XLA: %s. Intra-op threads: %s. Replicas: %d (%s).",
           policy, reason, jit, threads, strategy.num_replicas_in_sync,
           type(strategy).__name__)
  with hardware.policy(policy), strategy.scope():
    model = _build(config)
    step = tf.Variable(0, dtype=tf.int64, name="step")
  checkpoint = _checkpoint(model, step)
  ckpt_dir = os.path.join(logdir, "checkpoints")
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, config.max_checkpoints)
  restored = _restore(checkpoint, workdir)
  start = int(step.numpy())
  with hardware.policy(policy):
    train_ds, eval_ds = data_lib.make_datasets(config, start_step=start)
  if restored:
    if config.get("lr_schedule", "constant") == "constant":
      model.optimizer.learning_rate = config.learning_rate  # The config's, not the saved.
    log.info("Resumed from %s at step %d.", restored, start)

  train_step = tf.function(model.train_step, jit_compile=jit)
  test_fn = tf.function(model.test_step, jit_compile=jit, reduce_retracing=True)
  iterator = iter(strategy.experimental_distribute_dataset(train_ds))

  @tf.function
  def train_chunk(num):
    logs = {"loss": tf.constant(0.), "bound": tf.constant(0.)}
    for _ in tf.range(num):
      per_replica = strategy.run(train_step, args=(next(iterator),))
      logs = {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}
    return logs

  if chief:
    train_writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(workdir, "eval"))
  else:
    train_writer = eval_writer = tf.summary.create_noop_writer()
  intervals = (config.log_every, config.eval_every, config.checkpoint_every)
  total = config.num_steps
  log.info("Training %s with L_%s for %d steps (K=%d, batch %d) in %s.",
           config.dataset, config.objective, total, config.num_samples,
           config.batch_size, workdir)
  t_start = time.time()
  t_last, s_last, rate = t_start, start, None
  results = None
  current = start
  while current < total:
    boundary = min([total] + [(current // i + 1) * i for i in intervals if i > 0])
    num = min(config.steps_per_call, boundary - current)
    logs = train_chunk(tf.constant(num))
    current = int(step.assign_add(num).numpy())
    loss = float(logs["loss"])
    if not math.isfinite(loss):
      raise FloatingPointError(
          f"Training diverged at step {current} (loss={loss}). The last good "
          f"checkpoint, {manager.latest_checkpoint}, was kept; lower the learning "
          "rate or check the data.")
    if current % config.log_every == 0 or current == total:
      now = time.time()
      rate = (current - s_last) / max(now - t_last, 1e-9)
      t_last, s_last = now, current
      _write(train_writer, {"loss": loss, "bound": float(logs["bound"]),
                            "steps_per_sec": rate}, current)
      log.info("step %d/%d | %.0f steps/s | ETA %s | bound %.4f", current, total,
               rate, format_time((total - current) / max(rate, 1e-9)),
               float(logs["bound"]))
      for metric in model.metrics:
        metric.reset_state()
    if current % config.eval_every == 0 or current == total:
      results = evaluate(model, eval_ds, test_fn, strategy)
      _write(eval_writer, {"bound": results["bound"], "loss": results["loss"],
                           **{f"bound_{k}": results[k]
                              for k in objectives.INTEGRATED_BOUNDS}}, current)
      log.info("eval step %d | bound %.4f | ind %.4f | moe %.4f | poe %.4f",
               current, results["bound"], results["ind"], results["moe"],
               results["poe"])
    if current % config.checkpoint_every == 0 or current == total:
      if current == total:  # The final checkpoint and the export hold the calibration.
        _calibrate_conflict(model, eval_ds, config)
      manager.save(checkpoint_number=current)

  if results is None:  # Nothing left to train: evaluate the restored model.
    results = evaluate(model, eval_ds, test_fn, strategy)
  results["step"] = current
  # Identical on every worker when replicas stay in sync.
  results["param_norm"] = float(tf.linalg.global_norm(
      [tf.convert_to_tensor(v) for v in model.trainable_variables]))
  if not chief:
    tf.io.gfile.rmtree(logdir)
    return results
  _write_json(os.path.join(workdir, "metrics.json"), results)

  export_dir = os.path.join(workdir, "export")
  version_dir = os.path.join(export_dir, str(current))
  if tf.io.gfile.exists(version_dir):
    log.info("Export %s exists; kept it.", version_dir)
  else:
    export_lib.export(model, export_dir, current, config.export_num_samples,
                      config.seed)
  elapsed = time.time() - t_start
  print(f"Finished {config.dataset} / L_{config.objective}: step {current} "
        f"({current - start} steps in {format_time(elapsed)}).\n"
        f"Eval (K={config.eval_num_samples}), nats per example, higher is better: "
        f"training bound {results['bound']:.4f} | ind {results['ind']:.4f} | "
        f"moe {results['moe']:.4f} | poe {results['poe']:.4f}\n"
        f"Results in {workdir}:\n"
        f"  TensorBoard:  tensorboard --logdir {workdir}\n"
        f"  checkpoints:  {ckpt_dir}\n"
        f"  SavedModel:   {version_dir}\n"
        f"  metrics:      {os.path.join(workdir, 'metrics.json')}", flush=True)
  return results
