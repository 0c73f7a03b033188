"""bin/evaluate and bin/plot in a subprocess on a tiny toy run; the data-set dispatch."""
import glob
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

import configs
from msnvi_tf.experiments import dispatch
from msnvi_tf.experiments import table2
from msnvi_tf.runtime import training
from msnvi_tf.runtime.config import Config

from conftest import REPO, make_toy_config, skip_export
from test_plots import assert_png


def run_bin(script, *args):
  """`bin/<script> args` in a subprocess: `(returncode, stdout lines, stderr)`."""
  result = subprocess.run([sys.executable, os.path.join(REPO, "bin", script), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
  return result.returncode, result.stdout.split(), result.stderr


def last_line(stderr):
  return stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """A toy workdir trained 20 steps."""
  workdir = str(tmp_path_factory.mktemp("bin") / "toy")
  with pytest.MonkeyPatch.context() as patch:
    skip_export(patch)  # bin/evaluate and bin/plot read the checkpoint
    training.train_and_evaluate(make_toy_config(), workdir)
  return workdir


def _config_only_workdir(path, dataset):
  """A directory holding only a config.json of `dataset` (enough for the dispatch)."""
  path.mkdir()
  config = configs.get_config("toy")
  config["dataset"] = dataset
  (path / "config.json").write_text(config.to_json())
  return str(path)


def test_bin_evaluate_writes_the_bounds_of_a_toy_run_into_its_evaluation_dir(toy_run):
  code, lines, stderr = run_bin("evaluate", f"--workdirs={toy_run}")
  assert code == 0, stderr[-3000:]
  expected = [os.path.join(toy_run, "evaluation", name) for name in ("bounds.md", "bounds.json")]
  assert lines[-2:] == expected
  with open(expected[1]) as f:
    (result,) = json.load(f)
  assert result["dataset"] == "toy" and result["objective"] == "ind"
  assert result["workdir"] == "toy" and result["step"] == 20  # the checkpoint evaluated
  assert all(math.isfinite(result[k]) and result[k] < 0. for k in ("ind", "moe", "poe"))
  with open(expected[0]) as f:
    assert f"| toy | ind | 20 | 8 | {-result['ind']:.2f} |" in f.read()
  assert "Loaded toy at step 20 (checkpoint ckpt-20)." in " ".join(lines)


def test_evaluating_a_damaged_newest_checkpoint_names_the_older_step(toy_run, tmp_path, caplog):
  workdir = str(tmp_path / "toy")
  shutil.copytree(toy_run, workdir)
  for data in glob.glob(os.path.join(workdir, "checkpoints", "ckpt-20.data-*")):
    with open(data, "r+b") as f:  # as a kill while writing it leaves it
      f.truncate(os.path.getsize(data) // 3)
  with caplog.at_level("INFO", logger="msnvi_tf"):
    dispatch.evaluate([workdir], eval_size=64)
  assert "ckpt-20 is damaged" in caplog.text
  assert "Loaded toy at step 10 (checkpoint ckpt-10)." in caplog.text
  with open(os.path.join(workdir, "evaluation", "bounds.json")) as f:
    assert json.load(f)[0]["step"] == 10
  with open(os.path.join(workdir, "evaluation", "bounds.md")) as f:
    assert "| toy | ind | 10 | 8 |" in f.read()


def test_bin_plot_draws_figs_2_and_6_and_the_learning_curves(toy_run, tmp_path):
  code, lines, stderr = run_bin("plot", f"--workdirs={toy_run}")
  assert code == 0, stderr[-3000:]
  expected = [os.path.join(toy_run, "figures", name)
              for name in ("fig2_beliefs.png", "fig6_sir.png")]
  assert lines == expected
  for path in expected:
    assert_png(path)
  code, lines, stderr = run_bin("plot", f"--workdirs=a={toy_run},b={toy_run}", "--curves",
                                f"--output_dir={tmp_path}")
  assert code == 0, stderr[-3000:]
  assert lines == [str(tmp_path / "learning_curves.png")]
  assert_png(lines[0])


def test_missing_unknown_and_mixed_workdirs_are_one_line_errors(toy_run, tmp_path):
  nope = _config_only_workdir(tmp_path / "nope", "nope")
  pendulum = _config_only_workdir(tmp_path / "pendulum", "pendulum")
  for script, flag, message in (
      ("evaluate", f"--workdirs={tmp_path / 'missing'}", "no such workdir"),
      ("plot", f"--workdirs={nope}", "holds a 'nope' model; known data sets: ['cub', ")):
    code, _, stderr = run_bin(script, flag, f"--output_dir={tmp_path / 'out'}")
    assert code == 2, (script, flag)
    assert last_line(stderr).startswith(f"bin/{script}: ") and message in last_line(stderr)
  # The same code path in both scripts; in-process to save the start-up time.
  for fn in (dispatch.evaluate, dispatch.plot):
    with pytest.raises(ValueError, match=r"^The workdirs hold different data sets: .*"
                       r"\(toy\), .*\(pendulum\); (evaluate|plot) one data set per call.$"):
      fn([toy_run, pendulum], str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_learning_curves_of_a_workdir_without_eval_events_are_an_error(toy_run, tmp_path):
  empty = _config_only_workdir(tmp_path / "new", "toy")  # stopped before its first eval
  code, lines, stderr = run_bin("plot", f"--workdirs={toy_run},{empty}", "--curves",
                                f"--output_dir={tmp_path / 'out'}")
  assert code == 2 and not lines
  assert last_line(stderr) == (
      f"bin/plot: No evaluation events (bound_poe) in {empty}: nothing to draw for them, no "
      "figure written. Leave them out, or train them past their first evaluation "
      "(eval_every) with bin/train.")
  assert not (tmp_path / "out").exists()


def test_a_workdir_entry_is_a_path_if_it_is_a_directory_else_label_equals_path(tmp_path):
  odd = str(tmp_path / "wd_lr=1e-4")  # a workdir named after its flags
  os.mkdir(odd)
  assert dispatch.parse_workdir(odd) == (None, odd)
  assert dispatch.parse_workdir(f"lr={odd}") == ("lr", odd)
  assert dispatch.parse_workdir(f"K=1={tmp_path}") == ("K=1", str(tmp_path))  # a label with =
  assert dispatch.parse_workdir(str(tmp_path)) == (None, str(tmp_path))
  assert dispatch.parse_workdir("a=missing=1") == ("a", "missing=1")  # none exists
  with pytest.raises(FileNotFoundError, match="^missing=1: no such workdir"):
    dispatch.load_runs(["a=missing=1"])
  toy = _config_only_workdir(tmp_path / "toy_lr=1e-4", "toy")
  (run,) = dispatch.load_runs([toy])
  assert run.label is None and run.workdir == toy


def test_dispatch_checks_every_workdir_before_running_anything(toy_run, tmp_path):
  with pytest.raises(ValueError, match="Several workdirs need an output_dir"):
    dispatch.evaluate([toy_run, toy_run])
  mnist = _config_only_workdir(tmp_path / "tb", "mnist_tb")
  with pytest.raises(ValueError, match=r"sensor_health needs mnist_qu or mnist_no .*_tb\)"):
    dispatch.evaluate([mnist], str(tmp_path / "out"), sensor_health=True)
  with pytest.raises(ValueError, match="faults: choose from"):
    dispatch.evaluate([_config_only_workdir(tmp_path / "p", "pendulum")],
                      str(tmp_path / "out"), faults=["melt"])
  with pytest.raises(FileNotFoundError, match="not a workdir written by bin/train"):
    dispatch.plot([str(tmp_path)])
  assert not (tmp_path / "out").exists()


def test_table1_keeps_two_models_of_one_column_apart_and_labels_name_columns(
    tmp_path, monkeypatch):
  from msnvi_tf.experiments import table1  # pylint: disable=g-import-not-at-top

  seeds = [_config_only_workdir(tmp_path / name, "mnist_tb") for name in ("s0", "s1")]
  bound = {seeds[0]: -102., seeds[1]: -103.}

  def fake_evaluation(workdir, *args, **kwargs):  # two L_ind models' grid entries
    del args, kwargs
    return {"workdir": workdir, "dataset": "mnist_tb", "column": "ind", "step": 1,
            "num_examples": 4, "ind": bound[workdir], "moe": -101., "poe": -95.,
            "large_k": 0, "large_k_examples": 0, "log_likelihood": math.nan}

  monkeypatch.setattr(table1, "evaluate_workdir", fake_evaluation)
  dispatch.evaluate(seeds, str(tmp_path / "out"))
  results = json.load(open(tmp_path / "out" / "results.json"))
  assert [(r["workdir"], r["column"]) for r in results] == [
      (seeds[0], "ind"), (seeds[1], "ind (s1)")]
  markdown = (tmp_path / "out" / "table1.md").read_text()
  assert "| L_hybrid (K=1) | L_ind (s1) | IWAE |" in markdown
  assert "| L_ind | 102.00 (102.20) |" in markdown and "| - (108.97) | 103.00 |" in markdown
  dispatch.evaluate([f"hybrid={seeds[1]}"], str(tmp_path / "out"), merge=True)
  results = json.load(open(tmp_path / "out" / "results.json"))
  assert [(r["workdir"], r["column"]) for r in results] == [
      (seeds[0], "ind"), (seeds[1], "hybrid")]
  assert "| 102.00 (102.20) | - (102.40) | - (265.59) | 103.00 (104.03) |" in (
      tmp_path / "out" / "table1.md").read_text()


def test_learning_curves_of_mnist_runs_draw_the_paper_cell_of_their_column(
    toy_run, tmp_path, monkeypatch):
  from msnvi_tf.experiments import curves  # pylint: disable=g-import-not-at-top

  workdirs = {}
  for name, overrides in [("k1", ["objective=hybrid", "num_samples=1"]),
                          ("iwae1", ["objective=iwae", "iwae_sources=noisy0"]),
                          ("iwae_all", ["objective=iwae"])]:  # not in Table 1
    (tmp_path / name).mkdir()
    config = configs.get_config("mnist_no").override(overrides)
    (tmp_path / name / "config.json").write_text(config.to_json())
    workdirs[name] = str(tmp_path / name)
  drawn = []
  monkeypatch.setattr(curves, "plot_learning_curves",
                      lambda runs, path, references, **_: drawn.append((runs, references)))
  dispatch.plot([f"K=1={workdirs['k1']}", workdirs["iwae1"], workdirs["iwae_all"], toy_run],
                str(tmp_path / "out"), curves=True)
  (runs, references), = drawn
  assert list(runs) == ["K=1", "iwae1", "iwae_all", os.path.basename(toy_run)]
  assert references == {"K=1": 94.49, "iwae1": 94.95}


def test_registered_dataset_gets_its_functions_and_others_the_generic_ones(toy_run, tmp_path):
  calls = []
  original = dispatch.EXPERIMENTS["toy"]
  dispatch.register("toy", evaluate=lambda runs, output_dir, **options: calls.append(
      (runs, output_dir, options)) or ["x"])
  try:
    assert dispatch.evaluate([f"mine={toy_run}"], str(tmp_path), eval_size=3) == ["x"]
    (runs, output_dir, options), = calls
    assert [(r.label, r.workdir, r.config.dataset) for r in runs] == [
        ("mine", toy_run, "toy")]
    assert output_dir == str(tmp_path) and options == {"eval_size": 3}
    # No plot function: the learning curves.
    assert dispatch.plot([toy_run], str(tmp_path)) == [str(tmp_path / "learning_curves.png")]
  finally:
    dispatch.EXPERIMENTS["toy"] = original


@pytest.mark.parametrize("objective,targets,label", [
    ("ind", "image,mask", "ind"), ("hybrid", "mask", "hybrid*"),
    ("hybrid", "image", "hybrid* (img-to-img)"), ("iwae", "mask", "iwae"),
    ("iwae", "image", "iwae (img-to-img)")])
def test_table2_column_comes_from_the_config(objective, targets, label):
  config = Config(configs.get_config("shapes"), objective=objective, targets=targets)
  assert table2.label_of(config) == label
  assert label.split(" ")[0] in table2.PAPER_TABLE2
