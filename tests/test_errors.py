"""bin/train's errors: one line naming the file or flag and what to do (docs/failures.md).

Exit status 2 when the command must change (a config file, a workdir), 1 when
the machine must (a full disk), 130 after Ctrl-C; no checkpoint or export is
lost and nothing half-written is kept. The words are tested in-process
(`config.load_file`, `console.failure`, `export.export`, a read-only workdir);
the bin/train commands of `runs`, started together, check what bin/train prints
and how it exits, with faults injected by the `--dataset_module` files below.
"""
import contextlib
import errno
import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

import configs
from msnvi_tf.runtime import config as config_lib
from msnvi_tf.runtime import console
from msnvi_tf.runtime import export as export_lib
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO, make_toy_config

OVERRIDES = ["num_steps=20", "steps_per_call=10", "log_every=10", "eval_every=10",
             "checkpoint_every=10", "train_size=256", "eval_size=64", "export_num_samples=4"]

# Faults, as --dataset_module files (bin/train imports them before it starts).
PAUSE_AT_START_UP = '''
"""Start-up pauses while the data set is loaded, until the test's SIGINT."""
import time
from msnvi_tf import data
def make_datasets(*args, **kwargs):
  print("PAUSED", flush=True)
  time.sleep(300)
data.make_datasets = make_datasets
'''
PAUSE_IN_THE_EXPORT = '''
"""The export pauses with its SavedModel written aside, not renamed, until the test's SIGINT."""
import time
import tensorflow as tf
_save = tf.saved_model.save
def save(*args, **kwargs):
  _save(*args, **kwargs)
  print("PAUSED", flush=True)
  time.sleep(300)
tf.saved_model.save = save
'''
DISK_FULL_AT_STEP_20 = '''
"""The checkpoint of step 20 finds the disk full, as TensorFlow reports it."""
import tensorflow as tf
_save = tf.train.CheckpointManager.save
def save(self, checkpoint_number=None, **kwargs):
  if checkpoint_number == 20:
    raise tf.errors.ResourceExhaustedError(None, None, (
        f"{self.directory}/ckpt-20_temp/part-00000-of-00001.data-00000-of-00001; "
        "No space left on device [Op:SaveV2]"))
  return _save(self, checkpoint_number, **kwargs)
tf.train.CheckpointManager.save = save
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """`{name: (exit status, stdout, stderr, workdir)}` of the bin/train commands.

  Started together (each imports TensorFlow); "start_up" and "export" get a
  SIGINT when their fault module prints PAUSED.
  """
  tmp = tmp_path_factory.mktemp("errors")
  (tmp / "a_file").write_text("")
  commands = {"config": [f"--config={tmp / 'missing.py'}"], "file": []}
  for name, fault in (("start_up", PAUSE_AT_START_UP), ("export", PAUSE_IN_THE_EXPORT),
                      ("disk_full", DISK_FULL_AT_STEP_20)):
    (tmp / f"fault_{name}.py").write_text(fault)
    commands[name] = [f"--dataset_module={tmp / f'fault_{name}.py'}",
                      *(f"--set={o}" for o in OVERRIDES)]
  workdirs = {name: str(tmp / ("a_file" if name == "file" else name)) for name in commands}
  started = {name: subprocess.Popen(
      [sys.executable, os.path.join(REPO, "bin", "train"), f"--workdir={workdirs[name]}",
       *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for name, args in commands.items()}
  printed = {name: "" for name in commands}
  for name in ("start_up", "export"):
    for line in started[name].stdout:
      printed[name] += line
      if line.startswith("PAUSED"):
        started[name].send_signal(signal.SIGINT)
        break
  results = {}
  for name, process in started.items():
    stdout, stderr = process.communicate(timeout=600)
    results[name] = (process.returncode, printed[name] + stdout, stderr, workdirs[name])
  return results


def one_line(stderr):
  """The only line of `stderr` (asserted)."""
  lines = stderr.splitlines()
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize("text,spec,message", [
    (None, "", r"no such file \(/.*/c\.py\)\.$"),
    ("def get_config(:\n", "", r"running the file raised SyntaxError: .*\(.*c\.py, line 1\); "
     "fix the file\.$"),
    ("raise KeyError('x')\n", "", r"running the file raised KeyError: 'x' \(.*c\.py, line 1\)"),
    ("def get_config():\n  return 1 / 0\n", "", r"get_config\(\) raised ZeroDivisionError: "
     r"division by zero \(.*c\.py, line 2\); fix the file or the argument after ':'\.$"),
    ("def get_config():\n  return {}\n", ":mnist", r"get_config\('mnist'\) raised TypeError"),
    ("x = 1\n", "", r"the file defines no get_config\(\) \(configs/toy\.py has one\)\.$"),
    ("def get_config():\n  pass\n", "", r"get_config\(\) returned a NoneType, not a "
     r"ConfigDict; return msnvi_tf\.runtime\.config\.make_config\(\.\.\.\)"),
    ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict("
     "{'dataset': 'toy', 'objective': 'ind'})\n", "",
     r"The config lacks field\(s\) \['latent_dim', .*, 'checkpoint_every'\] that training "
     r"reads \(msnvi_tf\.runtime\.config\.FIELDS documents them\)\.$"),
])
def test_a_config_file_that_cannot_be_used_is_one_line_naming_it(tmp_path, text, spec, message):
  path = tmp_path / "c.py"
  if text is not None:
    path.write_text(text)
  with pytest.raises(ValueError, match=rf"^--config={path}{spec}: {message}") as error:
    config_lib.load_file(f"{path}{spec}")
  assert "\n" not in str(error.value)


def test_a_config_file_may_return_a_dict_and_gets_the_defaults(tmp_path):
  fields = {k: v for k, v in configs.get_config("toy").items() if k != "jit_compile"}
  (tmp_path / "c.py").write_text(f"def get_config(steps):\n  return {fields!r} | "
                                 "{'num_steps': int(steps)}\n")
  config = config_lib.load_file(f"{tmp_path / 'c.py'}:7")
  assert config.num_steps == 7 and config.jit_compile == "auto"  # FIELDS' default


def test_machine_errors_name_the_file_what_to_do_and_the_exit_status():
  full = tf.errors.ResourceExhaustedError(None, None, (
      "{{function_node __wrapped__SaveV2_device_/job:localhost}} /w/checkpoints/ckpt-20_temp/"
      "part-0; No space left on device [Op:SaveV2]"))
  resume = "free space, then re-run the same command to resume."
  assert console.failure(full) == (
      f"/w/checkpoints/ckpt-20_temp/part-0: No space left on device; {resume}", 1)
  assert console.failure(OSError(errno.EDQUOT, "quota", "/w/.lock")) == (
      f"/w/.lock: Disk quota exceeded; {resume}", 1)
  read_only = tf.errors.PermissionDeniedError(None, None, (
      "/w/train/events.v2; Read-only file system\n\tCould not initialize events writer."))
  elsewhere = "pass another path (e.g. --workdir) on a writable disk."
  assert console.failure(read_only) == (f"/w/train/events.v2: Read-only file system; {elsewhere}", 2)
  assert console.failure(OSError(errno.EROFS, "ro", "/w")) == (
      f"/w: Read-only file system; {elsewhere}", 2)
  assert console.failure(PermissionError(errno.EACCES, "x", "/w/.lock")) == (
      "/w/.lock: Permission denied; pass another path (e.g. --workdir) or change its "
      "permissions.", 2)
  assert console.failure(NotADirectoryError(errno.ENOTDIR, "x", "/f/w")) == (
      "/f/w: Not a directory; a part of the path is a file; pass another path.", 2)
  oom = tf.errors.ResourceExhaustedError(None, None, (
      "{{function_node __inference_train_chunk_1}} OOM when allocating tensor with shape"
      "[524288,8,32]\n\t [[{{node x}}]] [Op:__inference_train_chunk_1]"))
  message, status = console.failure(oom)
  assert status == 1 and message.startswith(
      "out of memory (OOM when allocating tensor with shape[524288,8,32]); free memory, ")
  assert "; or lower eval_batch_size" in message and "\n" not in message
  assert console.failure(MemoryError())[1] == 1
  for other in (ValueError("x"), FileNotFoundError(errno.ENOENT, "x", "/x"),
                tf.errors.NotFoundError(None, None, "/x; No such file or directory")):
    assert console.failure(other) is None  # the caller's, or a traceback


def test_an_uncaught_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
  passed_on = []
  monkeypatch.setattr(sys, "excepthook", lambda kind, *_: passed_on.append(kind))
  console.interrupt_exits_130("bin/x")
  with pytest.raises(SystemExit) as exit_:
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
  assert exit_.value.code == 130
  assert capsys.readouterr().err == "bin/x: interrupted (SIGINT).\n"
  sys.excepthook(ValueError, ValueError("x"), None)
  assert passed_on == [ValueError]  # a traceback, as before


def test_an_export_that_fails_or_is_interrupted_leaves_nothing_half_written(
    tmp_path, monkeypatch):
  model = workdir_lib.build_model(make_toy_config())
  monkeypatch.setattr(export_lib.ServingModule, "signatures", lambda self: {})
  for error in (tf.errors.ResourceExhaustedError(None, None, "p; No space left on device"),
                KeyboardInterrupt()):
    def half_save(module, path, error=error, **kwargs):
      del module, kwargs
      os.makedirs(os.path.join(path, "variables"))
      open(os.path.join(path, "saved_model.pb"), "w").close()
      raise error

    monkeypatch.setattr(tf.saved_model, "save", half_save)
    with pytest.raises(type(error)):
      export_lib.export(model, str(tmp_path), 20)
    assert os.listdir(tmp_path) == []  # neither 20/ nor 20.tmp/


@contextlib.contextmanager
def read_only(path):
  """`path` read-only for this process: a read-only bind mount for root (whom
  permissions do not stop), else its files' and directories' permissions."""
  if os.geteuid() != 0:
    paths = [root for root, _, _ in os.walk(path)] + [
        os.path.join(root, f) for root, _, files in os.walk(path) for f in files]
    modes = {p: os.stat(p).st_mode for p in paths}
    for p, mode in modes.items():
      os.chmod(p, mode & ~0o222)
    try:
      yield
    finally:
      for p, mode in modes.items():
        os.chmod(p, mode)
    return
  mounted = subprocess.run(["mount", "--bind", "-o", "ro", path, path],
                           capture_output=True).returncode == 0
  try:
    if not mounted or os.access(path, os.W_OK):
      pytest.skip("root, and no read-only bind mount (mount --bind -o ro)")
    yield
  finally:
    if mounted:
      subprocess.run(["umount", path], check=True)


def _files(workdir):
  """`{path: (size, mtime)}` of every file in `workdir`."""
  return {os.path.join(root, f): (os.stat(os.path.join(root, f)).st_size,
                                  os.stat(os.path.join(root, f)).st_mtime_ns)
          for root, _, files in os.walk(workdir) for f in files}


def test_a_read_only_workdir_re_runs_a_finished_run_and_refuses_more_steps(
    tmp_path, toy_config, no_export):
  workdir = str(tmp_path / "run")
  metrics = training.train_and_evaluate(toy_config, workdir)
  os.makedirs(os.path.join(workdir, "export", "20"))  # what no_export did not write
  before = _files(workdir)
  with read_only(workdir):
    assert training.train_and_evaluate(toy_config, workdir) == metrics  # nothing to do
    with pytest.raises(Exception) as error:  # pylint: disable=broad-except
      training.train_and_evaluate(toy_config.override(["num_steps=30"]), workdir)
  message, status = console.failure(error.value)  # Read-only file system, or Permission denied
  assert status == 2 and message.startswith(workdir), message
  assert "; pass another path (e.g. --workdir) " in message
  assert _files(workdir) == before


def test_config_file_and_workdir_errors_exit_2_in_one_line(runs):
  status, stdout, stderr, workdir = runs["config"]
  assert status == 2 and stdout == ""
  assert one_line(stderr) == f"bin/train: --config={os.path.dirname(workdir)}/missing.py: " \
      f"no such file ({os.path.dirname(workdir)}/missing.py)."
  assert not os.path.exists(workdir)
  status, stdout, stderr, workdir = runs["file"]
  assert status == 2 and stdout == ""
  assert one_line(stderr) == (
      f"bin/train: --workdir {workdir} is a file, not a directory; pass another --workdir.")


def test_ctrl_c_at_start_up_exits_130_in_one_line_writing_no_config_or_checkpoint(runs):
  status, stdout, stderr, workdir = runs["start_up"]
  assert status == 130, stderr[-3000:]
  assert "PAUSED" in stdout
  assert one_line(stderr) == (
      "bin/train: interrupted (SIGINT) before training or while exporting; nothing is left "
      "half-written: re-run the same command to resume.")
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_ctrl_c_in_the_export_exits_130_keeping_no_half_written_export(runs):
  status, stdout, stderr, workdir = runs["export"]
  assert status == 130, stderr[-3000:]
  assert "PAUSED" in stdout
  assert one_line(stderr).startswith("bin/train: interrupted (SIGINT) ")
  assert os.listdir(os.path.join(workdir, "export")) == []  # neither 20/ nor 20.tmp/
  assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-20.index"))


def test_a_full_disk_at_a_checkpoint_exits_1_naming_the_file_and_a_re_run_resumes(
    runs, no_export):
  status, _, stderr, workdir = runs["disk_full"]
  assert status == 1, stderr[-3000:]
  checkpoints = os.path.join(workdir, "checkpoints")
  assert one_line(stderr) == (
      f"bin/train: {checkpoints}/ckpt-20_temp/part-00000-of-00001.data-00000-of-00001: No "
      "space left on device; free space, then re-run the same command to resume. The "
      f"newest checkpoint, {checkpoints}/ckpt-10, was kept.")
  assert os.path.exists(os.path.join(checkpoints, "ckpt-10.index"))
  # The disk freed: the same config resumes from ckpt-10 and finishes.
  results = training.train_and_evaluate(configs.get_config("toy").override(OVERRIDES), workdir)
  assert results["step"] == 20
  assert os.path.exists(os.path.join(checkpoints, "ckpt-20.index"))
