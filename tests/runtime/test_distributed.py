"""tf.distribute: MirroredStrategy on two logical CPUs and two local workers."""
import json
import os
import socket
import subprocess
import sys
import types

import pytest
import tensorflow as tf

import configs
from msnvi_tf.runtime import hardware
from msnvi_tf.runtime import training

from conftest import REPO, skip_export

OVERRIDES = ["num_steps=20", "steps_per_call=10", "log_every=10", "eval_every=20",
             "checkpoint_every=20", "train_size=512", "eval_size=256",
             "eval_batch_size=64", "eval_num_samples=64", "batch_size=32",
             "learning_rate=0.001", "export_num_samples=8"]

RUN = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path.insert(0, {repo!r})
import tensorflow as tf
logical = {logical}
if logical > 1:
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * logical)
import configs
from msnvi_tf.runtime import export as export_lib
from msnvi_tf.runtime import training
training.log_to_stdout()
if not {export}:  # Runs that do not check the SavedModel skip it (seconds a run).
  export_lib.export = lambda *args, **kwargs: None
config = configs.get_config("toy").override({overrides!r} + ["distribute={distribute}"])
results = training.train_and_evaluate(config, {workdir!r})
print("RESULTS " + json.dumps(results))
"""


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _start(workdir, distribute, logical=1, tf_config=None, extra=(), export=False):
  env = dict(os.environ)
  env.pop("TF_CONFIG", None)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  code = RUN.format(repo=REPO, logical=logical, overrides=OVERRIDES + list(extra),
                    distribute=distribute, workdir=workdir, export=export)
  return subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _results(proc, log=None):
  out, err = proc.communicate(timeout=400)
  assert proc.returncode == 0, err[-3000:]
  if log is not None:
    log.append(out)
  lines = [l for l in out.splitlines() if l.startswith("RESULTS ")]
  return json.loads(lines[-1][len("RESULTS "):])


def _two_workers(workdir, extra=(), logs=None, export=False):
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  workers = [_start(workdir, "multi_worker", extra=extra, export=export,
                    tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}})
             for i in range(2)]
  return [_results(w, logs) for w in workers]


@pytest.fixture(scope="module")
def mirrored_process(tmp_path_factory):
  """The mirrored run (two logical CPUs: a process of its own), started first."""
  proc = _start(str(tmp_path_factory.mktemp("mirrored")), "mirrored", logical=2)
  yield proc
  if proc.poll() is None:  # A test failed before collecting it.
    proc.kill()
    proc.communicate()


@pytest.fixture(scope="module")
def single(mirrored_process, tmp_path_factory):
  """The single-device run's results, trained in this process (one core) while the
  mirrored run trains beside it (the other); no export."""
  del mirrored_process  # started first
  config = configs.get_config("toy").override(OVERRIDES + ["distribute=none"])
  with pytest.MonkeyPatch.context() as patch:
    skip_export(patch)
    return training.train_and_evaluate(config, str(tmp_path_factory.mktemp("single")))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  """An uninterrupted two-worker run: `(workdir, chief's results, other's results)`."""
  workdir = str(tmp_path_factory.mktemp("pair") / "run")
  return (workdir, *_two_workers(workdir, export=True))


@pytest.mark.slow
def test_two_workers_stay_in_sync_and_match_one_worker(single, pair):
  workdir, chief, other = pair
  # Same weights on both workers after 20 synchronous steps.
  assert chief["param_norm"] == pytest.approx(other["param_norm"], rel=1e-6)
  assert chief["step"] == other["step"] == 20
  # Same global batch and initial weights as the single-worker run: the bounds
  # differ only by Monte-Carlo noise (K=64 on 256 examples).
  for key in ("bound", "ind", "moe", "poe"):
    assert chief[key] == pytest.approx(single[key], abs=0.05 * abs(single[key]))
  assert chief["param_norm"] == pytest.approx(single["param_norm"], rel=0.01)
  # Only the chief writes the workdir; the other worker's scratch dir is gone.
  assert os.path.exists(os.path.join(workdir, "export", "20", "saved_model.pb"))
  assert not [p for p in os.listdir(workdir) if p.startswith("worker_tmp")]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_single_device(
    single, mirrored_process):
  mirrored = _results(mirrored_process)
  for key in ("bound", "ind", "moe", "poe"):
    assert mirrored[key] == pytest.approx(single[key], abs=0.05 * abs(single[key]))
  assert mirrored["param_norm"] == pytest.approx(single["param_norm"], rel=0.01)


@pytest.mark.slow
def test_pair_restarted_after_one_worker_was_killed_ends_as_the_uninterrupted_pair(
    pair, tmp_path):
  # The uninterrupted pair is the one above; checkpointing and logging every 5
  # steps (runtime settings that leave the training untouched) lets the pair
  # be killed midway with a checkpoint behind it.
  _, expected, _ = pair
  extra = ["checkpoint_every=5", "log_every=5"]
  workdir = str(tmp_path / "killed")
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  workers = [_start(workdir, "multi_worker", extra=extra,
                    tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}})
             for i in range(2)]
  for line in workers[0].stdout:  # The chief's progress.
    if "step 10/20" in line:
      break
  workers[1].kill()  # One worker dies; the chief cannot go on without it.
  workers[1].wait()
  workers[0].kill()
  workers[0].communicate()
  assert os.listdir(os.path.join(workdir, "checkpoints"))

  # Both restart from the chief's checkpoint and end in sync, as if never stopped.
  logs = []
  chief, other = _two_workers(workdir, extra, logs)
  assert all("Resumed from" in out for out in logs)
  assert chief == expected and other["param_norm"] == expected["param_norm"]


def test_num_workers_counts_chief_and_workers_of_the_cluster_only():
  # Checked without starting a cluster: the stop-on-SIGTERM handling is
  # installed only when this is 1.

  def strategy(cluster):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type="worker", task_id=0)
    return types.SimpleNamespace(cluster_resolver=resolver)

  assert hardware.num_workers(tf.distribute.get_strategy()) == 1
  assert hardware.num_workers(strategy({})) == 1
  assert hardware.num_workers(strategy({"worker": ["a:1"]})) == 1
  assert hardware.num_workers(strategy({"worker": ["a:1", "b:2"]})) == 2
  assert hardware.num_workers(strategy({"chief": ["c:0"], "worker": ["a:1", "b:2"],
                                        "ps": ["p:3"]})) == 3
