"""Table 1 (`experiments.mnist.table1`, `.large_k`): a workdir's entries, the grid beside the
paper, the large-K estimates per proposal, the summary of the committed runs."""
import csv
import json
import math
import os

import numpy as np
import pytest

import configs
from msnvi_tf.architectures import toy
from msnvi_tf.data import toy as toy_data
from msnvi_tf.experiments.mnist import large_k
from msnvi_tf.experiments.mnist import table1
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO, make_mnist_config


@pytest.mark.usefixtures("keras_seed")
@pytest.mark.usefixtures("no_export")
def test_evaluate_workdir_gives_table1_entries_in_float32(tmp_path, monkeypatch):
  config = make_mnist_config("mnist_tb", "objective=hybrid", "num_steps=4", "steps_per_call=2",
                   "eval_every=4", "checkpoint_every=4", "export_num_samples=4",
                   "precision=mixed_bfloat16")
  workdir = str(tmp_path / "run")
  training.train_and_evaluate(config, workdir)
  loaded = []
  load = workdir_lib.load_trained
  monkeypatch.setattr(workdir_lib, "load_trained",
                      lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
  result = table1.evaluate_workdir(workdir, num_samples=4, eval_size=16,
                                       large_k=32, large_k_examples=8, chunk_size=16,
                                       eval_batch_size=8)
  assert loaded[0][0].encoders["top"].compute_dtype == "float32"  # trained in bf16
  assert result["step"] == 4 and result["num_examples"] == 16
  assert result["column"].startswith("hybrid") and result["large_k_examples"] == 8
  for key in ("ind", "moe", "poe", "log_likelihood"):
    assert np.isfinite(result[key]) and result[key] < 0., key


def _results():
  return [
      {"workdir": "/w/tb_ind", "dataset": "mnist_tb", "column": "ind", "step": 3000,
       "ind": -150., "moe": -149.5, "poe": -170.25, "large_k": 1000,
       "large_k_examples": 500, "log_likelihood": -120., "num_examples": 2000},
      {"workdir": "/w/tb_iwae", "dataset": "mnist_tb", "column": "iwae", "step": 3000,
       "ind": -130., "moe": -130., "poe": -130., "large_k": 0, "large_k_examples": 0,
       "log_likelihood": float("nan"), "num_examples": 2000},
  ]


def test_grid_writer_puts_ours_beside_the_paper(tmp_path):
  paths = table1.write_grid(_results(), str(tmp_path))
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  tb = [r for r in rows if r["dataset"] == "mnist_tb"]
  assert {r["dataset"] for r in rows} == {"mnist_tb"}
  assert len(tb) == 3 * 5 + 1  # the paper's 16 TB cells
  cell = {(r["eval_objective"], r["train_objective"]): r for r in tb}
  assert float(cell["poe", "ind"]["ours"]) == 170.25
  assert float(cell["poe", "ind"]["paper"]) == 94.38
  assert float(cell["poe", "iwae"]["ours"]) == 130.
  assert cell["moe", "poe"]["ours"] == "" and float(cell["moe", "poe"]["paper"]) == 264.48
  assert ("ind", "iwae") not in cell
  markdown = open(paths["markdown"]).read()
  assert "| L_PoE | 170.25 (94.38) | - (94.39) | - (87.59) |" in markdown
  assert "| - (108.97) | - |" in markdown  # IWAE: PoE row only
  assert "| - (90.81) | 130.00 (88.79) |" in markdown
  assert "### MNIST-TB" in markdown
  assert "training steps: 3000; test examples: 2000." in markdown
  assert "| MNIST-TB | L_ind | 3000 | 1000 | 500 | 120.00 | 170.25 |" in markdown
  assert table1.load_results(paths["json"])[0]["workdir"] == "/w/tb_ind"


def test_column_of_distinguishes_hybrid_with_one_sample_and_iwae_on_some_sources():
  config = configs.get_config("mnist_tb")
  assert table1.column_of(config.override(["objective=hybrid"])) == "hybrid"
  assert table1.column_of(
      config.override(["objective=hybrid", "num_samples=1"])) == "hybrid_k1"
  assert table1.column_of(config.override(["objective=iwae"])) == "iwae"
  no = configs.get_config("mnist_no").override(["objective=iwae"])
  assert table1.column_of(no.override(["iwae_sources=['noisy0']"])) == "iwae_noisy0"
  assert table1.column_of(no.override(["iwae_sources='noisy1, noisy2'"])) == (
      "iwae_noisy1+noisy2")


def test_hard_wired_and_single_source_iwae_are_two_columns_only_one_the_papers(tmp_path):
  # MNIST-NO: the paper's IWAE (94.95) saw one noisy source; the hard-wired IWAE on
  # all four is another model, evaluated in the same call.
  common = {"dataset": "mnist_no", "step": 100, "large_k": 0, "large_k_examples": 0,
            "log_likelihood": float("nan"), "num_examples": 10}
  results = [{**common, "workdir": "/w/no_iwae", "column": "iwae", "ind": -90.,
              "moe": -90., "poe": -90.},
             {**common, "workdir": "/w/no_iwae1", "column": "iwae_noisy0", "ind": -92.,
              "moe": -92., "poe": -92.}]
  paths = table1.write_grid(results, str(tmp_path))
  with open(paths["csv"]) as f:
    cell = {(r["eval_objective"], r["train_objective"]): r for r in csv.DictReader(f)}
  assert float(cell["poe", "iwae"]["ours"]) == 90. and cell["poe", "iwae"]["paper"] == ""
  assert float(cell["poe", "iwae_noisy0"]["ours"]) == 92.
  assert float(cell["poe", "iwae_noisy0"]["paper"]) == 94.95
  assert ("ind", "iwae_noisy0") not in cell
  markdown = open(paths["markdown"]).read()
  assert "| L_hybrid (K=1) | IWAE | IWAE (noisy0) |" in markdown
  assert "| - (94.49) | 90.00 | 92.00 (94.95) |" in markdown
  # Without our runs the paper's single-source IWAE still has its cell.
  empty = [{**results[0], "column": "ind"}]
  assert "| - (94.49) | - (94.95) |" in table1.format_markdown(empty)


def test_large_k_estimates_give_mean_and_standard_error_per_proposal(toy_config):
  model = toy.build_model(toy_config.override(["decoder_init_scale=1.0"]))
  batches = [toy_data.sample(8, seed)[0] for seed in (0, 1, 2)]  # 24 examples
  assert large_k.default_proposals(model) == ["poe", "x", "y"]
  estimates = large_k.large_k_estimates(model, batches, 20, ["poe", "x"],
                                           chunk_size=8, seed=7)
  for name, (sources, method) in {"poe": (None, "poe"), "x": (["x"], "poe")}.items():
    values = np.concatenate([
        model.log_likelihood(b, 20, sources, method, chunk_size=8, seed=7 + i)
        for i, b in enumerate(batches)])
    e = estimates[name]
    np.testing.assert_array_equal(e["values"], values)
    assert e["examples"] == 24
    assert e["log_likelihood"] == pytest.approx(values.mean(), rel=1e-6)
    assert e["se"] == pytest.approx(values.std(ddof=1) / math.sqrt(24), rel=1e-5)
  with pytest.raises(ValueError, match="Unknown large-K proposal 'z'"):
    large_k.large_k_estimates(model, batches, 4, ["z"])


def test_grid_writer_lists_large_k_estimates_by_proposal(tmp_path):
  def estimate(value, se):
    return {"log_likelihood": value, "se": se, "std": 1., "examples": 10000,
            "seconds": 1., "examples_per_second": 1e4}

  result = {"workdir": "/w/tb_poe", "dataset": "mnist_tb", "column": "poe",
            "step": 100000, "ind": -200., "moe": -199., "poe": -88., "large_k": 5000,
            "large_k_examples": 10000, "log_likelihood": -85.2, "num_examples": 10000,
            "log_likelihood_se": 0.24, "large_k_precision": "float32",
            "large_k_estimates": {"poe": estimate(-85.2, 0.24),
                                  "top": estimate(-181.0, 1.0)}}
  paths = table1.write_grid([result], str(tmp_path))
  markdown = open(paths["markdown"]).read()
  assert "| MNIST-TB | L_PoE | 100000 | 5000 | 10000 | 85.20 | 88.00 |" in markdown
  assert "| MNIST-TB | L_PoE | 100000 | 5000 | 10000 | top | 181.00 | 1.00 | float32 |" in markdown
  with open(paths["proposals_csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [(r["proposal"], float(r["se"])) for r in rows] == [("poe", 0.24), ("top", 1.)]


def _summary_entry(dataset, column, ind, moe, poe, step=100_000):
  return {"dataset": dataset, "column": column, "ind": -ind, "moe": -moe, "poe": -poe,
          "num_samples": 16, "num_examples": 10_000, "step": step, "large_k": 5000,
          "log_likelihood": -88.4513, "log_likelihood_se": 0.2412}


def test_summary_has_a_row_per_cell_of_table1_and_prefers_the_fast_schedule(tmp_path):
  docs = tmp_path / "docs"
  (docs / "results").mkdir(parents=True)
  (docs / "fast.json").write_text(json.dumps(
      [_summary_entry("mnist_tb", "hybrid", 103.864, 103.19, 90.904)]))
  (docs / "paper.json").write_text(json.dumps(
      [_summary_entry("mnist_tb", "hybrid", 106.85, 106.18, 93.54, 250_000)]))
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
