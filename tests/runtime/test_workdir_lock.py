"""One writer per workdir: a second run stops at once; a killed run leaves no stale lock."""
import os
import signal
import subprocess
import sys

import pytest

from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO, run_bin_in_process

# The first run's --dataset_module: it trains, then holds the workdir without using the
# CPU until it is killed.
PAUSE_AFTER_STEP_10 = '''
"""Training pauses once the progress of step 10 is out, at the next progress write."""
import time
from msnvi_tf.runtime import summaries
_train = summaries.RunSummaries.train
def train(self, scalars, step):
  _train(self, scalars, step)
  if step > 10:
    time.sleep(300)
summaries.RunSummaries.train = train
'''


def test_a_held_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.lock(workdir):
    with pytest.raises(workdir_lib.WorkdirBusy, match=rf"pid {os.getpid()} on "):
      with workdir_lib.lock(workdir):
        pass
    assert sorted(os.listdir(workdir)) == [".lock"]
  with workdir_lib.lock(workdir):  # released at the end of the first
    pass


@pytest.mark.slow
def test_a_second_bin_train_stops_at_once_and_a_killed_run_leaves_no_lock(tmp_path):
  workdir = str(tmp_path / "toy")
  (tmp_path / "pause.py").write_text(PAUSE_AFTER_STEP_10)
  train = [sys.executable, os.path.join(REPO, "bin", "train"), f"--workdir={workdir}",
           "--num_steps=1000000", "--set=train_size=256", "--set=eval_size=64",
           "--set=steps_per_call=10", "--set=log_every=10", "--set=eval_every=100000",
           "--set=checkpoint_every=100000"]
  first = subprocess.Popen(train + [f"--dataset_module={tmp_path / 'pause.py'}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, cwd=REPO)
  try:
    for line in first.stdout:  # until it trains
      if "step 10/" in line:
        break
    with open(os.path.join(workdir, "config.json")) as f:
      config = f.read()
    # The second run: bin/train's main in this process (second bin/train processes:
    # the chaos test of test_resume.py).
    status, _, stderr = run_bin_in_process("train", *train[2:-6], "--set=learning_rate=0.5")
    assert status == 2  # a user's input: another --workdir
    message = stderr.strip().splitlines()[-1]
    assert f"is being written by pid {first.pid} on " in message and "Traceback" not in (
        stderr)
    with open(os.path.join(workdir, "config.json")) as f:
      assert f.read() == config  # the second run wrote nothing
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # The kill released the lock: the next writer gets it at once (bin/train re-run after
  # kills, resuming to the uninterrupted weights: test_resume.py).
  with workdir_lib.lock(workdir):
    pass
