"""End to end: bin/train runs, resumes, refuses bad input, and its export serves."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf.runtime import export as export_lib
from msnvi_tf.runtime import training
from msnvi_tf.data import toy
from msnvi_tf.experiments import curves
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO

SMALL = ["--set=steps_per_call=10", "--set=log_every=10", "--set=eval_every=20",
         "--set=checkpoint_every=10", "--set=train_size=512", "--set=eval_size=64",
         "--set=eval_batch_size=32", "--set=export_num_samples=8"]


def run_train(*args, check=True):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "bin", "train"), *args],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  if check and result.returncode != 0:
    raise AssertionError(f"bin/train failed:\n{result.stdout}\n{result.stderr}")
  return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir trained 20 steps, then resumed to 40."""
  workdir = str(tmp_path_factory.mktemp("toy") / "run")
  first = run_train(f"--workdir={workdir}", "--num_steps=20", *SMALL)
  second = run_train(f"--workdir={workdir}", "--num_steps=40", *SMALL)
  return workdir, first, second


def test_train_writes_tensorboard_checkpoints_metrics_and_export(trained):
  workdir, first, _ = trained
  assert "step 20/20" in first.stdout and "steps/s" in first.stdout
  assert "ETA" in first.stdout
  assert f"Results in {workdir}" in first.stdout
  for sub in ("train", "eval"):
    assert glob.glob(os.path.join(workdir, sub, "events.out.tfevents.*")), sub
  eval_curves = curves.read_curves(workdir)
  assert {"bound", "bound_ind", "bound_moe", "bound_poe"} <= set(eval_curves)
  assert list(eval_curves["bound_poe"]["step"]) == [20, 40]
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["step"] == 40
  assert all(np.isfinite(metrics[k]) and metrics[k] != 0.
             for k in ("bound", "ind", "moe", "poe"))
  assert os.path.exists(os.path.join(workdir, "export", "20", "saved_model.pb"))


def test_rerun_resumes_from_latest_checkpoint_and_keeps_old_export(trained):
  workdir, _, second = trained
  assert "Resumed from" in second.stdout and "at step 20" in second.stdout
  assert "step 40/40" in second.stdout and "step 10/40" not in second.stdout
  assert os.path.exists(os.path.join(workdir, "export", "20", "saved_model.pb"))
  assert os.path.exists(os.path.join(workdir, "export", "40", "saved_model.pb"))


def test_export_loads_in_fresh_process_and_matches_keras_model(trained, tmp_path):
  workdir, _, _ = trained
  points = toy.test_points()
  script = f"""
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load({os.path.join(workdir, "export", "40")!r})
x = tf.constant({points["x"].tolist()!r}); y = tf.constant({points["y"].tolist()!r})
out = {{}}
enc = loaded.signatures["encode"](x=x, y=y)
out.update({{k: v.numpy().tolist() for k, v in enc.items()}})
present = tf.constant([[1., 1.]] * 8)
out["poe_loc"] = loaded.signatures["integrate_poe"](x=x, y=y, present=present)["loc"].numpy().tolist()
only_x = tf.constant([[1., 0.]] * 8)
out["poe_x_loc"] = loaded.signatures["integrate_poe"](x=x, y=tf.zeros_like(y), present=only_x)["loc"].numpy().tolist()
out["robust_loc"] = loaded.signatures["integrate_robust"](x=x, y=y, present=present)["loc"].numpy().tolist()
out["predict_x"] = loaded.signatures["predict"](x=x, y=y, present=present)["x"].numpy().tolist()
health = loaded.signatures["sensor_health"](x=x, y=y, present=present)
out.update({{"health_" + k: v.numpy().tolist() for k, v in health.items()}})
out["conflict"] = loaded.signatures["conflict"](x=x, y=y, present=only_x)["conflict"].numpy().tolist()
out["conflict_all"] = loaded.signatures["conflict"](x=x, y=y, present=present)["conflict"].numpy().tolist()
moe = loaded.signatures["integrate_moe"](x=x, y=y, present=only_x)
out.update({{"moe_" + k: v.numpy().tolist() for k, v in moe.items()}})
out["log_likelihood"] = loaded.signatures["log_likelihood"](x=x, y=y, present=present)["log_likelihood"].numpy().tolist()
try:
  loaded.signatures["encode"](x=tf.zeros([8, 3]), y=y)
except Exception as e:  # The error a client sees for a wrong shape.
  out["wrong_shape_error"] = str(e)
print(json.dumps(out))
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  served = json.loads(result.stdout.strip().splitlines()[-1])

  model, config = workdir_lib.load_trained(workdir)
  beliefs = model.encode(points)
  for s in ("x", "y"):
    np.testing.assert_allclose(served[f"{s}_loc"], beliefs[s].mean(), atol=1e-5)
    np.testing.assert_allclose(served[f"{s}_scale"], beliefs[s].stddev(), atol=1e-5)
  np.testing.assert_allclose(served["poe_loc"], model.integrate(beliefs).mean(),
                             atol=1e-5)
  np.testing.assert_allclose(served["robust_loc"],
                             model.integrate(beliefs, method="robust").mean(), atol=1e-5)
  # Masking y out leaves the PoE of x alone, i.e. q_x itself.
  np.testing.assert_allclose(served["poe_x_loc"], beliefs["x"].mean(), atol=1e-5)
  module = export_lib.ServingModule(model, config.export_num_samples, config.seed)
  predicted = module.predict(points, tf.ones([8, 2]))["x"]
  np.testing.assert_allclose(served["predict_x"], predicted, atol=1e-5)
  np.testing.assert_allclose(served["log_likelihood"],
                             module.log_likelihood(points, tf.ones([8, 2])), atol=1e-4)
  # Sensor health with the thresholds calibrated at the end of training.
  assert model.conflict_calibrated
  health = model.sensor_health(points)
  for key, name in (("weight", "weights"), ("alarm", "alarm"), ("score", "score")):
    np.testing.assert_allclose(served[f"health_{name}"], np.stack(
        [health[key]["x"], health[key]["y"]], 1), rtol=1e-5)
  robust_predicted = module.sensor_health(points, tf.ones([8, 2]))[1]["x"]
  np.testing.assert_allclose(served["health_x"], robust_predicted, atol=1e-5)
  conflict = np.array(served["conflict"])
  assert np.all(conflict[:, 0, 0] == 0.) and np.all(conflict[:, 0, 1] == 0.)  # y absent
  np.testing.assert_allclose(served["conflict_all"], model.conflict(points), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(served["moe_loc"], np.stack(
      [beliefs["x"].mean(), beliefs["y"].mean()], 1), atol=1e-5)
  np.testing.assert_allclose(served["moe_weights"], [[1., 0.]] * 8)
  assert "input x must have shape [batch, 1]" in served["wrong_shape_error"]


def test_saved_model_cli_runs_a_signature(trained):
  workdir, _, _ = trained
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run(
      [cli, "run", "--dir", os.path.join(workdir, "export", "40"), "--tag_set", "serve",
       "--signature_def", "integrate_poe",
       "--input_exprs", "x=[[0.7]];y=[[0.0]];present=[[1.0, 0.0]]"],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  model, _ = workdir_lib.load_trained(workdir)
  loc = model.encode({"x": np.array([[0.7]], np.float32)}, ["x"])["x"].mean()
  assert "Result for output key loc" in result.stdout
  printed = result.stdout.split("Result for output key loc:")[1].split("Result")[0]
  np.testing.assert_allclose(
      np.array(printed.replace("[", " ").replace("]", " ").split(), float),
      np.ravel(loc), rtol=1e-4)


def test_saved_model_cli_lists_every_signature(trained):
  workdir, _, _ = trained
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run([cli, "show", "--dir", os.path.join(workdir, "export", "40"),
                           "--all"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  for name in export_lib.SIGNATURES + ("serving_default",):
    assert f"signature_def['{name}']" in result.stdout


def test_unknown_dataset_and_objective_are_usage_errors(tmp_path):
  bad_dataset = run_train("--dataset=nope", f"--workdir={tmp_path}/a", check=False)
  assert bad_dataset.returncode != 0
  assert "Unknown dataset 'nope'" in bad_dataset.stderr
  bad_objective = run_train("--objective=elbo", f"--workdir={tmp_path}/b", check=False)
  assert bad_objective.returncode != 0
  assert "Unknown objective 'elbo'" in bad_objective.stderr
  bad_override = run_train("--set=num_sampels=3", f"--workdir={tmp_path}/c", check=False)
  assert "Unknown config field 'num_sampels'" in bad_override.stderr


@pytest.fixture
def small_run(toy_config, tmp_path, no_export):
  """A workdir trained 20 steps in-process, checkpointed at 10 and 20 (no export)."""
  del no_export  # used for its effect
  workdir = str(tmp_path / "run")
  training.train_and_evaluate(toy_config, workdir)
  return workdir


def checkpoint_files(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def test_incompatible_rerun_is_refused_and_keeps_checkpoints(small_run, toy_config):
  before = checkpoint_files(small_run)
  with pytest.raises(ValueError, match="objective: 'ind' -> 'poe'"):
    training.train_and_evaluate(toy_config.override(["objective=poe"]), small_run)
  assert checkpoint_files(small_run) == before


def test_loading_refuses_overrides_that_would_change_the_trained_model(small_run):
  model, config = workdir_lib.load_trained(small_run, eval_num_samples=3, eval_size=10)
  assert config.eval_num_samples == 3 and model.eval_num_samples == 3
  with pytest.raises(ValueError, match=r"Cannot override \['hidden'\]"):
    workdir_lib.load_trained(small_run, hidden=(8, 8))
  with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['num_sample'\]"):
    workdir_lib.load_trained(small_run, num_sample=4)


def test_diverging_loss_stops_training_and_keeps_last_checkpoint(small_run, toy_config):
  # A learning rate this large sends the weights to inf within a few steps.
  diverging = toy_config.override(["num_steps=200", "learning_rate=1e30"])
  with pytest.raises(FloatingPointError, match="diverged.*ckpt-20"):
    training.train_and_evaluate(diverging, small_run)
  assert os.path.exists(os.path.join(small_run, "checkpoints", "ckpt-20.index"))


def test_learning_rate_one_stops_on_a_finite_but_diverged_bound(small_run, toy_config):
  # lr = 1.0 keeps the numbers finite (a bound of about -1e6 nats) but useless.
  before = checkpoint_files(small_run)
  diverging = toy_config.override(["num_steps=200", "learning_rate=1.0"])
  with pytest.raises(FloatingPointError) as error:
    training.train_and_evaluate(diverging, small_run)
  message = str(error.value)
  assert "diverged at step 30: training bound" in message
  assert "ckpt-20, was kept" in message
  # b0 came back from the checkpoint: the step-0 eval of the first run.
  with open(os.path.join(small_run, "runs.jsonl")) as f:
    first_end = [json.loads(line) for line in f][1]
  assert first_end["status"] == "finished"
  assert "initial model's eval bound -" in message
  assert checkpoint_files(small_run) == before  # nothing saved after divergence


def test_divergence_rule_is_twice_the_initial_bound_by_default():
  check = lambda b, b0=-25., tol=1.: training.check_divergence(b, 7, "eval bound", b0, tol,
                                                                "ckpt-5")
  check(-50.)  # b0 - |b0|: the limit is allowed
  with pytest.raises(FloatingPointError, match=r"step 7: eval bound -50\.1 fell below -50"):
    check(-50.1)
  check(-1e9, tol=0.)  # tolerance 0: finite bounds always pass
  check(-1e9, b0=float("nan"))  # b0 unknown (a workdir begun before it was kept)
  with pytest.raises(FloatingPointError, match="eval bound nan"):
    check(float("nan"), b0=float("nan"))
  check(-1.5, b0=-0.5)  # |b0| < 1: 1 nat below is allowed
  with pytest.raises(FloatingPointError, match="No checkpoint was written yet"):
    training.check_divergence(-1.6, 3, "training bound", -0.5, 1., None)


def test_leftovers_of_interrupted_writes_are_removed_and_checkpoints_kept(small_run, toy_config):
  ckpt_dir = os.path.join(small_run, "checkpoints")
  leftovers = [os.path.join(ckpt_dir, "ckpt-30_temp", "part-00000-of-00001.index"),
               os.path.join(ckpt_dir, "ckpt-40.data-00000-of-00001"),
               os.path.join(small_run, "export", "40.tmp", "saved_model.pb"),
               os.path.join(small_run, "metrics.json.tmp")]
  for path in leftovers:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
  before = checkpoint_files(small_run)
  workdir_lib.clean_interrupted(small_run)
  assert not any(os.path.exists(p) for p in leftovers[:2] + leftovers[3:])
  assert not os.path.exists(os.path.dirname(leftovers[2]))
  assert checkpoint_files(small_run) == [f for f in before if f not in (
      "ckpt-30_temp", "ckpt-40.data-00000-of-00001")]
  assert "ckpt-20.index" in checkpoint_files(small_run)


@pytest.mark.parametrize("dataset", ["toy", "mnist_tb", "pendulum", "shapes"])
@pytest.mark.parametrize("objective", ["hybrid", "iwae"])
def test_every_variable_has_a_unique_tensorflow_name(dataset, objective):
  # TF Serving's loader finds variables by name; duplicates break the export.
  import configs  # pylint: disable=g-import-not-at-top
  from msnvi_tf import architectures  # pylint: disable=g-import-not-at-top
  model = architectures.build_model(
      configs.get_config(dataset).override([f"objective={objective}"]))
  names = [v.value.name for v in model.variables]
  assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_missing_data_dir_is_a_clear_error_naming_it(tmp_path):
  missing = str(tmp_path / "no_birds_here")
  result = run_train("--dataset=cub", f"--data_dir={missing}",
                     f"--workdir={tmp_path}/run", check=False)
  assert result.returncode != 0
  assert missing in result.stderr and "Traceback" not in result.stderr
