"""A data set registered from a file outside the package trains, evaluates and exports.

tests/rotated_mnist.py (the README's walkthrough) registers "mnist_rot": an MNIST
digit and its 90° rotation, through MNIST's pipeline with a view function and
`architectures.dense_model`. Nothing in msnvi_tf names it. A workdir's config
names that module, but evaluating or loading the workdir imports it only when
the user names it or trusts the workdir.
"""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf import registry
from msnvi_tf.experiments import dispatch
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO, last_line, run_bin

pytestmark = pytest.mark.slow  # each test runs bin/ scripts in subprocesses

PLUGIN = os.path.join("tests", "rotated_mnist.py")
TINY = ["--num_steps=20", "--set=train_size=256", "--set=eval_size=64",
        "--set=batch_size=32", "--set=eval_batch_size=32", "--set=steps_per_call=10",
        "--set=log_every=10", "--set=eval_every=20", "--set=checkpoint_every=20",
        "--set=export_num_samples=4", "--set=hidden=(32,)", "--set=latent_dim=4",
        "--set=num_samples=2", "--set=eval_num_samples=2"]


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
  """A workdir of mnist_rot trained 20 steps through bin/train."""
  workdir = str(tmp_path_factory.mktemp("plugin") / "mnist_rot")
  proc = run_bin("train", "--dataset=mnist_rot",
                 f"--dataset_module={PLUGIN}", f"--workdir={workdir}", *TINY)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_bin_train_trains_a_dataset_registered_outside_the_package(plugin_run):
  with open(os.path.join(plugin_run, "config.json")) as f:
    config = json.load(f)
  assert config["dataset"] == "mnist_rot"
  assert config["dataset_module"] == os.path.join(REPO, PLUGIN)  # absolute: any cwd works
  with open(os.path.join(plugin_run, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["step"] == 20
  assert all(math.isfinite(metrics[k]) and metrics[k] < 0. for k in ("ind", "moe", "poe"))


def test_bin_evaluate_imports_the_plugin_the_workdir_names_only_when_trusted(
    plugin_run, tmp_path):
  proc = run_bin("evaluate", f"--workdirs={plugin_run}",
                 f"--output_dir={tmp_path}")
  assert proc.returncode == 2 and last_line(proc.stderr) == (
      f"bin/evaluate: {plugin_run} asks to import {os.path.join(REPO, PLUGIN)} (its config's "
      "dataset_module), which runs its code; if you trust it, re-run with --trust_workdir or "
      f"--dataset_module={os.path.join(REPO, PLUGIN)} (in Python: trust_workdir=True).")
  proc = run_bin("evaluate", f"--workdirs={plugin_run}", "--trust_workdir",
                 f"--output_dir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "bounds.json") as f:
    (result,) = json.load(f)
  assert result["dataset"] == "mnist_rot" and result["step"] == 20
  assert all(math.isfinite(result[k]) and result[k] < 0. for k in ("ind", "moe", "poe"))


def test_bin_plot_imports_the_plugin_the_user_names(plugin_run, tmp_path):
  proc = run_bin("plot", f"--workdirs={plugin_run}", f"--dataset_module={PLUGIN}",
                 "--curves", f"--output_dir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == [str(tmp_path / "learning_curves.png")]


# A module a workdir someone sent you names in its config: it leaves a mark when run.
PLANTED = """
import pathlib
pathlib.Path(__file__).with_name("it_ran").write_text("the workdir's module ran")
"""


def test_a_module_an_untrusted_workdir_names_is_never_run(tmp_path):
  planted = tmp_path / "extras.py"
  planted.write_text(PLANTED)
  workdir = tmp_path / "sent"
  workdir.mkdir()
  config = configs.get_config("toy")
  config.update(dataset="planted", dataset_module=str(planted))
  (workdir / "config.json").write_text(config.to_json())
  message = (f"{workdir} asks to import {planted} (its config's dataset_module), which runs "
             "its code; if you trust it, re-run with --trust_workdir or "
             f"--dataset_module={planted} (in Python: trust_workdir=True).")
  for load in (workdir_lib.load_config, workdir_lib.load_trained):
    with pytest.raises(ValueError) as error:
      load(str(workdir))
    assert str(error.value) == message
  for script in ("evaluate", "plot"):
    proc = run_bin(script, f"--workdirs={workdir}", f"--output_dir={tmp_path}")
    assert proc.returncode == 2 and last_line(proc.stderr) == f"bin/{script}: {message}"
  assert not (tmp_path / "it_ran").exists()
  # Trusted, it runs (and registers nothing here, which the dispatch then says).
  with pytest.raises(ValueError, match="holds a 'planted' model; known data sets"):
    dispatch.evaluate([str(workdir)], str(tmp_path / "out"), trust_workdir=True)
  assert (tmp_path / "it_ran").exists()


def test_export_of_the_plugin_serves_both_views(plugin_run):
  loaded = tf.saved_model.load(os.path.join(plugin_run, "export", "20"))
  images = np.zeros([3, 28, 28], np.float32)
  images[:, 5:20, 12:15] = 1.  # a vertical bar; rotated, a horizontal one
  module = registry.import_dataset_module(os.path.join(REPO, PLUGIN))
  views = module.digit_and_rotation(tf.constant(images))
  np.testing.assert_array_equal(views["rotated"].numpy().reshape(3, 28, 28),
                                np.rot90(images, axes=(1, 2)))
  encoded = loaded.signatures["encode"](**views)
  assert set(encoded) == {"digit_loc", "digit_scale", "rotated_loc", "rotated_scale"}
  assert encoded["digit_loc"].shape == (3, 4)
  predicted = loaded.signatures["predict"](present=tf.ones([3, 2]), **views)
  assert predicted["digit"].shape == (3, 784)
  assert np.all((predicted["digit"].numpy() >= 0.) & (predicted["digit"].numpy() <= 1.))
