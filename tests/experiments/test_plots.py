"""Figures: each toy figure writes a non-blank PNG; learning curves read every step."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from msnvi_tf import architectures
from msnvi_tf.experiments import curves
from msnvi_tf.experiments.toy import figures as toy_figures
from msnvi_tf.runtime.config import Config
from msnvi_tf.runtime import workdir as workdir_lib

from conftest import assert_png


def test_trained_model_figures_are_non_blank_pngs(toy_run, tmp_path):
  model, config = workdir_lib.load_trained(toy_run)
  fig2 = toy_figures.fig2_beliefs(model, str(tmp_path / "a" / "fig2.png"),
                                  component_std=config.component_std)
  fig6 = toy_figures.fig6_sir(model, str(tmp_path / "b" / "fig6.png"), num_samples=20,
                              num_proposals=50)
  assert fig2 == str(tmp_path / "a" / "fig2.png")
  assert fig6 == str(tmp_path / "b" / "fig6.png")
  assert_png(fig2)
  assert_png(fig6)


def test_figures_of_iwae_model(toy_config, tmp_path):
  """Any toy model plots, also an untrained one with a single hard-wired encoder."""
  model = architectures.build_model(Config(toy_config, objective="iwae"))
  assert model.sources == ["x+y"]
  assert_png(toy_figures.fig2_beliefs(model, str(tmp_path / "fig2.png"), num_latent=3))
  assert_png(toy_figures.fig6_sir(model, str(tmp_path / "fig6.png"), num_samples=10,
                                  num_proposals=20))


def _write_events(directory, values):
  writer = tf.summary.create_file_writer(directory)
  with writer.as_default():
    for step, value in values:
      tf.summary.scalar("bound_poe", value, step=step)
  writer.flush()


def _write_timed_events(path, events):
  """An event file of `(wall_time, step, bound_poe or None)`; None: the file version."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for wall_time, step, value in events:
      event = event_pb2.Event(wall_time=wall_time, step=step)
      if value is None:
        event.file_version = "brain.Event:2"
      else:
        event.summary.value.add(tag="bound_poe", simple_value=value)
      writer.write(event.SerializeToString())


def test_hours_of_training_leave_out_the_pause_before_a_resumed_run(tmp_path):
  workdir, t0 = str(tmp_path / "run"), 1.7e9
  # A first run of 1 h (evaluated at 0.5 h and 1 h), stopped; resumed 5 h later
  # for 0.5 h more.
  for run, (start, evals) in enumerate([(t0, [(0.5, 10, -110.), (1., 20, -100.)]),
                                        (t0 + 6 * 3600, [(0.5, 30, -95.)])]):
    end = start + 3600 * evals[-1][0]
    _write_timed_events(os.path.join(workdir, "train", f"events.out.tfevents.{run}"),
                        [(start, 0, None), (end, evals[-1][1], -1.)])
    _write_timed_events(os.path.join(workdir, "eval", f"events.out.tfevents.{run}"),
                        [(start + 1., 0, None)] + [(start + 3600 * h, s, v)
                                                   for h, s, v in evals])
  curve = curves.read_curves(workdir)["bound_poe"]
  np.testing.assert_array_equal(curve["step"], [10, 20, 30])
  np.testing.assert_allclose(curve["hours"], [0.5, 1., 1.5])


def test_learning_curves_keep_the_events_before_a_torn_last_record(tmp_path):
  workdir = str(tmp_path / "run")
  _write_events(os.path.join(workdir, "eval"), [(10, -110.), (20, -100.)])
  path, = glob.glob(os.path.join(workdir, "eval", "events.out.tfevents.*"))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:  # killed while writing the step-20 event
    f.write(data[:-7])
  curve = curves.read_curves(workdir)["bound_poe"]
  np.testing.assert_array_equal(curve["step"], [10])
  np.testing.assert_allclose(curve["value"], [-110.])


def test_learning_curves_read_every_eval_step_and_keep_a_resumed_steps_last_value(tmp_path):
  workdir = str(tmp_path / "run")
  _write_events(os.path.join(workdir, "train"), [(5, -120.)])
  _write_events(os.path.join(workdir, "eval"), [(10, -110.), (20, -100.)])
  _write_events(os.path.join(workdir, "eval"), [(20, -99.), (30, -95.)])  # resumed
  curve = curves.read_curves(workdir)["bound_poe"]
  np.testing.assert_array_equal(curve["step"], [10, 20, 30])
  np.testing.assert_allclose(curve["value"], [-110., -99., -95.])
  assert np.all(curve["hours"] >= 0.) and np.all(np.diff(curve["hours"]) >= 0.)
  path = curves.plot_learning_curves({"run": workdir}, str(tmp_path / "c.png"),
                                     references={"run": 95., "other paper": 90.})
  assert os.path.getsize(path) > 10_000
  with pytest.raises(FileNotFoundError, match="No evaluation events"):
    curves.read_curves(str(tmp_path / "empty"))


def test_learning_curves_of_a_run_stopped_before_its_first_evaluation_are_refused(tmp_path):
  good, stopped = str(tmp_path / "good"), str(tmp_path / "stopped")
  _write_events(os.path.join(good, "eval"), [(10, -110.)])
  # Its event files hold only their headers (the file version), no scalar.
  _write_timed_events(os.path.join(stopped, "eval", "events.out.tfevents.0"), [(1.7e9, 0, None)])
  with pytest.raises(FileNotFoundError, match="No evaluation events"):
    curves.read_curves(stopped)
  path = str(tmp_path / "c.png")
  with pytest.raises(FileNotFoundError, match=(
      rf"^No evaluation events \(bound_poe\) in {stopped}, {tmp_path}/none: "
      "nothing to draw")):
    curves.plot_learning_curves({"good": good, "stopped": stopped,
                                 "none": str(tmp_path / "none")}, path)
  with pytest.raises(FileNotFoundError, match=rf"\(bound_elbo\) in {good}: nothing"):
    curves.plot_learning_curves({"good": good}, path, tags=("bound_elbo",))
  assert not os.path.exists(path)
