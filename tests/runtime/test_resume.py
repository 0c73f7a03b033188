"""Exact resume: a killed run, re-run with the same command, ends as if never stopped."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import summaries
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO, copy_of, make_toy_config, skip_export

# A toy run short enough to kill a few times (a few seconds of training).
RUN = ["--dataset=toy", "--num_steps=3000", "--seed=7", "--set=steps_per_call=100",
       "--set=log_every=500", "--set=eval_every=1000", "--set=checkpoint_every=500",
       "--set=train_size=2000", "--set=eval_size=200", "--set=export_num_samples=8"]

# Runs bin/train with a fault injected: "checkpoint:N" dies right after the N-th
# checkpoint was written and recorded, its data file cut in half (a kill while
# writing); "export" dies after the SavedModel was written, before it is renamed.
# "no-export" is no fault: the run skips the export (for a reference run).
FAULTY_TRAIN = """
import glob, os, runpy, signal, sys
fault, argv = sys.argv[1], sys.argv[2:]
sys.argv = argv
import tensorflow as tf

def die():
  os.kill(os.getpid(), signal.SIGKILL)

if fault.startswith("checkpoint:"):
  target, calls = int(fault.split(":")[1]), []
  write = tf.train.Checkpoint._write
  def write_then_die(self, prefix, options=None):
    path = write(self, prefix, options=options)
    calls.append(path)
    if len(calls) == target:
      for data in glob.glob(path + ".data-*"):
        with open(data, "r+b") as f:
          f.truncate(os.path.getsize(data) // 2)
      die()
    return path
  tf.train.Checkpoint._write = write_then_die
elif fault == "no-export":
  import msnvi_tf.runtime.export
  msnvi_tf.runtime.export.export = lambda *args, **kwargs: None
elif fault == "export":
  save = tf.saved_model.save
  def save_then_die(*args, **kwargs):
    save(*args, **kwargs)
    die()
  tf.saved_model.save = save_then_die
runpy.run_path(argv[0], run_name="__main__")
"""


def _train_command(workdir, fault=None):
  train = os.path.join(REPO, "bin", "train")
  args = [train, f"--workdir={workdir}", *RUN]
  if fault is None:
    return [sys.executable, *args]
  return [sys.executable, "-c", FAULTY_TRAIN, fault, *args]


def _final_state(workdir):
  """Every tensor of the latest checkpoint (weights, Adam state, random streams, metrics)."""
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
  # How many checkpoints were written, and the object graph, are not training state.
  names = [n for n in reader.get_variable_to_shape_map()
           if not n.startswith(("save_counter/", "_CHECKPOINTABLE_OBJECT_GRAPH"))]
  assert any(n.startswith("model/") for n in names) and any(
      n.startswith("optimizer/") for n in names), names
  return {n: reader.get_tensor(n) for n in names}


def _assert_same_state(workdir, reference):
  got, expected = _final_state(workdir), _final_state(reference)
  assert sorted(got) == sorted(expected)
  for name in sorted(expected):  # model/... (the weights) first
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def _killed_after(command, line, delay, signum=signal.SIGKILL, stderr=subprocess.DEVNULL):
  """Runs `command`; sends it `signum` `delay` seconds after it prints a line starting
  with `line`. Returns its exit code and the lines it printed afterwards."""
  proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr,
                          text=True)
  for text in proc.stdout:
    if text.split(" ", 1)[-1].startswith(line):
      time.sleep(delay)
      proc.send_signal(signum)
      break
  after = proc.stdout.read()
  proc.stdout.close()
  return proc.wait(), after


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.json")) as f:
    return json.load(f)


def _stopped_by_sigterm_with_a_checkpoint(workdir, tmp_path):
  """SIGTERM just after the progress line of step 1000 (resumed from 500): bin/train
  checkpoints at the step it reached, says so, and exits with 128 + SIGTERM."""
  with open(tmp_path / "sigterm.err", "w") as err:
    code, after = _killed_after(_train_command(workdir), "step 1000/", 0.1, signal.SIGTERM,
                                err)
  message = (tmp_path / "sigterm.err").read_text().strip().splitlines()[-1]
  assert code == 128 + signal.SIGTERM, (code, after, message)
  assert "SIGTERM received: checkpointing after the current steps" in after
  step = int(message.split("stopped at step ")[1].split(" ")[0])
  assert 1000 <= step < 3000 and "Re-run the same command to resume." in message
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  assert latest.endswith(f"ckpt-{step}"), (latest, message)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run of `RUN` (no export) that every killed run must end as."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  done = subprocess.run(_train_command(workdir, "no-export"), cwd=REPO, capture_output=True,
                        text=True)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  return workdir


@pytest.mark.slow
def test_killed_runs_resume_to_the_weights_and_metrics_of_an_uninterrupted_run(
    reference, tmp_path):
  workdir = str(tmp_path / "killed")
  # Killed while writing its second checkpoint (ckpt-1000, left truncated),
  # stopped by SIGTERM (it checkpoints where it stands, off the checkpoint grid),
  # and killed while writing the export. (SIGKILLs at random moments, during
  # training, evaluation or checkpointing, are the chaos test's below.)
  for fault in ["checkpoint:2", "SIGTERM", "export"]:
    if fault == "SIGTERM":
      _stopped_by_sigterm_with_a_checkpoint(workdir, tmp_path)
      continue
    done = subprocess.run(_train_command(workdir, fault), cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, (fault, done.returncode)
  # Killed before the rename: no version is served half-written.
  assert not [d for d in os.listdir(os.path.join(workdir, "export")) if d.isdigit()]
  final = subprocess.run(_train_command(workdir), cwd=REPO, capture_output=True,
                         text=True)
  assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
  assert _metrics(workdir) == _metrics(reference)
  _assert_same_state(workdir, reference)
  served = sorted(int(d) for d in os.listdir(os.path.join(workdir, "export")) if d.isdigit())
  assert served == [3000]
  assert os.path.exists(os.path.join(workdir, "export", "3000", "saved_model.pb"))


# 60 steps, evaluated at 30 and 60: the runs that are stopped and resumed midway.
MIDWAY = ["num_steps=60", "checkpoint_every=20", "eval_every=30", "log_every=10"]


def _train_without_export(config, workdir):
  with pytest.MonkeyPatch.context() as patch:
    skip_export(patch)
    return training.train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def hybrid_uninterrupted(tmp_path_factory):
  """`(results, workdir)` of L_hybrid trained `MIDWAY` without a stop (no export): what
  its runs stopped midway must end as."""
  workdir = str(tmp_path_factory.mktemp("hybrid") / "once")
  return _train_without_export(make_toy_config().override(["objective=hybrid", *MIDWAY]),
                               workdir), workdir


# Every objective draws its samples from one sampler (objectives.importance_bounds):
# L_hybrid draws both the experts' samples (those of L_ind and L_MoE) and the PoE's
# (L_PoE), the IWAE its single encoder's; the other three draw subsets of L_hybrid's.
@pytest.mark.slow
@pytest.mark.usefixtures("no_export")
@pytest.mark.parametrize("objective", ["hybrid", "iwae"])
def test_every_sampling_path_resumed_midway_ends_with_the_uninterrupted_weights(
    objective, toy_config, tmp_path, request):
  config = toy_config.override([f"objective={objective}", *MIDWAY])
  if objective == "hybrid":
    expected, once = request.getfixturevalue("hybrid_uninterrupted")
  else:
    once = str(tmp_path / "once")
    expected = training.train_and_evaluate(config, once)
  training.train_and_evaluate(config.override(["num_steps=40"]), str(tmp_path / "twice"))
  got = training.train_and_evaluate(config, str(tmp_path / "twice"))
  assert got == expected
  _assert_same_state(str(tmp_path / "twice"), once)


@pytest.mark.slow
@pytest.mark.usefixtures("no_export")
def test_ctrl_c_checkpoints_the_step_reached_and_the_rerun_ends_as_uninterrupted(
    hybrid_uninterrupted, toy_config, tmp_path, monkeypatch):
  # Checkpoints every 50 steps: the one of step 20 is off the grid. (How often a run
  # checkpoints leaves its training untouched.)
  expected, once = hybrid_uninterrupted
  config = toy_config.override(["objective=hybrid", *MIDWAY, "checkpoint_every=50"])
  handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
  train = summaries.RunSummaries.train

  def write_then_interrupt(self, scalars, step):
    train(self, scalars, step)
    if step == 20:  # Ctrl-C while the progress of step 20 is written.
      signal.raise_signal(signal.SIGINT)

  monkeypatch.setattr(summaries.RunSummaries, "train", write_then_interrupt)
  workdir = str(tmp_path / "twice")
  with pytest.raises(training.Interrupted, match="SIGINT received: stopped at step 20 "):
    training.train_and_evaluate(config, workdir)
  assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-20")
  monkeypatch.setattr(summaries.RunSummaries, "train", train)
  assert training.train_and_evaluate(config, workdir) == expected
  _assert_same_state(workdir, once)


def _copy_of_toy_run(toy_run, tmp_path):
  """A copy of `toy_run` (ckpt-10 and ckpt-20) and its checkpoints' index files; tests
  damage the copy."""
  workdir = copy_of(toy_run, tmp_path)
  return workdir, sorted(glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")))


@pytest.mark.usefixtures("no_export")
def test_truncated_newest_checkpoint_falls_back_to_the_previous_with_a_warning(
    toy_run, toy_config, tmp_path, caplog):
  workdir, indexes = _copy_of_toy_run(toy_run, tmp_path)
  assert [os.path.basename(p) for p in indexes] == ["ckpt-10.index", "ckpt-20.index"]
  newest = indexes[-1][:-len(".index")]
  for data in glob.glob(newest + ".data-*"):
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 3)
  with caplog.at_level("WARNING", logger="msnvi_tf"):
    results = training.train_and_evaluate(toy_config, workdir)  # 20 steps
  assert "ckpt-20 is damaged" in caplog.text and "Resuming from" in caplog.text
  assert "ckpt-10" in caplog.text and results["step"] == 20
  # Retrained from step 10: the rewritten ckpt-20 is readable again.
  checkpoint = tf.train.load_checkpoint(newest)
  assert checkpoint.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 20


@pytest.mark.usefixtures("no_export")
def test_missing_newest_checkpoint_files_fall_back_and_keep_the_others(
    toy_run, toy_config, tmp_path, caplog):
  workdir, indexes = _copy_of_toy_run(toy_run, tmp_path)
  for path in glob.glob(indexes[-1][:-len(".index")] + ".data-*"):
    os.remove(path)
  with caplog.at_level("WARNING", logger="msnvi_tf"):
    training.train_and_evaluate(toy_config.override(["num_steps=30"]), workdir)
  assert "ckpt-20 is damaged" in caplog.text
  assert "Resumed from" in caplog.text or "Resuming from" in caplog.text
  assert os.path.exists(indexes[0])  # ckpt-10 is still there


def test_checkpoint_of_another_model_is_refused_and_left_in_place(
    toy_run, toy_config, tmp_path):
  workdir, indexes = _copy_of_toy_run(toy_run, tmp_path)
  # Same config.json, other weights' shapes: as if the code had changed.
  other = toy_config.override(["hidden=(8, 8)"])
  model = optimizers.compile_model(architectures.build_model(other), other)
  checkpoint = workdir_lib.checkpoint(model, tf.Variable(0, dtype=tf.int64))  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match="could not be restored.*Nothing was deleted"):
    workdir_lib.restore(checkpoint, workdir)  # pylint: disable=protected-access
  assert sorted(glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index"))) == indexes


@pytest.mark.slow
def test_random_kills_and_concurrent_starts_end_with_the_weights_of_one_run(
    reference, tmp_path):
  """Chaos, bounded: SIGKILL at random moments while a second bin/train tries the workdir."""
  workdir = str(tmp_path / "chaos")
  rng = np.random.default_rng(1)
  kills = 0
  for _ in range(4):
    first = subprocess.Popen(_train_command(workdir, "no-export"), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(1., 4.))  # the second starts while the first starts or trains
    second = subprocess.run(_train_command(workdir, "no-export"), cwd=REPO,
                            capture_output=True, text=True)
    if first.poll() is None:  # the first held the lock all along: the second wrote nothing
      assert second.returncode == 2, second.stderr[-2000:]
      assert "is being written by pid" in second.stderr
      time.sleep(rng.uniform(0., 2.))
      first.kill()
    code = first.wait()
    assert code in (0, -signal.SIGKILL), code
    kills += code == -signal.SIGKILL
  assert kills >= 2  # the seed's delays kill it mid-run at least twice (else retune them)
  final = subprocess.run(_train_command(workdir, "no-export"), cwd=REPO, capture_output=True,
                         text=True)
  assert final.returncode == 0, final.stderr[-2000:]
  assert _metrics(workdir) == _metrics(reference)
  _assert_same_state(workdir, reference)
