"""What bin/evaluate and bin/plot run for a workdir's data set (`experiments.dispatch`)."""
import dataclasses
import glob
import json
import math
import os

import pytest

import configs
import msnvi_tf
from msnvi_tf import registry
from msnvi_tf.experiments import dispatch

from conftest import config_only_workdir, copy_of


def test_evaluating_a_damaged_newest_checkpoint_names_the_older_step(toy_run, tmp_path, caplog):
  workdir = copy_of(toy_run, tmp_path, "toy")
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
  toy = config_only_workdir(tmp_path / "toy_lr=1e-4", "toy")
  (run,) = dispatch.load_runs([toy])
  assert run.label is None and run.workdir == toy


def test_dispatch_checks_every_workdir_before_running_anything(toy_run, tmp_path):
  with pytest.raises(ValueError, match="Several workdirs need an output_dir"):
    dispatch.evaluate([toy_run, toy_run])
  mnist = config_only_workdir(tmp_path / "tb", "mnist_tb")
  with pytest.raises(ValueError, match=r"sensor_health needs mnist_qu or mnist_no .*_tb\)"):
    dispatch.evaluate([mnist], str(tmp_path / "out"), sensor_health=True)
  with pytest.raises(ValueError, match="faults: choose from"):
    dispatch.evaluate([config_only_workdir(tmp_path / "p", "pendulum")],
                      str(tmp_path / "out"), faults=["melt"])
  with pytest.raises(FileNotFoundError, match="not a workdir written by bin/train"):
    dispatch.plot([str(tmp_path)])
  assert not (tmp_path / "out").exists()


def test_table1_keeps_two_models_of_one_column_apart_and_labels_name_columns(
    tmp_path, monkeypatch):
  from msnvi_tf.experiments.mnist import table1  # pylint: disable=g-import-not-at-top

  seeds = [config_only_workdir(tmp_path / name, "mnist_tb") for name in ("s0", "s1")]
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


def test_registered_experiment_gets_the_runs_and_others_the_generic_report(
    toy_run, tmp_path, monkeypatch):
  calls = []
  report = lambda runs, output_dir, **options: calls.append((runs, output_dir, options)) or ["x"]
  monkeypatch.setitem(registry._REGISTRY, "toy", dataclasses.replace(  # pylint: disable=protected-access
      registry.get("toy"), _experiment=msnvi_tf.Experiment(evaluate=report)))
  assert dispatch.evaluate([f"mine={toy_run}"], str(tmp_path), eval_size=3) == ["x"]
  (runs, output_dir, options), = calls
  assert [(r.label, r.workdir, r.config.dataset) for r in runs] == [("mine", toy_run, "toy")]
  assert output_dir == str(tmp_path) and options == {"eval_size": 3}
  # No plot function: the learning curves.
  assert dispatch.plot([toy_run], str(tmp_path)) == [str(tmp_path / "learning_curves.png")]


def test_an_option_the_experiment_does_not_take_is_refused_before_anything_runs(
    toy_run, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=r"^large_k: not an option for toy workdirs "
                     r"\(msnvi_tf.experiments.generic.generic_evaluation\); its options: "
                     r"num_samples, eval_size, eval_batch_size\.$"):
    dispatch.evaluate([toy_run], str(out), large_k=5)
  with pytest.raises(ValueError, match=r"^chain_steps, num_examples: not an option for toy "
                     r"workdirs \(msnvi_tf.experiments.toy.plot\); its options: seed\.$"):
    dispatch.plot([toy_run], str(out), num_examples=3, chain_steps=2)
  with pytest.raises(ValueError, match="num_samples: not an option for toy"):
    dispatch.plot([toy_run], str(out), curves=True, num_samples=3)
  assert not out.exists()
  # The experiments' defaults are their functions' keyword arguments.
  assert dispatch.options_of(registry.get("mnist_tb").experiment.evaluate)[:3] == [
      "num_samples", "eval_size", "eval_batch_size"]
  assert dispatch.options_of(lambda runs, output_dir, **options: []) is None


def test_pendulum_filter_option_adds_the_latent_filter_report_per_run(tmp_path, monkeypatch):
  from msnvi_tf.experiments import pendulum  # pylint: disable=g-import-not-at-top

  calls = []
  monkeypatch.setattr(pendulum.sensors, "run_experiment",
                      lambda workdir, out, faults, *args: calls.append(("sensors", out)) or [])
  monkeypatch.setattr(pendulum.latent_filter, "run_filter_experiment",
                      lambda workdir, out, **options: calls.append(("filter", out, options))
                      or {"paths": [os.path.join(out, "results.md")]})
  runs = [config_only_workdir(tmp_path / name, "pendulum") for name in ("a", "b")]
  out = str(tmp_path / "out")
  assert dispatch.evaluate(runs, out, faults=["lag"]) == []
  assert calls == [("sensors", os.path.join(out, "a")), ("sensors", os.path.join(out, "b"))]
  calls.clear()
  paths = dispatch.evaluate(runs[:1], out, filter=True, faults=["lag"], num_samples=7)
  assert paths == [os.path.join(out, "filter", "results.md")]
  assert calls == [("sensors", out), ("filter", os.path.join(out, "filter"), dict(
      num_samples=7, seed=1, frames_per_rotation=120, faults=["lag"]))]
