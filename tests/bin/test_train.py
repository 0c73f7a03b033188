"""bin/train end to end: a run, its resume, and its export served from a fresh process.

The first run is a bin/train process started as from a shell (no TF_CPP_MIN_LOG_LEVEL)
with a --dataset_module that writes lines of each kind (tests/console_lines.py): its
console shows the progress and nothing of TensorFlow's log (the other console cases:
tests/bin/test_console_output.py). The resume runs bin/train's main in this process,
and saved_model_cli reads the export through its own functions here too (the command
itself: tests/runtime/test_export.py).
"""
import contextlib
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from msnvi_tf.data import toy
from msnvi_tf.experiments import curves
from msnvi_tf.runtime import export as export_lib
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import REPO, run_bin_in_process
from console_lines import KEPT, LINES_MODULE, env, module_flag, noise

pytestmark = pytest.mark.slow  # bin/train runs, one of them in a subprocess

SMALL = ["--set=steps_per_call=10", "--set=log_every=10", "--set=eval_every=20",
         "--set=checkpoint_every=10", "--set=train_size=512", "--set=eval_size=64",
         "--set=eval_batch_size=32", "--set=export_num_samples=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir trained 20 steps by bin/train (with `LINES_MODULE`, as from a shell), then
  resumed to 40."""
  tmp = tmp_path_factory.mktemp("toy")
  workdir = str(tmp / "run")
  first = subprocess.run(
      [sys.executable, os.path.join(REPO, "bin", "train"), f"--workdir={workdir}",
       "--num_steps=20", *SMALL, module_flag(tmp, "console_lines", LINES_MODULE)],
      capture_output=True, text=True, cwd=REPO, env=env(), timeout=600)
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
  # The resume: bin/train's main in this process (resumes of bin/train processes:
  # tests/runtime/test_resume.py).
  status, stdout, stderr = run_bin_in_process("train", f"--workdir={workdir}",
                                              "--num_steps=40", *SMALL)
  assert status == 0, stdout[-2000:] + stderr[-2000:]
  second = subprocess.CompletedProcess("bin/train", status, stdout, stderr)
  return workdir, first, second


def test_train_prints_its_progress_and_not_tensorflows_log(trained):
  _, first, _ = trained
  for expected in ("step 20/20", "Finished toy / L_ind: step 20", "Results in", "SavedModel:"):
    assert expected in first.stdout
  assert noise(first.stdout + first.stderr) == []
  # Everything else on stderr passes: our logger's warning, prints, Python warnings.
  for kept in KEPT:
    assert kept in first.stderr


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
  robust_predicted = module.predict(points, tf.ones([8, 2]), "robust")["x"]
  np.testing.assert_allclose(served["health_x"], robust_predicted, atol=1e-5)
  conflict = np.array(served["conflict"])
  assert np.all(conflict[:, 0, 0] == 0.) and np.all(conflict[:, 0, 1] == 0.)  # y absent
  np.testing.assert_allclose(served["conflict_all"], model.conflict(points), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(served["moe_loc"], np.stack(
      [beliefs["x"].mean(), beliefs["y"].mean()], 1), atol=1e-5)
  np.testing.assert_allclose(served["moe_weights"], [[1., 0.]] * 8)
  assert "input x must have shape [batch, 1]" in served["wrong_shape_error"]


def saved_model_cli(*args):
  """What `saved_model_cli <args>` prints, run by its own functions in this process
  (its parser and the function of its command, as its `main` does)."""
  from tensorflow.python.tools import saved_model_cli as cli  # pylint: disable=g-import-not-at-top
  command = cli.create_parser().parse_args(list(args))
  with contextlib.redirect_stdout(io.StringIO()) as printed:
    command.func()
  return printed.getvalue()


def test_saved_model_cli_runs_a_signature(trained):
  workdir, _, _ = trained
  printed = saved_model_cli(
      "run", "--dir", os.path.join(workdir, "export", "40"), "--tag_set", "serve",
      "--signature_def", "integrate_poe",
      "--input_exprs", "x=[[0.7]];y=[[0.0]];present=[[1.0, 0.0]]")
  model, _ = workdir_lib.load_trained(workdir)
  loc = model.encode({"x": np.array([[0.7]], np.float32)}, ["x"])["x"].mean()
  assert "Result for output key loc" in printed
  printed = printed.split("Result for output key loc:")[1].split("Result")[0]
  np.testing.assert_allclose(
      np.array(printed.replace("[", " ").replace("]", " ").split(), float),
      np.ravel(loc), rtol=1e-4)


def test_saved_model_cli_lists_every_signature(trained):
  workdir, _, _ = trained
  printed = saved_model_cli("show", "--dir", os.path.join(workdir, "export", "40"), "--all")
  for name in export_lib.SIGNATURES + ("serving_default",):
    assert f"signature_def['{name}']" in printed
