"""bin/train's errors: one line naming the file or flag and what to do (docs/failures.md).

Exit status 2 when the command must change (a flag, a config file, a workdir), 1 when
the machine must (a full disk), 130 after Ctrl-C; no checkpoint or export is lost and
nothing half-written is kept. The bin/train commands of `runs`, started together, check
what bin/train prints and how it exits, with faults injected by the `--dataset_module`
files below; the words themselves are tested in-process (tests/runtime/test_config.py,
test_console.py, test_export.py, test_training.py).
"""
import os
import signal
import subprocess
import sys

import pytest

import configs
from msnvi_tf.runtime import training

from conftest import REPO, run_bin

pytestmark = pytest.mark.slow  # each test runs bin/ scripts in subprocesses

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


def test_unknown_dataset_and_objective_are_usage_errors(tmp_path):
  bad_dataset = run_bin("train", "--dataset=nope", f"--workdir={tmp_path}/a")
  assert bad_dataset.returncode != 0
  assert "Unknown dataset 'nope'" in bad_dataset.stderr
  bad_objective = run_bin("train", "--objective=elbo", f"--workdir={tmp_path}/b")
  assert bad_objective.returncode != 0
  assert "Unknown objective 'elbo'" in bad_objective.stderr
  bad_override = run_bin("train", "--set=num_sampels=3", f"--workdir={tmp_path}/c")
  assert "Unknown config field 'num_sampels'" in bad_override.stderr


def test_missing_data_dir_is_a_clear_error_naming_it(tmp_path):
  missing = str(tmp_path / "no_birds_here")
  result = run_bin("train", "--dataset=cub", f"--data_dir={missing}",
                   f"--workdir={tmp_path}/run")
  assert result.returncode != 0
  assert missing in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args,field", [
    (["--num_steps=-5"], "num_steps"),
    (["--num_steps=99999999999999999999"], "num_steps"),
    (["--set=learning_rate=nan"], "learning_rate"),
    (["--dataset=mnist_tb", "--set=eval_size=20000"], "eval_size"),
    # A config file (config.load_file) and its --config.<field> overrides (= --set).
    (["--config=configs/mnist.py:mnist_qu", "--config.eval_size=20000"], "eval_size"),
])
def test_train_refuses_bad_values_in_one_line_without_creating_the_workdir(
    tmp_path, args, field):
  workdir = tmp_path / "run"
  result = run_bin("train", f"--workdir={workdir}", *args)
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith(f"bin/train: {field} must be "), result.stderr
  assert "Traceback" not in result.stderr
  assert result.stdout == ""
  assert not workdir.exists()


def test_train_refuses_a_config_file_together_with_a_dataset(tmp_path):
  result = run_bin("train", f"--workdir={tmp_path / 'run'}", "--config=configs/toy.py",
                   "--dataset=mnist_tb")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "bin/train: Give --config or --dataset / --variant, not both.")
