"""The bin/ scripts' console in-process: which lines are TensorFlow's noise, absl's
verbosity, the relay, and the one-line messages and exit statuses of failures."""
import errno
import os
import sys
import threading
import time

import pytest
import tensorflow as tf

from msnvi_tf.runtime import console


def test_noise_is_cpp_log_lines_only():
  cpp = b"I0000 00:00:1796645930.607118   11772 cudart_stub.cc:31] Could not find cuda"
  assert console.is_noise(cpp)
  assert console.is_noise(b"E0000 00:00:1796645936.962599   11772 cuda_platform.cc:52] "
                          b"failed call to cuInit: INTERNAL")
  assert console.is_noise(b"W1207 12:24:36.307511   13045 device_compiler.h:208] x")
  assert console.is_noise(b"WARNING: All log messages before absl::InitializeLog() is "
                          b"called are written to STDERR")
  assert not console.is_noise(cpp.replace(b"I0000", b"F0000"))  # fatal: the user's cue
  assert not console.is_noise(b"W1207 12:19:08.465776 140262984973184 training.py:440] x")
  assert not console.is_noise(b"Traceback (most recent call last):")
  assert not console.is_noise(b"bin/train: I0000 00:00:1.0 1 a.cc:1] quoted")


@pytest.mark.parametrize("argv, expected", [
    ([], None), (["--verbosity=0"], 0), (["-v", "1"], 1), (["--verbosity", "-1"], -1),
    (["-v=2", "--verbosity=-2"], -2), (["--", "--verbosity=0"], None), (["-v=x"], 0),
    (["--verbose=1"], None)])
def test_verbosity_is_read_as_absl_reads_it(argv, expected):
  assert console.verbosity(["bin/train", *argv]) == expected


def test_relay_passes_lines_and_an_unfinished_line_after_a_pause():
  source, writer = os.pipe()
  reader, target = os.pipe()
  relay = threading.Thread(target=console._relay, args=(source, target, 0.05))  # pylint: disable=protected-access
  relay.start()
  os.write(writer, b"kept 1\nI0000 00:00:1.5 42 a.cc:1] dropped\nkept 2\nprompt: ")
  time.sleep(0.5)
  assert os.read(reader, 1000) == b"kept 1\nkept 2\nprompt: "
  os.write(writer, b"answer\nW0000 00:00:1.5 42 a.cc:1] dro")
  os.write(writer, b"pped\nlast, without newline")
  os.close(writer)
  relay.join(10)
  os.close(target)
  assert not relay.is_alive()
  assert os.read(reader, 1000) == b"answer\nlast, without newline"
  for fd in (source, reader):
    os.close(fd)


def test_machine_errors_name_the_file_what_to_do_and_the_exit_status():
  full = tf.errors.ResourceExhaustedError(None, None, (
      "{{function_node __wrapped__SaveV2_device_/job:localhost}} /w/checkpoints/ckpt-20_temp/"
      "part-0; No space left on device [Op:SaveV2]"))
  resume = "free space, then re-run the same command to resume."
  assert console.failure(full) == (
      f"/w/checkpoints/ckpt-20_temp/part-0: No space left on device; {resume}", 1)
  assert console.failure(OSError(errno.EDQUOT, "quota", "/w/.lock")) == (
      f"/w/.lock: Disk quota exceeded; {resume}", 1)
  read_only = tf.errors.PermissionDeniedError(None, None, (
      "/w/train/events.v2; Read-only file system\n\tCould not initialize events writer."))
  elsewhere = "pass another path (e.g. --workdir) on a writable disk."
  assert console.failure(read_only) == (f"/w/train/events.v2: Read-only file system; {elsewhere}", 2)
  assert console.failure(OSError(errno.EROFS, "ro", "/w")) == (
      f"/w: Read-only file system; {elsewhere}", 2)
  assert console.failure(PermissionError(errno.EACCES, "x", "/w/.lock")) == (
      "/w/.lock: Permission denied; pass another path (e.g. --workdir) or change its "
      "permissions.", 2)
  assert console.failure(NotADirectoryError(errno.ENOTDIR, "x", "/f/w")) == (
      "/f/w: Not a directory; a part of the path is a file; pass another path.", 2)
  oom = tf.errors.ResourceExhaustedError(None, None, (
      "{{function_node __inference_train_chunk_1}} OOM when allocating tensor with shape"
      "[524288,8,32]\n\t [[{{node x}}]] [Op:__inference_train_chunk_1]"))
  message, status = console.failure(oom)
  assert status == 1 and message.startswith(
      "out of memory (OOM when allocating tensor with shape[524288,8,32]); free memory, ")
  assert "; or lower eval_batch_size" in message and "\n" not in message
  assert console.failure(MemoryError())[1] == 1
  for other in (ValueError("x"), FileNotFoundError(errno.ENOENT, "x", "/x"),
                tf.errors.NotFoundError(None, None, "/x; No such file or directory")):
    assert console.failure(other) is None  # the caller's, or a traceback


def test_an_uncaught_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
  passed_on = []
  monkeypatch.setattr(sys, "excepthook", lambda kind, *_: passed_on.append(kind))
  console.interrupt_exits_130("bin/x")
  with pytest.raises(SystemExit) as exit_:
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
  assert exit_.value.code == 130
  assert capsys.readouterr().err == "bin/x: interrupted (SIGINT).\n"
  sys.excepthook(ValueError, ValueError("x"), None)
  assert passed_on == [ValueError]  # a traceback, as before
