"""Test setup and the helpers the test files share.

TensorFlow quiet and on the CPU, the float32 policy and a fixed seed for every test;
configs of each data set small enough for unit tests; one toy run trained per test
worker (`toy_run`); the bin/ scripts in a subprocess (`run_bin`), or their `main` in
this process (`run_bin_in_process`: a process start, TensorFlow's import, saved); PNG
checks. The markers (`slow`, `smoke`) are declared in pytest.ini; files with slow tests
run first.
"""
import os
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # pylint: disable=g-import-not-at-top
from matplotlib import image as mimage  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

# One pytest-xdist worker per core (pytest.ini), so one thread per worker: TensorFlow's
# default of a thread per core in every worker, beside the bin/ subprocesses the tests
# start, oversubscribes the cores (an in-process training then takes up to 8x longer).
# One intra-op thread is also what bin/train picks on 2 cores, and it keeps the tests'
# numbers independent of the machine's core count.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# The longest files (minutes each on an idle 2-core machine, the rest of the suite's
# files under two), started first, one per worker: one of them started late would
# leave its worker running alone at the end.
LONGEST_FILES = ("runtime/test_resume.py", "runtime/test_distributed.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
  """`LONGEST_FILES`, then the other files with slow tests, then the others, each in
  its own order: with one file per worker at a time (`--dist loadfile
  --no-loadscope-reorder`, pytest.ini), the long files start first and the many short
  ones fill in at the end."""
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  longest = [os.path.join(os.path.dirname(__file__), *f.split("/")) for f in LONGEST_FILES]

  def rank(item):
    path = str(item.path)
    return (longest.index(path) if path in longest else len(longest),
            item.path not in slow_files)

  items.sort(key=rank)  # a stable sort


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
  keras.config.set_dtype_policy("float32")
  tf.random.set_seed(1234)
  yield
  keras.config.set_dtype_policy("float32")


@pytest.fixture
def keras_seed():
  """Python's, NumPy's and TensorFlow's global seeds at 0 (the MNIST tests' weights)."""
  keras.utils.set_random_seed(0)


def make_toy_config():
  """A toy config small enough for unit tests (also for module-scoped fixtures)."""
  import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config("toy").override([
      "num_steps=20", "steps_per_call=10", "log_every=10", "eval_every=20",
      "checkpoint_every=10", "train_size=512", "eval_size=64",
      "eval_batch_size=32", "export_num_samples=8"])


def make_mnist_config(variant, *overrides):
  """An MNIST config of `variant` on 64 training and 32 test images, K = 4."""
  import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config(variant).override([
      "train_size=64", "eval_size=32", "batch_size=16", "eval_batch_size=16",
      "num_samples=4", "eval_num_samples=4", *overrides])


def make_shapes_config(*overrides):
  """A shapes (CUB stand-in) config of 16x16 images: two pools down to 4x4, one
  upsampling to 8x8 + the stride-2 head; 8 training and 4 test examples."""
  import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config("shapes").override([
      "image_size=16", "encoder_channels=(4, 8)", "decoder_channels=(4,)",
      "decoder_base_channels=8", "encoder_dense=16", "latent_dim=4",
      "num_samples=2", "eval_num_samples=2", "batch_size=2", "eval_batch_size=2",
      "train_size=8", "eval_size=4", *overrides])


def shapes_batch(size=16, num=2, seed=0):
  """`num` generated shapes examples of `size` pixels: {"image", "mask"}, float32."""
  from msnvi_tf.data import shapes  # pylint: disable=g-import-not-at-top
  data = shapes.generate(num, seed, size)
  return {"image": tf.constant(data["image"], tf.float32) / 255.,
          "mask": tf.constant(data["mask"], tf.float32)}


def make_pendulum_config():
  """A pendulum config of 1000 training and 64 test frames, fast learning rate."""
  import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config("pendulum").override([
      "train_size=1000", "eval_size=64", "eval_batch_size=64", "batch_size=32",
      "learning_rate=0.003"])


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


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
  """`make_toy_config()` trained in-process, once per test worker: checkpoints at
  steps 10 and 20, no export. Tests read it; one that changes it works on
  `copy_of(toy_run, tmp_path)`."""
  from msnvi_tf.runtime import training  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("toy_run") / "toy")
  with pytest.MonkeyPatch.context() as patch:
    skip_export(patch)
    training.train_and_evaluate(make_toy_config(), workdir)
  return workdir


def copy_of(workdir, tmp_path, name="run"):
  """A copy of `workdir` at `tmp_path/name` (its path)."""
  copy = str(tmp_path / name)
  shutil.copytree(workdir, copy)
  return copy


def config_only_workdir(path, dataset):
  """A directory holding only a config.json of `dataset` (enough for the dispatch)."""
  import configs  # pylint: disable=g-import-not-at-top
  path.mkdir()
  config = configs.get_config("toy")
  config["dataset"] = dataset
  (path / "config.json").write_text(config.to_json())
  return str(path)


def run_bin(script, *args):
  """`bin/<script> args` in a subprocess from the repository (a CompletedProcess, text)."""
  return subprocess.run([sys.executable, os.path.join(REPO, "bin", script), *args],
                        capture_output=True, text=True, cwd=REPO, timeout=600)


_BIN_MODULES = {}


def _bin_module(script):
  """bin/<script> imported as a module, once per process, without its console setup's
  effects on this process (no stderr filter, excepthook or second `console` module)."""
  if script not in _BIN_MODULES:
    import importlib.machinery  # pylint: disable=g-import-not-at-top
    import importlib.util  # pylint: disable=g-import-not-at-top
    from msnvi_tf.runtime import console  # pylint: disable=g-import-not-at-top
    name = f"_bin_{script}"
    loader = importlib.machinery.SourceFileLoader(name, os.path.join(REPO, "bin", script))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv(console.VERBOSE_ENV, "1")  # console.setup: no filter on fd 2
      patch.setattr(sys, "excepthook", sys.excepthook)
      patch.setattr(sys, "path", list(sys.path))
      patch.setitem(sys.modules, console.__name__, console)  # restored after the import
      loader.exec_module(module)
    module.console = console  # the package's (the one tests patch)
    _BIN_MODULES[script] = module
  return _BIN_MODULES[script]


def run_bin_in_process(script, *args):
  """`bin/<script> args` run by its `main` in this process: `(exit status, stdout,
  stderr)` of what it printed. The exit status is what `console.exit_now` or absl
  was given; any other exception propagates (a subprocess would show a traceback).
  The console's part (the stderr filter, `os._exit`) is the subprocess tests'."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  module = _bin_module(script)
  ours, theirs = logging.getLogger("msnvi_tf"), logging.getLogger("tensorflow")
  saved = (list(ours.handlers), ours.level, ours.propagate, theirs.level)

  def exit_now(status):
    raise SystemExit(status)

  stdout, stderr = io.StringIO(), io.StringIO()
  flags.FLAGS.unparse_flags()
  try:
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(
        stdout), contextlib.redirect_stderr(stderr):
      patch.chdir(REPO)
      patch.setattr(module.console, "exit_now", exit_now)
      theirs.setLevel(logging.ERROR)  # as console.quiet does
      previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's
      try:
        module.main(module._parse_flags([f"bin/{script}", *args]))  # pylint: disable=protected-access
      finally:
        signal.signal(signal.SIGINT, previous)
    raise AssertionError(f"bin/{script} returned without exiting")
  except SystemExit as e:
    status = e.code
  finally:
    ours.handlers[:] = saved[0]
    ours.setLevel(saved[1])
    ours.propagate = saved[2]
    theirs.setLevel(saved[3])
    flags.FLAGS.unparse_flags()
  return status, stdout.getvalue(), stderr.getvalue()


def last_line(stderr):
  return stderr.strip().splitlines()[-1]


def assert_png(path):
  """The file is a PNG whose pixels are not all the same."""
  assert os.path.getsize(path) > 0, path
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE, path
  pixels = mimage.imread(path)
  assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100, pixels.shape
  assert np.var(pixels[..., :3]) > 1e-3, f"{path} is blank"
