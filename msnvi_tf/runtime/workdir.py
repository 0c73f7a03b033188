"""A workdir: its config, checkpoints, resume and loading a trained model.

`bin/train` writes into a workdir:
  config.json        the config (a re-run must use a compatible one: only the
                     fields not declared `config.FIXED` may change, `runtime_fields`)
  checkpoints/       tf.train checkpoints; a re-run resumes from the latest; the
                     final one also holds the conflict thresholds calibrated on
                     the evaluation data (`msnvi_tf.core.calibration`) and, for
                     a data set with sequences, the latent filter fitted on
                     healthy ones (`training.calibrate_filter`; older
                     checkpoints restore without one)
  train/, eval/      TensorBoard scalars
  metrics.json       the final evaluation
  export/<step>/     SavedModel for TF Serving (`msnvi_tf.runtime.export`)
  .lock              held by the run writing the workdir (`lock`)
  runs.jsonl         one line per start and end of each bin/train invocation
                     (`log_run`): time, command line, commit, machine, precision,
                     steps, exit status

config.json is written once, atomically, when the first training step is about
to run: a start that fails before (missing data, a bad architecture) leaves
nothing that blocks the corrected command. It records what trained the model,
including the precision `auto` resolved to, whether XLA was on and the intra-op threads
(`NUMERICS_FIELDS`): a resume reuses them, and refuses to change them.

A checkpoint holds everything a resumed run needs to continue exactly: the
weights, the optimizer (its step drives the learning-rate schedule), the
training random stream and the running training metrics. Checkpoints and
exports are never deleted or overwritten by a failing run: a damaged newest
checkpoint is passed over for the previous one with a warning, and files
appear only complete (written aside, then renamed).
"""
import contextlib
import glob
import json
import os
import platform
import socket
import subprocess
import sys
import time
from typing import Dict, Optional

try:
  import fcntl
except ImportError:  # not POSIX: no lock
  fcntl = None

import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf import registry
from msnvi_tf.runtime import export as export_lib
from msnvi_tf.runtime import hardware
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import config as config_lib
from msnvi_tf.runtime.config import Config

__all__ = ["runtime_fields", "NUMERICS_FIELDS", "WorkdirBusy", "lock", "prepare",
           "resolve_numerics", "write_config", "log_run", "machine", "code_version",
           "checkpoint", "restore", "clean_interrupted", "write_json",
           "export_once", "load_config", "load_trained"]

# Runtime fields that change the numbers: fixed at the first start (config.json
# holds their resolved values), reused on resume.
NUMERICS_FIELDS = tuple(k for k, f in config_lib.FIELDS.items()
                        if f.resume == config_lib.NUMERICS)
log = hardware.log


class WorkdirBusy(RuntimeError):
  """Another process is writing the workdir."""


@contextlib.contextmanager
def lock(workdir: str):
  """Holds `<workdir>/.lock` while a run writes the workdir: one writer at a time.

  An exclusive `flock` on the file, which the operating system releases when
  the process ends however it ends (a SIGKILL leaves no stale lock). The file
  names its holder (pid, host, command line) for the message of a second run.
  Local file systems only: on a file system without `flock` (some network
  ones) the lock is skipped with nothing said; no lock on non-POSIX systems.
  Nor is a workdir this process cannot write (a read-only file system): no
  writer to keep out; a re-run of a finished run there only reads it.

  Raises:
    WorkdirBusy: another process holds the lock; nothing was written.
  """
  if fcntl is None or "://" in workdir:  # no flock on non-POSIX or remote (gs://) paths
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):  # anything but reading fails at its first write
    yield
    return
  path = os.path.join(workdir, ".lock")
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise WorkdirBusy(
          f"{workdir} is being written by {holder}. Wait for it to end (or stop it), "
          "or pass another --workdir; nothing was written.") from None
    except OSError:  # flock not supported here
      yield
      return
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})\n")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def runtime_fields(config: Config) -> frozenset:
  """The fields of `config` that may change between runs in one workdir.

  Those its declarations (`Config.declarations`) do not declare `config.FIXED`:
  steps, logging, paths, numerics; everything else must match.
  """
  return frozenset(k for k, f in config.declarations.items() if f.resume != config_lib.FIXED)


def _saved_config(workdir: str, declarations=config_lib.FIELDS) -> Optional[Dict]:
  """The workdir's config.json as a dict, None if there is none.

  Fields of `declarations` added after the workdir was written get their
  defaults (which keep the behaviour the run was trained with): the one place
  where an old workdir's config is completed.

  Raises:
    ValueError: config.json is not valid JSON (named in the message).
  """
  path = os.path.join(workdir, "config.json")
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    saved = json.loads(text)
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it was left untouched. Move it "
                     "aside to start this workdir anew, keeping its checkpoints.") from None
  return {**config_lib.defaults(declarations), **saved}


def prepare(config: Config, workdir: str):
  """Refuses a workdir trained with an incompatible config; writes nothing.

  Raises:
    ValueError: the workdir's config.json differs in a field that defines the
      model (anything but `runtime_fields`), or is not valid JSON.
  """
  saved = _saved_config(workdir, config.declarations)
  if saved is None:
    return
  current = json.loads(config.to_json())
  may_change = runtime_fields(config)
  diffs = sorted(k for k in set(saved) | set(current)
                 if k not in may_change and saved.get(k) != current.get(k))
  if diffs:
    details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diffs)
    raise ValueError(
        f"Workdir {workdir} holds a run with a different config ({details}). "
        "Its checkpoints were left untouched; pass a new --workdir to train "
        "this config, or the same flags to resume.")


def resolve_numerics(config: Config, workdir: str):
  """Fixes the config's `NUMERICS_FIELDS` to what trained the workdir's model.

  A workdir whose config.json records a resolved precision ("float32",
  "mixed_bfloat16", ...), XLA switch (True / False) and intra-op thread count
  (a number: the count changes how ops split their sums, so the last bits of
  the weights; measured on MNIST-TB, 200 steps with 1 and 2 threads: 85 of 101
  checkpointed tensors differ) resumes with them when
  the config asks for "auto" (no new timing probe that could decide
  otherwise); a new run or an older workdir (which recorded "auto") resolves
  them anew.

  Raises:
    ValueError: the config asks for other numerics than the workdir's model
      was trained with: resuming would change its numbers.
  """
  saved = _saved_config(workdir, config.declarations) or {}
  for field in NUMERICS_FIELDS:
    stored, asked = saved.get(field), config.get(field)
    if stored is None or str(stored).lower() == "auto":
      continue
    if str(asked).lower() == "auto":
      config[field] = stored
    elif str(asked).lower() != str(stored).lower():
      raise ValueError(
          f"Workdir {workdir} was trained with {field}={stored}; resuming with "
          f"{field}={asked} would change its numbers. Resume with --set {field}={stored} "
          f"(or auto), or pass a new --workdir to train with {field}={asked}.")


def write_config(config: Config, workdir: str, **resolved):
  """Writes config.json once (atomically), with the `resolved` numerics fields.

  Does nothing when the workdir has a config.json: it records the first start,
  what trained the model; later invocations are in runs.jsonl.
  """
  path = os.path.join(workdir, "config.json")
  if tf.io.gfile.exists(path):
    return
  tf.io.gfile.makedirs(workdir)
  write_json(path, {**json.loads(config.to_json()), **resolved})


def code_version() -> str:
  """The git commit of this checkout of msnvi_tf ("+changes" if modified), or ""."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, timeout=10).stdout.strip()
    changes = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "msnvi_tf",
                              "configs", "bin"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ""
  return commit + ("+changes" if commit and changes else "")


def machine() -> str:
  """This machine in a few words: host, CPU model, cores, bf16 / AMX support."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                   model)
  except OSError:
    pass
  flags = hardware.cpu_flags()
  extras = [f for f in ("avx512_bf16", "amx_bf16") if f in flags] or (
      ["avx2"] if "avx2" in flags else [])
  return (f"{socket.gethostname()}: {model}, {os.cpu_count()} cores"
          + (f", {' '.join(extras)}" if extras else ""))


def log_run(workdir: str, event: str, **fields):
  """Appends one line to `<workdir>/runs.jsonl`: time, pid, `event` and `fields`."""
  record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(),
            "event": event, **fields}
  try:
    with open(os.path.join(workdir, "runs.jsonl"), "a") as f:
      f.write(json.dumps(record) + "\n")
  except OSError as e:  # a log line is not worth failing a run
    log.warning("Could not append to %s/runs.jsonl: %s", workdir, e)


def checkpoint(model, step, initial_bound=None):
  """The `tf.train.Checkpoint` of a run: everything a resumed run needs (module docstring).

  `initial_bound` (a variable) holds the eval bound at initialisation, the
  reference of the divergence check (`training.check_divergence`).
  """
  # The Adam state apart from float16's loss scale, which is saved on its own:
  # a checkpoint then restores under every precision policy.
  optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
  extra = {} if initial_bound is None else {"initial_bound": initial_bound}
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


def restore(checkpoint, workdir) -> Optional[str]:
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


def clean_interrupted(workdir: str):
  """Removes what interrupted writes left in `workdir` (the writer holds its lock).

  Files appear only complete (written aside, then renamed), so what is still
  aside belongs to a write that was killed: a checkpoint's `ckpt-N_temp/`, a
  checkpoint's `.data` files without their `.index` (a kill between the two),
  an export's `export/<step>.tmp/` and `<file>.tmp` files. Complete
  checkpoints, even damaged ones, and exports are left alone.
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  leftovers = glob.glob(os.path.join(ckpt_dir, "ckpt-*_temp*"))
  leftovers += [p for p in glob.glob(os.path.join(ckpt_dir, "ckpt-*.data-*"))
                if not os.path.exists(p.split(".data-")[0] + ".index")]
  leftovers += glob.glob(os.path.join(workdir, "export", "*.tmp"))
  leftovers += glob.glob(os.path.join(workdir, "*.tmp"))
  for path in sorted(leftovers):
    if os.path.isdir(path):
      tf.io.gfile.rmtree(path)
    else:
      os.remove(path)
    log.info("Removed %s, left by an interrupted write.", path)


def write_json(path: str, value):
  """Writes `value` as JSON to `path` atomically (aside, then renamed)."""
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    json.dump(value, f, indent=2)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def export_once(model, workdir: str, step: int, config: Config) -> str:
  """Exports `model` to <workdir>/export/<step> unless that export exists; returns its path."""
  export_dir = os.path.join(workdir, "export")
  version_dir = os.path.join(export_dir, str(step))
  if tf.io.gfile.exists(version_dir):
    log.info("Export %s exists; kept it.", version_dir)
  else:
    export_lib.export(model, export_dir, step, config.export_num_samples, config.seed)
  return version_dir


def run_name(workdir: str) -> str:
  """A workdir's name in result files and tables: its last path component.

  Result files are committed and compared across machines, so they name runs,
  never a machine's absolute path.
  """
  return os.path.basename(os.path.normpath(workdir))


def load_config(workdir: str, trust_workdir: bool = False) -> Config:
  """The config a workdir was trained with (its config.json).

  A workdir's files are data, never run: the `dataset_module` its config names
  (the code that registers a user's data set) is imported only with
  `trust_workdir`. Without it, that data set must be registered already (e.g.
  by `registry.import_dataset_module` of a module you name, as `--dataset_module`
  of `bin/evaluate` and `bin/plot` does); built-in data sets always are. The
  config carries its data set's declarations (`Config.declarations`), and the
  fields declared after the workdir was written get their defaults.

  Raises:
    FileNotFoundError: no config.json: not a workdir written by bin/train.
    ValueError: config.json is not valid JSON (named in the message), or it
      names a `dataset_module` for a data set that is not registered and
      `trust_workdir` is False (the message names the module).
  """
  saved = _saved_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"{os.path.join(workdir, 'config.json')} not found: {workdir} "
                            "is not a workdir written by bin/train.")
  module, dataset = saved["dataset_module"], saved.get("dataset")
  if module and dataset not in registry.names():
    if not trust_workdir:
      raise ValueError(
          f"{workdir} asks to import {module} (its config's dataset_module), which runs "
          "its code; if you trust it, re-run with --trust_workdir or "
          f"--dataset_module={module} (in Python: trust_workdir=True).")
    registry.import_dataset_module(module)
  if dataset not in registry.names():  # fails where the data set is needed
    return Config(saved)
  declarations = registry.get(dataset).config().declarations  # its data set's fields too
  return Config(_saved_config(workdir, declarations), declarations=declarations)


def load_trained(workdir: str, *, trust_workdir: bool = False, **overrides):
  """`(model, config)` restored from the newest readable checkpoint of a workdir.

  The model's `trained_steps` attribute is the step of that checkpoint (an
  older one than the newest when that is damaged; see `restore`); a log line
  names both.

  Args:
    workdir: a directory written by `train_and_evaluate`.
    trust_workdir: import the `dataset_module` the workdir's config names
      (running its code) if its data set is not registered (`load_config`).
    **overrides: config fields to change for this use: the runtime fields
      (`runtime_fields`) and the evaluation set (`eval_size`, `eval_seed`).

  Raises:
    FileNotFoundError: no config.json or no checkpoint.
    ValueError: an override names an unknown field or one that defines the
      trained model (architecture, objective, data), or the workdir names a
      `dataset_module` that is not trusted (`load_config`).
  """
  config = load_config(workdir, trust_workdir)
  unknown = sorted(set(overrides) - set(config))
  if unknown:
    raise ValueError(f"Unknown config field(s) {unknown} for {workdir}.")
  fixed = sorted(set(overrides) - runtime_fields(config) - {"eval_size", "eval_seed"})
  if fixed:
    raise ValueError(
        f"Cannot override {fixed} when loading {workdir}: they define the trained "
        "model; train a new workdir instead.")
  config.update(overrides)
  with hardware.policy(config.precision):
    model = optimizers.compile_model(architectures.build_model(config), config)
  step = tf.Variable(0, dtype=tf.int64)
  path = restore(checkpoint(model, step), workdir)
  if path is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints.")
  model.trained_steps = int(step.numpy())
  log.info("Loaded %s at step %d (checkpoint %s).", run_name(workdir), model.trained_steps,
           os.path.basename(path))
  return model, config
