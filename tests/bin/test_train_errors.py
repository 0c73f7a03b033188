"""bin/train's errors: one line naming the file or flag and what to do (docs/failures.md).

Exit status 2 when the command must change (a flag, a config file, a workdir), 1 when
the machine must (a full disk), 130 after Ctrl-C; no checkpoint or export is lost and
nothing half-written is kept. One bin/train process, stopped by a real Ctrl-C while it
starts, checks what reaches the console and the exit status; the other cases run
bin/train's `main` in this process (`run_bin_in_process`), with the faults injected
here, and check its exit status and what it printed. The words themselves are also
tested in-process (tests/runtime/test_config.py, test_console.py, test_export.py,
test_training.py); the console's filter and exits, tests/bin/test_console_output.py.
"""
import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import REPO, run_bin_in_process

pytestmark = pytest.mark.slow  # bin/train runs, in a subprocess and in-process

OVERRIDES = ["num_steps=20", "steps_per_call=10", "log_every=10", "eval_every=10",
             "checkpoint_every=10", "train_size=256", "eval_size=64", "export_num_samples=4"]

# A fault, as a --dataset_module file (bin/train imports it before it starts).
PAUSE_AT_START_UP = '''
"""Start-up pauses while the data set is loaded, until the test's SIGINT."""
import time
from msnvi_tf import data
def make_datasets(*args, **kwargs):
  print("PAUSED", flush=True)
  time.sleep(300)
data.make_datasets = make_datasets
'''


def one_line(stderr):
  """The only line of `stderr` (asserted)."""
  lines = stderr.splitlines()
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def train(workdir, *args):
  """bin/train's main in-process on the toy config of `OVERRIDES`: (status, stdout, stderr)."""
  return run_bin_in_process("train", f"--workdir={workdir}",
                            *(f"--set={o}" for o in OVERRIDES), *args)


def test_ctrl_c_at_start_up_exits_130_in_one_line_writing_no_config_or_checkpoint(tmp_path):
  fault = tmp_path / "fault_start_up.py"
  fault.write_text(PAUSE_AT_START_UP)
  workdir = str(tmp_path / "start_up")
  process = subprocess.Popen(
      [sys.executable, os.path.join(REPO, "bin", "train"), f"--workdir={workdir}",
       f"--dataset_module={fault}", *(f"--set={o}" for o in OVERRIDES)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
  printed = ""
  for line in process.stdout:
    printed += line
    if line.startswith("PAUSED"):
      process.send_signal(signal.SIGINT)
      break
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 130, stderr[-3000:]
  assert "PAUSED" in printed + stdout
  assert one_line(stderr) == (
      "bin/train: interrupted (SIGINT) before training or while exporting; nothing is left "
      "half-written: re-run the same command to resume.")
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_config_file_and_workdir_errors_exit_2_in_one_line(tmp_path):
  workdir = str(tmp_path / "config")
  status, stdout, stderr = run_bin_in_process(
      "train", f"--workdir={workdir}", f"--config={tmp_path / 'missing.py'}")
  assert status == 2 and stdout == ""
  assert one_line(stderr) == (
      f"bin/train: --config={tmp_path}/missing.py: no such file ({tmp_path}/missing.py).")
  assert not os.path.exists(workdir)
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  status, stdout, stderr = run_bin_in_process("train", f"--workdir={a_file}")
  assert status == 2 and stdout == ""
  assert one_line(stderr) == (
      f"bin/train: --workdir {a_file} is a file, not a directory; pass another --workdir.")


def test_a_full_disk_exits_1_then_ctrl_c_in_the_export_exits_130_keeping_both_runs_work(
    tmp_path, monkeypatch):
  """A full disk at the checkpoint of step 20 (exit 1, ckpt-10 kept); the re-run, with
  the disk freed, resumes and trains to step 20, and Ctrl-C while it exports (exit 130)
  leaves its checkpoint and no half-written export."""
  workdir = str(tmp_path / "run")
  checkpoints = os.path.join(workdir, "checkpoints")
  save = tf.train.CheckpointManager.save

  def disk_full_at_step_20(self, checkpoint_number=None, **kwargs):  # as TensorFlow says it
    if checkpoint_number == 20:
      raise tf.errors.ResourceExhaustedError(None, None, (
          f"{self.directory}/ckpt-20_temp/part-00000-of-00001.data-00000-of-00001; "
          "No space left on device [Op:SaveV2]"))
    return save(self, checkpoint_number, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(tf.train.CheckpointManager, "save", disk_full_at_step_20)
    status, _, stderr = train(workdir)
  assert status == 1, stderr[-3000:]
  assert one_line(stderr) == (
      f"bin/train: {checkpoints}/ckpt-20_temp/part-00000-of-00001.data-00000-of-00001: No "
      "space left on device; free space, then re-run the same command to resume. The "
      f"newest checkpoint, {checkpoints}/ckpt-10, was kept.")
  assert os.path.exists(os.path.join(checkpoints, "ckpt-10.index"))
  assert not os.path.exists(os.path.join(checkpoints, "ckpt-20.index"))

  # The disk freed: the same command resumes from ckpt-10 and trains to step 20; Ctrl-C
  # once the export's SavedModel is written aside, before it is renamed.
  saved_model_save = tf.saved_model.save

  def save_then_ctrl_c(*args, **kwargs):
    saved_model_save(*args, **kwargs)
    signal.raise_signal(signal.SIGINT)

  monkeypatch.setattr(tf.saved_model, "save", save_then_ctrl_c)
  status, stdout, stderr = train(workdir)
  assert status == 130, stderr[-3000:]
  assert "Resumed from" in stdout and "at step 10" in stdout
  assert one_line(stderr).startswith("bin/train: interrupted (SIGINT) ")
  assert os.listdir(os.path.join(workdir, "export")) == []  # neither 20/ nor 20.tmp/
  assert os.path.exists(os.path.join(checkpoints, "ckpt-20.index"))


def test_unknown_dataset_and_objective_are_usage_errors(tmp_path):
  status, _, stderr = run_bin_in_process("train", "--dataset=nope", f"--workdir={tmp_path}/a")
  assert status != 0
  assert "Unknown dataset 'nope'" in stderr
  status, _, stderr = run_bin_in_process("train", "--objective=elbo",
                                         f"--workdir={tmp_path}/b")
  assert status != 0
  assert "objective must be one of 'hybrid', 'ind', 'iwae', 'moe', 'poe', got 'elbo'" in stderr
  _, _, stderr = run_bin_in_process("train", "--set=num_sampels=3", f"--workdir={tmp_path}/c")
  assert "Unknown config field 'num_sampels'" in stderr


def test_missing_data_dir_is_a_clear_error_naming_it(tmp_path):
  missing = str(tmp_path / "no_birds_here")
  status, _, stderr = run_bin_in_process("train", "--dataset=cub", f"--data_dir={missing}",
                                         f"--workdir={tmp_path}/run")
  assert status != 0
  assert missing in stderr and "Traceback" not in stderr


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
  status, stdout, stderr = run_bin_in_process("train", f"--workdir={workdir}", *args)
  assert status == 2, stderr
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert lines[-1].startswith(f"bin/train: {field} must be "), stderr
  assert "Traceback" not in stderr
  assert stdout == ""
  assert not workdir.exists()


def test_train_refuses_a_config_file_together_with_a_dataset(tmp_path):
  status, _, stderr = run_bin_in_process("train", f"--workdir={tmp_path / 'run'}",
                                         "--config=configs/toy.py", "--dataset=mnist_tb")
  assert status == 2
  assert stderr.strip().splitlines()[-1] == (
      "bin/train: Give --config or --dataset / --variant, not both.")
