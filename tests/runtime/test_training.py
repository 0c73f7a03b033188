"""train_and_evaluate on a finished toy run: what a re-run refuses, divergence, leftovers
of interrupted writes, a read-only workdir."""
import contextlib
import json
import os
import subprocess

import pytest

from msnvi_tf.runtime import console
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import copy_of


@pytest.fixture
def small_run(toy_run, tmp_path, no_export):
  """A copy of `toy_run` (trained 20 steps, checkpointed at 10 and 20, no export); the
  test's own runs do not export either."""
  del no_export  # used for its effect
  return copy_of(toy_run, tmp_path)


def checkpoint_files(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def test_incompatible_rerun_is_refused_and_keeps_checkpoints(small_run, toy_config):
  before = checkpoint_files(small_run)
  with pytest.raises(ValueError, match="objective: 'ind' -> 'poe'"):
    training.train_and_evaluate(toy_config.override(["objective=poe"]), small_run)
  assert checkpoint_files(small_run) == before


def test_loading_refuses_overrides_that_would_change_the_trained_model(small_run):
  model, config = workdir_lib.load_trained(small_run, eval_num_samples=3, eval_size=10)
  assert config.eval_num_samples == 3 and model.eval_num_samples == 3
  with pytest.raises(ValueError, match=r"Cannot override \['hidden'\]"):
    workdir_lib.load_trained(small_run, hidden=(8, 8))
  with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['num_sample'\]"):
    workdir_lib.load_trained(small_run, num_sample=4)


def test_diverging_loss_stops_training_and_keeps_last_checkpoint(small_run, toy_config):
  # A learning rate this large sends the weights to inf within a few steps.
  diverging = toy_config.override(["num_steps=200", "learning_rate=1e30"])
  with pytest.raises(FloatingPointError, match="diverged.*ckpt-20"):
    training.train_and_evaluate(diverging, small_run)
  assert os.path.exists(os.path.join(small_run, "checkpoints", "ckpt-20.index"))


def test_learning_rate_one_stops_on_a_finite_but_diverged_bound(small_run, toy_config):
  # lr = 1.0 keeps the numbers finite (a bound of about -1e6 nats) but useless.
  before = checkpoint_files(small_run)
  diverging = toy_config.override(["num_steps=200", "learning_rate=1.0"])
  with pytest.raises(FloatingPointError) as error:
    training.train_and_evaluate(diverging, small_run)
  message = str(error.value)
  assert "diverged at step 30: training bound" in message
  assert "ckpt-20, was kept" in message
  # b0 came back from the checkpoint: the step-0 eval of the first run.
  with open(os.path.join(small_run, "runs.jsonl")) as f:
    first_end = [json.loads(line) for line in f][1]
  assert first_end["status"] == "finished"
  assert "initial model's eval bound -" in message
  assert checkpoint_files(small_run) == before  # nothing saved after divergence


def test_divergence_rule_is_twice_the_initial_bound_by_default():
  check = lambda b, b0=-25., tol=1.: training.check_divergence(b, 7, "eval bound", b0, tol,
                                                                "ckpt-5")
  check(-50.)  # b0 - |b0|: the limit is allowed
  with pytest.raises(FloatingPointError, match=r"step 7: eval bound -50\.1 fell below -50"):
    check(-50.1)
  check(-1e9, tol=0.)  # tolerance 0: finite bounds always pass
  check(-1e9, b0=float("nan"))  # b0 unknown (a workdir begun before it was kept)
  with pytest.raises(FloatingPointError, match="eval bound nan"):
    check(float("nan"), b0=float("nan"))
  check(-1.5, b0=-0.5)  # |b0| < 1: 1 nat below is allowed
  with pytest.raises(FloatingPointError, match="No checkpoint was written yet"):
    training.check_divergence(-1.6, 3, "training bound", -0.5, 1., None)


def test_leftovers_of_interrupted_writes_are_removed_and_checkpoints_kept(small_run, toy_config):
  ckpt_dir = os.path.join(small_run, "checkpoints")
  leftovers = [os.path.join(ckpt_dir, "ckpt-30_temp", "part-00000-of-00001.index"),
               os.path.join(ckpt_dir, "ckpt-40.data-00000-of-00001"),
               os.path.join(small_run, "export", "40.tmp", "saved_model.pb"),
               os.path.join(small_run, "metrics.json.tmp")]
  for path in leftovers:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
  before = checkpoint_files(small_run)
  workdir_lib.clean_interrupted(small_run)
  assert not any(os.path.exists(p) for p in leftovers[:2] + leftovers[3:])
  assert not os.path.exists(os.path.dirname(leftovers[2]))
  assert checkpoint_files(small_run) == [f for f in before if f not in (
      "ckpt-30_temp", "ckpt-40.data-00000-of-00001")]
  assert "ckpt-20.index" in checkpoint_files(small_run)


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
    small_run, toy_config):
  workdir = small_run
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
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
