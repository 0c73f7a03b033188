"""What a bin/ script may and may not print (test helper of tests/bin).

A `--dataset_module` file (`LINES_MODULE`) writes lines of each kind at import, before
training starts; `noise` finds the lines no default run may print (TensorFlow's and
absl's log, C++ or Python). The bin/ scripts run in `env()`: without
TF_CPP_MIN_LOG_LEVEL (conftest sets it for the tests' process), so the console's
filter, not the variable, is what keeps TensorFlow's C++ lines away.
"""
import os
import re

from msnvi_tf.runtime import console

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
# What `LINES_MODULE` writes that a default run must show (on stderr).
KEPT = ("our warning: kept", "a stderr line: kept", "UserWarning: a Python warning: kept")

# What no default run may print (TensorFlow's and absl's log, C++ or Python).
NOISE = [r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\.(cc|cpp|h):\d+\]", r"absl::InitializeLog",
         r"cuInit", r"cuda drivers", r"cudart_stub", r"cpu_feature_guard",
         r"To enable the following instructions", r"Sharding callback",
         r"unsupported characters", r"Assets written", r"Writing fingerprint",
         r"^(INFO|WARNING):tensorflow:", r"retracing", r"dropped"]
# An absl-format Python log line (only ours may show).
ABSL_PY_LINE = r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\.py:\d+\] "


def env():
  """The environment of a bin/ script started from a shell: no TF_CPP_MIN_LOG_LEVEL."""
  environ = dict(os.environ)
  for name in ("TF_CPP_MIN_LOG_LEVEL", console.VERBOSE_ENV):
    environ.pop(name, None)
  return environ


def noise(text):
  """The lines of `text` no default run may print."""
  lines = text.splitlines()
  return [l for l in lines if "kept" not in l and (
      any(re.search(p, l) for p in NOISE) or re.match(ABSL_PY_LINE, l))]


def module_flag(tmp, name, text):
  """`--dataset_module=<tmp/name.py>` of a file holding `text`."""
  path = tmp / f"{name}.py"
  path.write_text(text)
  return f"--dataset_module={path}"
