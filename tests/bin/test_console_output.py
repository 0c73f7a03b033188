"""The bin/ scripts' console: TensorFlow's log off it unless --verbosity=0; --help exits 0.

The subprocesses run without TF_CPP_MIN_LOG_LEVEL (conftest sets it for this process),
so the filter, not the variable, is what keeps TensorFlow's C++ lines away. A
--dataset_module file writes lines of each kind at import (before training starts).
A bin/train run that trains and exports, with that file, is tests/bin/test_train.py's
first run (its progress and nothing of TensorFlow's log on the console).
"""
import os
import re
import subprocess
import sys

import pytest

from msnvi_tf.runtime import console

from conftest import REPO, run_bin_in_process
from console_lines import LINES_MODULE, NOISE, env, module_flag, noise

pytestmark = pytest.mark.slow  # bin/ scripts in subprocesses

CRASH_MODULE = '''
import os, sys
sys.stderr.write("before the abort: kept\\n")
os.write(2, b"F0000 00:00:1796645936.962599   11772 fake_fatal.cc:7] Check failed: kept\\n")
os.abort()
'''
RAISE_MODULE = 'raise RuntimeError("an uncaught error: kept")\n'


def _start(script, *args):
  return subprocess.Popen([sys.executable, os.path.join(REPO, "bin", script), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=REPO, env=env())


def _finish(process):
  stdout, stderr = process.communicate(timeout=600)
  return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The bin/ commands of the tests, started at once (each imports TensorFlow)."""
  tmp = tmp_path_factory.mktemp("console")
  lines = module_flag(tmp, "console_lines", LINES_MODULE)
  commands = {
      # Stops after the module's import: a config error.
      "verbose": ("train", "--verbosity=0", lines, "--set", "num_sampels=3"),
      "crash": ("train", module_flag(tmp, "console_crash", CRASH_MODULE)),
      "raise": ("train", module_flag(tmp, "console_raise", RAISE_MODULE)),
  }
  started = {name: _start(*command) for name, command in commands.items()}
  return {name: _finish(process) for name, process in started.items()}


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


def test_a_bad_flag_value_is_still_absls_error():
  # bin/train's flag parsing in this process (its console setup leaves absl's error
  # alone); the filter passes these lines (TensorFlow's import log it drops: the
  # runs above).
  code, stdout, stderr = run_bin_in_process("train", "--num_steps=abc")
  assert code == 1 and stdout == ""
  assert stderr.splitlines() == [
      "FATAL Flags parsing error: flag --num_steps=abc: invalid literal for int() with base "
      "10: 'abc'", "Pass --helpshort or --helpfull to see help on flags."]
  assert not any(console.is_noise(line.encode()) for line in stderr.splitlines())


def test_an_abort_loses_nothing_written_before_it(runs):
  code, _, stderr = runs["crash"]
  assert code == -6, stderr[-3000:]  # SIGABRT
  lines = stderr.splitlines()
  assert "before the abort: kept" in lines
  assert any(l.endswith("fake_fatal.cc:7] Check failed: kept") for l in lines)
  assert noise(stderr) == []


def test_an_uncaught_error_shows_its_traceback(runs):
  code, stdout, stderr = runs["raise"]
  assert code == 1 and stdout == ""
  lines = stderr.splitlines()
  assert lines[0] == "Traceback (most recent call last):", stderr[-3000:]
  assert lines[-1] == "RuntimeError: an uncaught error: kept"
  assert noise(stderr) == []


@pytest.mark.parametrize("script, flag", [
    pytest.param("train", "--workdir:", marks=pytest.mark.smoke), ("evaluate", "--workdirs:"),
    ("plot", "--workdirs:"), ("reproduce", "--table:")])
def test_help_exits_0_with_the_flags(script, flag):
  code, stdout, stderr = _finish(_start(script, "--help"))
  assert code == 0, stderr[-3000:]
  assert stderr == ""
  assert f"bin/{script}:" in stdout and flag in stdout  # its own flags
  assert stdout.rstrip().endswith("Try --helpfull to get a list of all flags.")
