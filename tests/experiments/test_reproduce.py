"""bin/reproduce's tables (`experiments.reproduce`): each model once, train what is missing,
then only rewrite the outputs; committed result files hold no machine's paths."""
import json
import os
import re
import subprocess
import sys

import pytest

from msnvi_tf.experiments import reproduce
from msnvi_tf.experiments.mnist import table1

from conftest import REPO, assert_png

_TINY_TOY = ["--dataset=toy", "--num_steps=20", "--set=steps_per_call=10",
             "--set=log_every=10", "--set=eval_every=10", "--set=checkpoint_every=10",
             "--set=train_size=256", "--set=eval_size=64", "--set=export_num_samples=4"]

# Runs the bin/train command it is given (argv[1:]) without the SavedModel export,
# which reproduce does not read (about a third of a tiny run's time).
_NO_EXPORT = f"""
import runpy, sys
sys.path.insert(0, {REPO!r})
import msnvi_tf.runtime.export
msnvi_tf.runtime.export.export = lambda *args, **kwargs: None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


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


@pytest.mark.slow
def test_reproduce_trains_what_is_missing_then_only_rewrites_the_outputs(tmp_path,
                                                                         monkeypatch):
  tiny = reproduce.Table(
      "tiny toy", [reproduce.Model("toy_ind", "L_ind", _TINY_TOY + ["--objective=ind"]),
                   reproduce.Model("toy_poe", "L_PoE", _TINY_TOY + ["--objective=poe"])],
      {}, ["toy_ind"], {}, [("curves.png", ["toy_ind", "toy_poe"], ("bound_poe",))])
  monkeypatch.setitem(reproduce.TABLES, "tiny", tiny)
  train_command = reproduce.train_command  # bin/train's, run without the export
  monkeypatch.setattr(reproduce, "train_command", lambda *args: [
      sys.executable, "-c", _NO_EXPORT, *train_command(*args)[1:]])
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
