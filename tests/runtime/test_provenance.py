"""A workdir records what trained its model: config.json once, fixed numerics, a run log."""
import json
import os

import pytest

import configs
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import copy_of


def _read(path):
  with open(path) as f:
    return f.read()


def _runs(workdir):
  with open(os.path.join(workdir, "runs.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.usefixtures("no_export")
def test_a_failed_first_start_leaves_nothing_that_blocks_the_corrected_command(
    tmp_path, toy_config):
  workdir = str(tmp_path / "run")
  mnist = configs.get_config("mnist_tb").override([f"data_dir={tmp_path / 'nothing'}"])
  with pytest.raises(FileNotFoundError):
    training.train_and_evaluate(mnist, workdir)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  start, end = _runs(workdir)
  assert start["event"] == "start" and end["status"].startswith("failed: FileNotFoundError")
  training.train_and_evaluate(toy_config, workdir)  # another data set: not refused
  assert json.loads(_read(os.path.join(workdir, "config.json")))["dataset"] == "toy"
  assert [r["event"] for r in _runs(workdir)] == ["start", "end"] * 2
  assert _runs(workdir)[-1] == {**_runs(workdir)[-1], "status": "finished", "step": 20}


@pytest.mark.usefixtures("no_export")
def test_config_json_is_written_once_and_a_rerun_asking_for_less_changes_nothing(
    toy_run, tmp_path, toy_config, caplog):
  workdir = copy_of(toy_run, tmp_path)  # toy_config, trained to step 20
  os.makedirs(os.path.join(workdir, "export", "20"))  # what no_export did not write
  files = {name: _read(os.path.join(workdir, name)) for name in ("config.json", "metrics.json")}
  config = json.loads(files["config.json"])
  assert config["precision"] == "float32" and config["jit_compile"] is False  # resolved
  assert isinstance(config["intra_op_threads"], int) and config["intra_op_threads"] >= 1
  # A no-op re-run with another learning rate, then one asking for fewer steps.
  training.train_and_evaluate(toy_config.override(["learning_rate=0.5"]), workdir)
  with caplog.at_level("WARNING", logger="msnvi_tf"):
    metrics = training.train_and_evaluate(toy_config.override(["num_steps=10"]), workdir)
  assert "trained to step 20, beyond num_steps=10: nothing was trained" in caplog.text
  assert metrics["step"] == 20
  assert {name: _read(os.path.join(workdir, name)) for name in files} == files
  runs = _runs(workdir)
  assert [r["event"] for r in runs] == ["start", "end"] * 3
  assert runs[0]["precision"] == "float32" and runs[0]["machine"] and "commit" in runs[0]


def test_a_resume_keeps_the_precision_xla_and_threads_the_model_was_trained_with(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  config = configs.get_config("toy")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({**json.loads(config.to_json()), "precision": "mixed_bfloat16",
               "jit_compile": False, "intra_op_threads": 2}, f)
  asked = config.override(["precision=auto", "jit_compile=auto", "intra_op_threads=auto"])
  workdir_lib.resolve_numerics(asked, workdir)  # auto: the stored choice, no new probe
  assert asked.precision == "mixed_bfloat16" and asked.jit_compile is False
  assert asked.intra_op_threads == 2
  with pytest.raises(ValueError, match=r"trained with intra_op_threads=2; resuming with "
                     r"intra_op_threads=1 would change its numbers"):
    workdir_lib.resolve_numerics(
        config.override(["precision=auto", "intra_op_threads=1"]), workdir)
  with pytest.raises(ValueError, match=r"trained with precision=mixed_bfloat16; resuming "
                     r"with precision=float32 would change its numbers.*--set "
                     r"precision=mixed_bfloat16"):
    workdir_lib.resolve_numerics(config.override(["precision=float32"]), workdir)
  # A workdir of an older version recorded "auto": resolved anew, as before.
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({**json.loads(config.to_json()), "precision": "auto"}, f)
  again = config.override(["precision=auto"])
  workdir_lib.resolve_numerics(again, workdir)
  assert again.precision == "auto"


def test_a_torn_config_json_is_named_and_left_alone(tmp_path, toy_config):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"dataset": "to')
  with pytest.raises(ValueError, match=r"config.json is not valid JSON .*left untouched"):
    training.train_and_evaluate(toy_config, str(workdir))
  assert (workdir / "config.json").read_text() == '{"dataset": "to'
