"""What a `bin/` script prints: its progress, results and errors, not TensorFlow's log.

Every `bin/` script calls `setup(sys.argv)` first, before TensorFlow is imported.
Unless `--verbosity` (absl's flag, also `-v`) is 0 or more, it

  * passes file descriptor 2 (stderr) through a filter that drops the C++ log lines
    TensorFlow / XLA / absl write there (`I0000 ... cpu_feature_guard.cc:...]`, the
    CUDA-driver lookups and `failed call to cuInit` of a CPU-only machine, absl's
    `WARNING: All log messages before absl::InitializeLog() ...`) and passes every
    other line (tracebacks, the scripts' one-line errors, Python warnings, a C++
    `F...` fatal line) unchanged. TF_CPP_MIN_LOG_LEVEL no longer silences these:
    they go through absl's C++ logging, which writes to fd 2 before
    absl::InitializeLog. The filter is a small child process (`python -I -S` of this
    file), so nothing written before a crash, abort or SIGKILL is lost; it ignores
    SIGINT / SIGTERM and ends when the last writer of the pipe has closed it;
  * sets the `tensorflow` Python logger to ERROR (SavedModel export's "Assets
    written", "Writing fingerprint", "unsupported characters ... renamed",
    "Sharding callback duration", tf.function retracing warnings) and absl's
    verbosity back to WARNING, which absl's app.run raises to INFO when the flag is
    not given. The `msnvi_tf` logger keeps showing INFO: its progress lines (on
    stdout with `training.log_to_stdout`) and warnings are untouched.

With `--verbosity=0` or more nothing is filtered (the environment variable
MSNVI_TF_VERBOSE=1 says so to the scripts a `bin/` script starts, e.g.
bin/reproduce's bin/train). Where fd 2 cannot be redirected (no fd 2, not POSIX)
the log is not filtered.

`setup` also makes absl's `--help` (`--helpshort`, `--helpfull`, `--helpxml`)
exit with status 0 instead of absl's 1, so that `bin/train --help && ...` works.

This module imports only the standard library and absl: `msnvi_tf`'s `__init__`
imports TensorFlow, so the `bin/` scripts load this file by its path.
"""
import atexit
import logging
import os
import re
import select
import signal
import subprocess
import sys

__all__ = ["setup", "quiet", "help_exits_zero", "is_noise", "verbosity"]

VERBOSE_ENV = "MSNVI_TF_VERBOSE"

# A C++ log line (absl / TSL format: severity, date, time, thread id, file.cc:line]);
# absl's Python lines have the same prefix with a .py file, and are left to the
# Python loggers' levels.
_CPP_LINE = rb"[IWE]\d{4} [\d:.]+ +\d+ [^\s\]]+\.(?:cc|cpp|cxx|c|h|hpp):\d+\]"
_NOISE = re.compile(
    rb"(?:" + _CPP_LINE + rb"|WARNING: All log messages before absl::InitializeLog\(\) "
    rb"is called are written to STDERR"
    # The second line of cpu_feature_guard.cc's message (with TF_CPP_MIN_LOG_LEVEL=0).
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    rb"compiler flags\.$)")

_state = {}  # filter process and the original stderr, while filtering


def is_noise(line: bytes) -> bool:
  """Whether one line of stderr (bytes, without its newline) is dropped."""
  return _NOISE.match(line) is not None


def verbosity(argv):
  """The value of the last --verbosity / -v on the command line; None without one
  (0 if it is not an integer: absl will complain about it, show everything)."""
  value = None
  args = iter(argv[1:])
  for arg in args:
    if arg == "--":
      break
    match = re.fullmatch(r"--?(?:verbosity|v)(?:=(.*))?", arg)
    if match:
      text = match.group(1) if match.group(1) is not None else next(args, "")
      try:
        value = int(text)
      except ValueError:
        value = 0
  return value


def setup(argv=None):
  """What a `bin/` script calls first: `quiet(argv)` and `help_exits_zero()`."""
  quiet(sys.argv if argv is None else argv)
  help_exits_zero()


def quiet(argv):
  """Filters TensorFlow's C++ and Python log off the console (see the module doc),
  unless `--verbosity` >= 0 is on the command line or MSNVI_TF_VERBOSE=1 is set."""
  level = verbosity(argv)
  if (level is not None and level >= 0) or os.environ.get(VERBOSE_ENV) == "1":
    os.environ[VERBOSE_ENV] = "1"  # and in the bin/ scripts this one starts
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer lines to filter
  logging.getLogger("tensorflow").setLevel(logging.ERROR)
  _filter_stderr()
  from absl import app  # pylint: disable=g-import-not-at-top
  app.call_after_init(_after_flags)


def _after_flags():
  """After absl parsed the flags (and set verbosity to INFO when not given)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  flag = flags.FLAGS["verbosity"]
  if flag.present and flag.value >= 0:  # e.g. from a --flagfile: show everything
    _stop_filter()
    logging.getLogger("tensorflow").setLevel(logging.NOTSET)
    os.environ[VERBOSE_ENV] = "1"
    return
  ours = logging.getLogger("msnvi_tf")
  if ours.level == logging.NOTSET:
    ours.setLevel(logging.INFO)  # what it was under absl's INFO
  if not flag.present:
    absl_logging.set_verbosity(absl_logging.WARNING)


def _filter_stderr():
  """Points fd 2 at a pipe into the filter process, whose stderr is the old fd 2."""
  if os.name != "posix" or _state or not sys.executable:
    return
  try:
    os.fstat(2)
    for stream in (sys.stdout, sys.stderr):
      if stream is not None:
        stream.flush()
    process = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
  except (OSError, ValueError):
    return
  try:
    original = os.dup(2)
    os.dup2(process.stdin.fileno(), 2)  # inheritable: children write through it too
  except OSError:
    process.stdin.close()
    process.wait()
    return
  process.stdin.close()
  _state.update(process=process, original=original)
  atexit.register(_stop_filter)  # before TensorFlow's: runs after them


def _stop_filter(timeout=5.):
  """Points fd 2 back at the original stderr; waits for the filter to pass on the rest."""
  if not _state:
    return
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (AttributeError, OSError, ValueError):
      pass
  process, original = _state.pop("process"), _state.pop("original")
  os.dup2(original, 2)  # closes our end of the pipe: the filter sees EOF
  os.close(original)
  try:
    process.wait(timeout)  # longer only while a child process still writes into it
  except subprocess.TimeoutExpired:
    pass


def help_exits_zero():
  """absl's help flags, exiting with status 0 after printing the help (absl: 1)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  app.define_help_flags()
  for name, cls in (("help", app.HelpFlag), ("helpshort", app.HelpshortFlag),
                    ("helpfull", app.HelpfullFlag), ("helpxml", app.HelpXMLFlag)):
    if not isinstance(flags.FLAGS[name], _ExitsZero):
      flag = type(cls.__name__, (_ExitsZero, cls), {})()
      flag.allow_override = True  # replaces absl's
      flags.DEFINE_flag(flag, module_name="absl.app")


class _ExitsZero:
  """Mixin of a help flag: absl exits with status 1 after the help, this with 0."""

  def parse(self, arg):
    try:
      super().parse(arg)
    except SystemExit as e:  # absl's only exit here: after printing the help
      raise SystemExit(0) from e


def _relay(source=0, target=2, wait=0.1):
  """The filter process: copies `source` to `target` line by line without the noise.

  A line without its newline yet is passed on after `wait` seconds without more
  data (a prompt), unless it looks like the start of a log line.
  """
  pending = b""
  broken = False

  def write(data):
    nonlocal broken
    while data and not broken:
      try:
        data = data[os.write(target, data):]
      except InterruptedError:
        continue
      except OSError:
        broken = True  # keep reading so that the writers never block

  while True:
    if pending and not select.select([source], [], [], wait)[0]:
      if not is_noise(pending):
        write(pending)
        pending = b""
      else:
        select.select([source], [], [])
    try:
      chunk = os.read(source, 1 << 16)
    except InterruptedError:
      continue
    if not chunk:
      break
    *lines, pending = (pending + chunk).split(b"\n")
    write(b"".join(line + b"\n" for line in lines if not is_noise(line)))
  if pending and not is_noise(pending):
    write(pending)


if __name__ == "__main__":
  for _signal in (signal.SIGINT, signal.SIGTERM):  # the parent reports them: keep relaying
    signal.signal(_signal, signal.SIG_IGN)
  _relay()
