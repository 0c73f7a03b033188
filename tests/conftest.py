"""Test setup: quiet TensorFlow, CPU only, float32 policy unless a test sets one."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # pylint: disable=g-import-not-at-top
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
  keras.config.set_dtype_policy("float32")
  tf.random.set_seed(1234)
  yield
  keras.config.set_dtype_policy("float32")


def make_toy_config():
  """A toy config small enough for unit tests (also for module-scoped fixtures)."""
  import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config("toy").override([
      "num_steps=20", "steps_per_call=10", "log_every=10", "eval_every=20",
      "checkpoint_every=10", "train_size=512", "eval_size=64",
      "eval_batch_size=32", "export_num_samples=8"])


@pytest.fixture
def toy_config():
  """A toy config small enough for unit tests."""
  return make_toy_config()


def skip_export(monkeypatch):
  """train_and_evaluate without its SavedModel export (about half the time of a toy
  run): for runs whose export no test looks at (module fixtures pass a
  `pytest.MonkeyPatch.context()`)."""
  from msnvi_tf.runtime import export  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(export, "export", lambda *args, **kwargs: None)


@pytest.fixture
def no_export(monkeypatch):
  """For the test's train_and_evaluate runs: no SavedModel export."""
  skip_export(monkeypatch)
