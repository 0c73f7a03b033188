"""MNIST-QU / -NO sensor health (`experiments.mnist.health`): corruptions and the report."""
import os

import numpy as np
import pytest

import configs
from msnvi_tf.experiments import dispatch
from msnvi_tf.experiments.mnist import health as mnist_health
from msnvi_tf.runtime import training


@pytest.mark.parametrize("kind", mnist_health.CORRUPTIONS)
def test_mnist_corruptions_are_deterministic_binary_and_change_the_source(kind):
  rng = np.random.default_rng(0)
  values = (rng.random((50, 196)) < 0.2).astype(np.float32)
  labels = np.arange(50) % 10
  a = mnist_health.corrupt(values, kind, 3, labels)
  b = mnist_health.corrupt(values, kind, 3, labels)
  np.testing.assert_array_equal(a, b)
  assert a.shape == values.shape and set(np.unique(a)) <= {0., 1.}
  assert np.any(a != values)
  images, out = values.reshape(50, 14, 14), a.reshape(50, 14, 14)
  if kind == "shift":
    np.testing.assert_array_equal(out[:, :, 3:], images[:, :, :11])
  elif kind == "rotate":
    np.testing.assert_array_equal(out, np.rot90(images, 1, axes=(1, 2)))
  elif kind == "swap":  # another example's source, with a different label
    rows = [np.flatnonzero((values == row).all(1)) for row in a]
    assert all(len(r) and np.all(labels[r] != labels[i]) for i, r in enumerate(rows))


def test_mnist_corrupt_rejects_bad_input():
  with pytest.raises(ValueError, match="Unknown corruption"):
    mnist_health.corrupt(np.zeros((2, 4)), "melt", 0)
  with pytest.raises(ValueError, match="square"):
    mnist_health.corrupt(np.zeros((2, 5)), "blank", 0)
  with pytest.raises(ValueError, match="labels"):
    mnist_health.corrupt(np.zeros((2, 4)), "swap", 0)


@pytest.mark.slow
@pytest.mark.usefixtures("no_export")
def test_mnist_sensor_health_report_runs_on_a_tiny_trained_model(tmp_path):
  workdir = str(tmp_path / "qu")
  config = configs.get_config("mnist_qu").override([
      "train_size=256", "eval_size=256", "batch_size=32", "eval_batch_size=128",
      "num_samples=2", "eval_num_samples=2", "hidden=[16]", "latent_dim=4",
      "num_steps=20", "steps_per_call=10", "log_every=10", "eval_every=20",
      "checkpoint_every=20", "export_num_samples=2"])
  training.train_and_evaluate(config, workdir)
  # What bin/evaluate --sensor_health runs: the Table 1 grid, then the report.
  paths = dispatch.evaluate([workdir], str(tmp_path / "out"), sensor_health=True,
                            faults=["swap", "blank"], num_samples=2, eval_size=1000, large_k=0)
  assert sorted(os.path.relpath(p, tmp_path / "out") for p in paths) == [
      "large_k.csv", "large_k_proposals.csv", "results.json", "sensor_health/results.md",
      "sensor_health/roc.png", "table1.csv", "table1.md"]
  assert "MNIST-QU" in (tmp_path / "out" / "table1.md").read_text()
  text = (tmp_path / "out" / "sensor_health" / "results.md").read_text()
  assert "test images 0-499" in text and "| swap |" in text and "| blank |" in text
  assert "500 images" in text
  # bin/evaluate --sensor_health --faults=melt: refused before anything is evaluated.
  with pytest.raises(ValueError) as error:
    dispatch.evaluate([workdir], str(tmp_path / "refused"), sensor_health=True,
                      faults=["melt"])
  assert str(error.value) == (
      f"faults: choose from {list(mnist_health.CORRUPTIONS)}; got ['melt'].")
  assert not (tmp_path / "refused").exists()
