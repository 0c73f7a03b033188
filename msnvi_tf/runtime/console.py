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
exit with status 0 instead of absl's 1, so that `bin/train --help && ...` works,
and an uncaught KeyboardInterrupt (Ctrl-C, e.g. while TensorFlow is imported)
print `bin/<script>: interrupted (SIGINT).` and exit with 130 instead of a
traceback.

Errors: a script's errors are one line, `bin/<script>: <message>`. `failure`
words the errors of the machine rather than of the input (a disk full or
read-only, memory exhausted) and gives their exit status (docs/failures.md):

  2    the command must change: a flag, the config, the data, the workdir
  1    the machine must change (free disk space or memory), then the same
       command resumes; also a run that failed (diverged, a checkpoint that
       does not fit the model) and a bug (with its traceback)
  130  interrupted by SIGINT (Ctrl-C); 143 by SIGTERM

This module imports only the standard library and absl: `msnvi_tf`'s `__init__`
imports TensorFlow, so the `bin/` scripts load this file by its path.
"""
import atexit
import errno
import logging
import os
import re
import select
import signal
import subprocess
import sys
from typing import Optional, Tuple

__all__ = ["setup", "quiet", "help_exits_zero", "interrupt_exits_130", "failure", "exit_now",
           "is_noise", "verbosity"]

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
  """What a `bin/` script calls first: `quiet`, `help_exits_zero`, `interrupt_exits_130`."""
  argv = sys.argv if argv is None else argv
  quiet(argv)
  help_exits_zero()
  interrupt_exits_130(f"bin/{os.path.basename(argv[0])}")


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


def exit_now(status: int):
  """Ends the process with `status` once its output is out, without the interpreter's teardown.

  TensorFlow can deadlock while the interpreter tears down a live tf.data
  iterator (seen: a bin/train that had printed its summary sleeping for ever in
  `IteratorResource`'s destructor). A `bin/` script that is done has written,
  flushed and closed everything (checkpoints, events, JSON, the export), so it
  leaves with `os._exit` after the stderr filter has passed the last lines on.
  """
  _stop_filter()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (AttributeError, OSError, ValueError):
      pass
  os._exit(status)  # pylint: disable=protected-access


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


def interrupt_exits_130(script: str):
  """An uncaught KeyboardInterrupt prints one line and exits with 130 (128 + SIGINT).

  Installed as `sys.excepthook`, so it covers a Ctrl-C anywhere a script does
  not catch it, even while its imports run; other exceptions go to the previous
  hook (a traceback).
  """
  previous = sys.excepthook

  def hook(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
      print(f"{script}: interrupted (SIGINT).", file=sys.stderr, flush=True)
      sys.exit(128 + signal.SIGINT)
    previous(kind, value, traceback)

  sys.excepthook = hook


_RESUME = "then re-run the same command to resume"
_PERMISSION = "pass another path (e.g. --workdir) or change its permissions"
# errno -> (exit status, what to do) of the file errors `failure` words.
_FILE_ERRORS = {
    errno.ENOSPC: (1, f"free space, {_RESUME}"),
    errno.EDQUOT: (1, f"free space, {_RESUME}"),
    errno.EIO: (1, f"check the disk, {_RESUME}"),
    errno.EROFS: (2, "pass another path (e.g. --workdir) on a writable disk"),
    errno.EACCES: (2, _PERMISSION),
    errno.EPERM: (2, _PERMISSION),
    errno.ENOTDIR: (2, "a part of the path is a file; pass another path"),
}


def failure(error: BaseException) -> Optional[Tuple[str, int]]:
  """`(one-line message, exit status)` of an error of the machine; None for any other.

  The machine's errors: a file that cannot be read or written (disk full, quota,
  I/O error, read-only file system, no permission, a file where a directory
  should be), as an `OSError` or as a TensorFlow error whose message names the
  file ("<path>; No space left on device"), and memory exhausted
  (`MemoryError`, TensorFlow's OOM). The message names the file and what to do;
  the status is 1 when the same command resumes once the machine is fixed
  (space, memory), 2 when the command must change (a path it cannot write).
  """
  tf = sys.modules.get("tensorflow")  # no TensorFlow error without TensorFlow
  if tf is not None and isinstance(error, tf.errors.OpError):
    for code, (status, todo) in _FILE_ERRORS.items():
      match = re.search(rf"(\S+); {re.escape(os.strerror(code))}", error.message)
      if match:
        return f"{match.group(1)}: {os.strerror(code)}; {todo}.", status
    if isinstance(error, tf.errors.ResourceExhaustedError):
      return _out_of_memory(re.sub(r"\{\{.*?\}\}|\[Op:.*", "", error.message).strip())
  elif isinstance(error, OSError) and error.errno in _FILE_ERRORS:
    status, todo = _FILE_ERRORS[error.errno]
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{os.strerror(error.errno)}; {todo}.", status
  elif isinstance(error, MemoryError):
    return _out_of_memory("MemoryError")
  return None


def _out_of_memory(what: str) -> Tuple[str, int]:
  """The message of memory exhausted: what ran out (first line), what to do."""
  first = (what.splitlines() or [""])[0]
  return (f"out of memory ({first}); free memory, {_RESUME}; or lower eval_batch_size "
          "(a resume may change it) or batch_size / num_samples (in a new --workdir).", 1)


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
