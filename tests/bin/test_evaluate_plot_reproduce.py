"""bin/evaluate, bin/plot and bin/reproduce in a subprocess: outputs and one-line errors."""
import json
import math
import os

import pytest

from msnvi_tf.experiments import dispatch

from conftest import assert_png, config_only_workdir, last_line, run_bin

pytestmark = pytest.mark.slow  # each test runs bin/ scripts in subprocesses


def test_bin_evaluate_writes_the_bounds_of_a_toy_run_into_its_evaluation_dir(toy_run):
  proc = run_bin("evaluate", f"--workdirs={toy_run}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = [os.path.join(toy_run, "evaluation", name) for name in ("bounds.md", "bounds.json")]
  assert proc.stdout.split()[-2:] == expected
  with open(expected[1]) as f:
    (result,) = json.load(f)
  assert result["dataset"] == "toy" and result["objective"] == "ind"
  assert result["workdir"] == "toy" and result["step"] == 20  # the checkpoint evaluated
  assert all(math.isfinite(result[k]) and result[k] < 0. for k in ("ind", "moe", "poe"))
  with open(expected[0]) as f:
    assert f"| toy | ind | 20 | 8 | {-result['ind']:.2f} |" in f.read()
  assert "Loaded toy at step 20 (checkpoint ckpt-20)." in proc.stdout


def test_bin_plot_draws_figs_2_and_6_and_the_learning_curves(toy_run, tmp_path):
  proc = run_bin("plot", f"--workdirs={toy_run}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = [os.path.join(toy_run, "figures", name)
              for name in ("fig2_beliefs.png", "fig6_sir.png")]
  assert proc.stdout.split() == expected
  for path in expected:
    assert_png(path)
  proc = run_bin("plot", f"--workdirs=a={toy_run},b={toy_run}", "--curves",
                 f"--output_dir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == [str(tmp_path / "learning_curves.png")]
  assert_png(proc.stdout.split()[0])


def test_missing_unknown_and_mixed_workdirs_are_one_line_errors(toy_run, tmp_path):
  nope = config_only_workdir(tmp_path / "nope", "nope")
  pendulum = config_only_workdir(tmp_path / "pendulum", "pendulum")
  for script, flag, message in (
      ("evaluate", f"--workdirs={tmp_path / 'missing'}", "no such workdir"),
      ("plot", f"--workdirs={nope}", "holds a 'nope' model; known data sets: ['cub', ")):
    proc = run_bin(script, flag, f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2, (script, flag)
    assert last_line(proc.stderr).startswith(f"bin/{script}: ")
    assert message in last_line(proc.stderr)
  # The same code path in both scripts; in-process to save the start-up time.
  for fn in (dispatch.evaluate, dispatch.plot):
    with pytest.raises(ValueError, match=r"^The workdirs hold different data sets: .*"
                       r"\(toy\), .*\(pendulum\); (evaluate|plot) one data set per call.$"):
      fn([toy_run, pendulum], str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_learning_curves_of_a_workdir_without_eval_events_are_an_error(toy_run, tmp_path):
  empty = config_only_workdir(tmp_path / "new", "toy")  # stopped before its first eval
  proc = run_bin("plot", f"--workdirs={toy_run},{empty}", "--curves",
                 f"--output_dir={tmp_path / 'out'}")
  assert proc.returncode == 2 and not proc.stdout.split()
  assert last_line(proc.stderr) == (
      f"bin/plot: No evaluation events (bound_poe) in {empty}: nothing to draw for them, no "
      "figure written. Leave them out, or train them past their first evaluation "
      "(eval_every) with bin/train.")
  assert not (tmp_path / "out").exists()


def test_bin_reproduce_names_a_bad_table_and_its_choices():
  proc = run_bin("reproduce", "--table=table9")
  assert proc.returncode != 0 and "table9" in proc.stderr and "table2" in proc.stderr
  proc = run_bin("reproduce")
  assert proc.returncode != 0 and "Give --table (or --summary)" in proc.stderr
