"""The bin/ scripts' console: TensorFlow's log off it unless --verbosity=0; --help exits 0.

The subprocesses run without TF_CPP_MIN_LOG_LEVEL (conftest sets it for this process),
so the filter, not the variable, is what keeps TensorFlow's C++ lines away. A
--dataset_module file writes lines of each kind at import (before training starts).
"""
import os
import re
import subprocess
import sys

import pytest

from msnvi_tf.runtime import console

from conftest import REPO

pytestmark = pytest.mark.slow  # each test runs bin/ scripts in subprocesses

TOY = ["--num_steps=20", "--set", "steps_per_call=10", "--set", "log_every=10",
       "--set", "eval_every=10", "--set", "checkpoint_every=10", "--set", "train_size=256",
       "--set", "eval_size=64", "--set", "export_num_samples=4"]

# Imported by bin/train as --dataset_module: registers nothing (training stays on toy).
LINES_MODULE = '''
import logging, os, sys, warnings
import tensorflow as tf
os.write(2, b"I0000 00:00:1796645930.607118   11772 fake_noise.cc:31] C++ info: dropped\\n")
os.write(2, b"E0000 00:00:1796645936.962599   11772 fake_noise.cc:52] C++ error: dropped\\n")
tf.get_logger().info("tf python info: dropped")
tf.get_logger().warning("tf python warning: dropped")
logging.getLogger("msnvi_tf").warning("our warning: kept")
print("a stderr line: kept", file=sys.stderr)
warnings.warn("a Python warning: kept")
'''
CRASH_MODULE = '''
import os, sys
sys.stderr.write("before the abort: kept\\n")
os.write(2, b"F0000 00:00:1796645936.962599   11772 fake_fatal.cc:7] Check failed: kept\\n")
os.abort()
'''
RAISE_MODULE = 'raise RuntimeError("an uncaught error: kept")\n'

# What no default run may print (TensorFlow's and absl's log, C++ or Python).
NOISE = [r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\.(cc|cpp|h):\d+\]", r"absl::InitializeLog",
         r"cuInit", r"cuda drivers", r"cudart_stub", r"cpu_feature_guard",
         r"To enable the following instructions", r"Sharding callback",
         r"unsupported characters", r"Assets written", r"Writing fingerprint",
         r"^(INFO|WARNING):tensorflow:", r"retracing", r"dropped"]
# An absl-format Python log line (only ours may show).
ABSL_PY_LINE = r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\.py:\d+\] "


def _env():
  env = dict(os.environ)
  for name in ("TF_CPP_MIN_LOG_LEVEL", console.VERBOSE_ENV):
    env.pop(name, None)
  return env


def _start(script, *args):
  return subprocess.Popen([sys.executable, os.path.join(REPO, "bin", script), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=REPO, env=_env())


def _finish(process):
  stdout, stderr = process.communicate(timeout=600)
  return process.returncode, stdout, stderr


def _noise(text):
  lines = text.splitlines()
  return [l for l in lines if "kept" not in l and (
      any(re.search(p, l) for p in NOISE) or re.match(ABSL_PY_LINE, l))]


def _module(tmp, name, text):
  path = tmp / f"{name}.py"
  path.write_text(text)
  return f"--dataset_module={path}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The bin/ commands of the tests, started at once (each imports TensorFlow)."""
  tmp = tmp_path_factory.mktemp("console")
  lines = _module(tmp, "console_lines", LINES_MODULE)
  commands = {
      "train": ("train", lines, f"--workdir={tmp / 'toy'}", *TOY),
      # Stops after the module's import: a config error.
      "verbose": ("train", "--verbosity=0", lines, "--set", "num_sampels=3"),
      "bad_flag": ("train", "--num_steps=abc"),
      "crash": ("train", _module(tmp, "console_crash", CRASH_MODULE)),
      "raise": ("train", _module(tmp, "console_raise", RAISE_MODULE)),
  }
  started = {name: _start(*command) for name, command in commands.items()}
  return {name: _finish(process) for name, process in started.items()}


def test_train_prints_its_progress_and_not_tensorflows_log(runs):
  code, stdout, stderr = runs["train"]
  assert code == 0, stderr[-3000:]
  for expected in ("step 20/20", "Finished toy / L_ind: step 20", "Results in", "SavedModel:"):
    assert expected in stdout
  assert _noise(stdout + stderr) == []
  # Everything else on stderr passes: our logger's warning, prints, Python warnings.
  for kept in ("our warning: kept", "a stderr line: kept", "UserWarning: a Python warning: kept"):
    assert kept in stderr


def test_verbosity_0_shows_tensorflows_log_and_errors_stay_one_line(runs):
  code, stdout, stderr = runs["verbose"]
  assert code == 2 and stdout == ""
  assert stderr.splitlines()[-1].startswith("bin/train: Unknown config field 'num_sampels'")
  for shown in ("fake_noise.cc:31] C++ info: dropped", "fake_noise.cc:52] C++ error: dropped",
                "tf python info: dropped", "tf python warning: dropped", "our warning: kept"):
    assert shown in stderr
  # TensorFlow's own C++ log of its import (this machine's: CUDA lookups, CPU features).
  cpp = [l for l in stderr.splitlines() if re.match(NOISE[0], l) and "fake_" not in l]
  assert cpp, stderr[-3000:]


def test_a_bad_flag_value_is_still_absls_error(runs):
  code, stdout, stderr = runs["bad_flag"]
  assert code == 1 and stdout == ""
  assert stderr.splitlines() == [
      "FATAL Flags parsing error: flag --num_steps=abc: invalid literal for int() with base "
      "10: 'abc'", "Pass --helpshort or --helpfull to see help on flags."]


def test_an_abort_loses_nothing_written_before_it(runs):
  code, _, stderr = runs["crash"]
  assert code == -6, stderr[-3000:]  # SIGABRT
  lines = stderr.splitlines()
  assert "before the abort: kept" in lines
  assert any(l.endswith("fake_fatal.cc:7] Check failed: kept") for l in lines)
  assert _noise(stderr) == []


def test_an_uncaught_error_shows_its_traceback(runs):
  code, stdout, stderr = runs["raise"]
  assert code == 1 and stdout == ""
  lines = stderr.splitlines()
  assert lines[0] == "Traceback (most recent call last):", stderr[-3000:]
  assert lines[-1] == "RuntimeError: an uncaught error: kept"
  assert _noise(stderr) == []


@pytest.mark.parametrize("script, flag", [
    pytest.param("train", "--workdir:", marks=pytest.mark.smoke), ("evaluate", "--workdirs:"),
    ("plot", "--workdirs:"), ("reproduce", "--table:")])
def test_help_exits_0_with_the_flags(script, flag):
  code, stdout, stderr = _finish(_start(script, "--help"))
  assert code == 0, stderr[-3000:]
  assert stderr == ""
  assert f"bin/{script}:" in stdout and flag in stdout  # its own flags
  assert stdout.rstrip().endswith("Try --helpfull to get a list of all flags.")
