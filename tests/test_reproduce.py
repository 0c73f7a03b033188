"""bin/reproduce: one command per table; the cell-by-cell Table 1; result files hold no paths."""
import json
import os
import re
import subprocess

import pytest

from msnvi_tf.experiments import reproduce
from msnvi_tf.experiments import table1

from conftest import REPO
from test_bin import run_bin
from test_plots import assert_png

_TINY_TOY = ["--dataset=toy", "--num_steps=20", "--set=steps_per_call=10",
             "--set=log_every=10", "--set=eval_every=10", "--set=checkpoint_every=10",
             "--set=train_size=256", "--set=eval_size=64", "--set=export_num_samples=4"]


def test_every_table_names_each_model_once_with_a_known_data_set():
  for name, table in reproduce.TABLES.items():
    names = [m.name for m in table.models]
    assert len(names) == len(set(names)), name
    assert set(table.plot) <= set(names) and table.plot
    for _, models, _ in table.curves:
      assert set(models) <= set(names)
    for model in table.models:
      assert any(a.startswith("--dataset=") for a in model.args)
  # Table 2: the paper's five columns, each asterisk / IWAE column from two models.
  labels = [m.label for m in reproduce.TABLES["table2"].models]
  assert {"ind", "ind*", "hybrid", "hybrid*", "iwae"} <= set(labels)
  assert {"ind* (img-to-img)", "hybrid* (img-to-img)", "iwae (img-to-img)",
          "hybrid (K=1)"} <= set(labels)
  assert all("--variant=cpu" in m.args for m in reproduce.TABLES["table2"].models)
  # Table 1: the paper's columns of each variant.
  for variant in ("mnist_tb", "mnist_qu", "mnist_no"):
    columns = {m.label for m in reproduce.TABLES[f"table1_{variant[-2:]}"].models} - {None}
    assert columns == set(table1.PAPER_TABLE1[variant]["poe"]), variant


def test_reproduce_trains_what_is_missing_then_only_rewrites_the_outputs(tmp_path,
                                                                         monkeypatch):
  tiny = reproduce.Table(
      "tiny toy", [reproduce.Model("toy_ind", "L_ind", _TINY_TOY + ["--objective=ind"]),
                   reproduce.Model("toy_poe", "L_PoE", _TINY_TOY + ["--objective=poe"])],
      {}, ["toy_ind"], {}, [("curves.png", ["toy_ind", "toy_poe"], ("bound_poe",))])
  monkeypatch.setitem(reproduce.TABLES, "tiny", tiny)
  runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
  # A model interrupted after its checkpoint of step 10 is resumed, not restarted.
  subprocess.run(reproduce.train_command(tiny.models[0], os.path.join(runs, "toy_ind"))
                 + ["--num_steps=10"], check=True, capture_output=True, cwd=REPO)
  os.remove(os.path.join(runs, "toy_ind", "metrics.json"))
  assert not reproduce.finished(os.path.join(runs, "toy_ind"))
  with pytest.raises(FileNotFoundError, match="toy_ind is not trained"):
    reproduce.reproduce("tiny", runs, out, train=False)
  paths = reproduce.reproduce("tiny", runs, out)
  assert all(reproduce.finished(os.path.join(runs, n)) for n in ("toy_ind", "toy_poe"))
  with open(os.path.join(runs, "toy_ind", "metrics.json")) as f:
    assert json.load(f)["step"] == 20
  assert os.path.join(out, "bounds.md") in paths
  assert_png(os.path.join(out, "curves.png"))
  assert any(p.startswith(os.path.join(out, "figures")) for p in paths)
  stamps = {n: os.path.getmtime(os.path.join(runs, n, "metrics.json"))
            for n in ("toy_ind", "toy_poe")}
  os.remove(os.path.join(out, "bounds.md"))
  again = reproduce.reproduce("tiny", runs, out)  # trains nothing, rewrites the outputs
  assert sorted(again) == sorted(paths) and os.path.exists(os.path.join(out, "bounds.md"))
  assert stamps == {n: os.path.getmtime(os.path.join(runs, n, "metrics.json"))
                    for n in stamps}
  with pytest.raises(ValueError, match="Unknown table 'table9'"):
    reproduce.reproduce("table9", runs, out)


def _results(dataset, column, ind, moe, poe, step=100_000):
  return {"dataset": dataset, "column": column, "ind": -ind, "moe": -moe, "poe": -poe,
          "num_samples": 16, "num_examples": 10_000, "step": step, "large_k": 5000,
          "log_likelihood": -88.4513, "log_likelihood_se": 0.2412}


def test_summary_has_a_row_per_cell_of_table1_and_prefers_the_fast_schedule(tmp_path):
  docs = tmp_path / "docs"
  (docs / "results").mkdir(parents=True)
  (docs / "fast.json").write_text(json.dumps(
      [_results("mnist_tb", "hybrid", 103.864, 103.19, 90.904)]))
  (docs / "paper.json").write_text(json.dumps(
      [_results("mnist_tb", "hybrid", 106.85, 106.18, 93.54, 250_000)]))
  manifest = [
      {"dataset": "mnist_tb", "column": "hybrid", "results": "docs/paper.json",
       "schedule": "paper", "training_commit": "aaa", "machine": "m1",
       "precision": "float32", "seed": 0, "note": ""},
      {"dataset": "mnist_tb", "column": "hybrid", "results": "docs/fast.json",
       "schedule": "fast", "training_commit": "bbb", "machine": "m2",
       "precision": "mixed_bfloat16", "seed": 0, "note": ""}]
  (docs / "results" / "runs.json").write_text(json.dumps(manifest))
  csv_path, md_path = table1.write_summary(str(docs / "results" / "runs.json"),
                                           str(docs / "results"))
  lines = open(csv_path).read().splitlines()
  assert lines[0] == ",".join(table1.SUMMARY_FIELDS)
  assert len(lines) == 1 + 48
  hybrid = [l for l in lines if l.startswith("mnist_tb,hybrid,")]
  assert hybrid[0].startswith("mnist_tb,hybrid,ind,103.86,104.03,-0.17,16,10000,88.45,0.24,"
                              "5000,100000,fast,bbb,,m2,")
  assert hybrid[2].startswith("mnist_tb,hybrid,poe,90.9,90.07,0.83,")
  assert sum(l.endswith("not run yet") for l in lines) == 45
  text = open(md_path).read()
  assert "3 of 48 cells run" in text and "3 are within 1 nat of the paper, 0 better" in text
  assert "| 88.45 +- 0.24 (K = 5000) |" in text


def test_summary_of_the_committed_manifest_matches_the_committed_table(tmp_path):
  manifest = os.path.join(REPO, "docs", "results", "table1_runs.json")
  if not os.path.exists(manifest):
    pytest.skip("no committed manifest")
  paths = table1.write_summary(manifest, str(tmp_path))
  for path in paths:
    with open(path) as f, open(os.path.join(REPO, "docs", "results",
                                            os.path.basename(path))) as committed:
      assert f.read() == committed.read(), f"{path}: bin/reproduce --summary differs"


def test_committed_result_files_hold_no_absolute_paths():
  files = subprocess.run(["git", "ls-files", "docs", "README.md"], capture_output=True,
                         text=True, cwd=REPO, check=True).stdout.split()
  if not files:
    pytest.skip("not a git checkout")
  absolute = re.compile(r"(^|[\s,\"'(=])/(root|home|tmp|work|Users)/")
  offending = []
  for name in files:
    if name.endswith((".csv", ".json", ".md")):
      with open(os.path.join(REPO, name)) as f:
        offending += [f"{name}:{i + 1}" for i, line in enumerate(f) if absolute.search(line)]
  assert not offending


def test_bin_reproduce_names_a_bad_table_and_its_choices():
  code, _, stderr = run_bin("reproduce", "--table=table9")
  assert code != 0 and "table9" in stderr and "table2" in stderr
  code, _, stderr = run_bin("reproduce")
  assert code != 0 and "Give --table (or --summary)" in stderr
