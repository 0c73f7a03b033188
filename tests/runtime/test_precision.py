"""Mixed precision and XLA: choice per machine, and every policy trains to close bounds."""
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf import data
from msnvi_tf.data import mnist
from msnvi_tf.runtime import hardware
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO, make_mnist_config


def test_auto_precision_follows_the_hardware():
  assert hardware.default_precision(gpus=["gpu0"], flags=frozenset())[0] == "mixed_float16"
  amx = frozenset({"amx_bf16", "amx_tile", "avx512_bf16"})
  assert hardware.default_precision(gpus=[], flags=amx)[0] == "mixed_bfloat16"
  no_amx = frozenset({"avx512_bf16", "avx2"})
  name, reason = hardware.default_precision(gpus=[], flags=no_amx, bf16_speedup=lambda: 0.8)
  assert name == "float32" and "no AMX" in reason and "0.80x" in reason
  name, reason = hardware.default_precision(gpus=[], flags=no_amx, bf16_speedup=lambda: 1.6)
  assert name == "mixed_bfloat16" and "1.60x" in reason
  assert hardware.default_precision(gpus=[], flags=frozenset())[0] == "float32"
  with pytest.raises(ValueError, match="Unknown precision 'half'"):
    hardware.resolve("half")


def test_bf16_probe_measures_a_plausible_ratio_once_per_process():
  ratio = hardware.bf16_matmul_speedup()
  assert 0.05 < ratio < 20.
  assert hardware.bf16_matmul_speedup() == ratio  # cached, not re-measured


def test_auto_xla_only_on_a_single_gpu_replica():
  one, two = types.SimpleNamespace(num_replicas_in_sync=1), types.SimpleNamespace(
      num_replicas_in_sync=2)
  assert hardware.resolve_jit("auto", one, gpus=["gpu0"])
  assert not hardware.resolve_jit("auto", one, gpus=[])  # oneDNN beats XLA:CPU
  assert not hardware.resolve_jit("auto", two, gpus=["gpu0", "gpu1"])
  assert hardware.resolve_jit("on", two, gpus=[])
  assert not hardware.resolve_jit(False, one, gpus=["gpu0"])
  with pytest.raises(ValueError, match="jit_compile must be"):
    hardware.resolve_jit("sometimes", one)


_THREADS_SCRIPT = """
import tensorflow as tf
from msnvi_tf.runtime import hardware
print(hardware.configure_threads("auto", gpus=[], cores=8))  # many cores: TF's default
print(hardware.configure_threads("auto", gpus=["gpu0"], cores=2))  # a GPU: TF's default
print(hardware.configure_threads("auto", gpus=[], cores=2, xla=True))  # XLA needs them
print(hardware.configure_threads("auto", gpus=[], cores=2))  # 2 CPU cores: one thread
print(tf.config.threading.get_intra_op_parallelism_threads())
tf.constant(1.) + 1.  # TF has started
print(hardware.configure_threads(2))  # too late: logged, kept
"""


@pytest.mark.slow
def test_auto_threads_use_one_intra_op_thread_on_two_cpu_cores_only():
  env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}
  out = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], cwd=REPO, env=env,
                       capture_output=True, text=True, check=True)
  assert out.stdout.split("\n")[:6] == ["TF default"] * 3 + ["1", "1", "1"]
  assert "intra-op threads stay at 1 (wanted 2)" in out.stderr
  with pytest.raises(ValueError, match="intra_op_threads must be 'auto' or an integer"):
    hardware.configure_threads("many")


POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


@pytest.mark.slow
def test_every_policy_trains_a_few_steps_to_finite_bounds_and_exports(
    toy_run, toy_config, tmp_path):
  # float32: toy_run (toy_config, whose precision is float32, trained 20 steps).
  with open(os.path.join(toy_run, "config.json")) as f:
    assert json.load(f)["precision"] == "float32"
  with open(os.path.join(toy_run, "metrics.json")) as f:
    results = {"float32": json.load(f)}
  for policy in POLICIES[1:]:
    config = toy_config.override([f"precision={policy}", "num_steps=20"])
    results[policy] = training.train_and_evaluate(config, str(tmp_path / policy))
    assert os.path.exists(tmp_path / policy / "export" / "20" / "saved_model.pb"), policy
  for policy, result in results.items():
    assert result["step"] == 20, policy
    assert all(np.isfinite(result[k]) for k in ("bound", "ind", "moe", "poe")), policy


def test_same_weights_give_close_bounds_under_every_policy(toy_run, toy_config):
  # toy_run: toy_config (float32) trained 20 steps.
  config = toy_config.override(["eval_size=256", "eval_num_samples=32"])
  _, eval_ds = data.make_datasets(config)
  results = {}
  for policy in POLICIES:
    model, _ = workdir_lib.load_trained(toy_run, precision=policy, eval_size=256,
                                        eval_num_samples=32)
    assert model.eval_num_samples == 32
    assert model.encoders["x"].compute_dtype == policy.replace("mixed_", "")
    results[policy] = training.evaluate_bounds(model, eval_ds)
  for policy, result in results.items():
    for key in ("ind", "moe", "poe"):
      # Same weights and latent noise: only the networks' rounding differs
      # (bfloat16 keeps 8 mantissa bits, float16 11); log-probabilities and
      # log-sum-exp are float32 under every policy.
      assert result[key] == pytest.approx(results["float32"][key], rel=0.02), (
          policy, key)


@pytest.mark.slow
@pytest.mark.usefixtures("keras_seed")
def test_gpu_setting_mixed_float16_with_xla_trains_like_float32_on_cpu():
  # The configuration "auto" picks on a GPU, run here on the CPU.
  config = make_mnist_config("mnist_tb", "objective=hybrid")
  batch = next(iter(mnist.make_datasets(config)[0]))
  first_loss = {}
  for policy, jit in (("float32", False), ("mixed_float16", True)):
    keras.utils.set_random_seed(0)
    with hardware.policy(policy):
      model = architectures.build_model(config)
      model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [v.numpy().copy() for v in model.trainable_variables]
    step = tf.function(model.train_step, jit_compile=jit)
    losses = [float(step(batch)["loss"]) for _ in range(10)]
    assert np.all(np.isfinite(losses)), policy
    assert any(np.any(b != v.numpy()) for b, v in zip(before, model.trainable_variables))
    first_loss[policy] = losses[0]
  # Same weights and noise: float16 networks round, the objectives are float32.
  assert first_loss["mixed_float16"] == pytest.approx(first_loss["float32"], rel=0.01)
