"""TensorBoard output of a run: described scalars, the layout, config and hparams."""
import os

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from msnvi_tf.runtime import summaries
from msnvi_tf.runtime import training


def _accumulator(path):
  accumulator = event_accumulator.EventAccumulator(
      path, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  from conftest import make_toy_config  # pylint: disable=g-import-not-at-top
  config = make_toy_config().override(["lr_schedule=warmup_cosine", "warmup_steps=10",
                                       "decay_steps=10"])
  workdir = str(tmp_path_factory.mktemp("summaries") / "toy_run")
  with pytest.MonkeyPatch.context() as patch:
    from conftest import skip_export  # pylint: disable=g-import-not-at-top
    skip_export(patch)
    training.train_and_evaluate(config, workdir)
  return workdir, config


def test_every_scalar_is_described_with_its_unit_sign_and_k(run):
  workdir, config = run
  for name, tags in (("train", summaries.TRAIN_TAGS), ("eval", summaries.EVAL_TAGS)):
    accumulator = _accumulator(os.path.join(workdir, name))
    assert set(tags) <= set(accumulator.Tags()["tensors"]), name
    for tag in tags:
      assert accumulator.SummaryMetadata(tag).summary_description, (name, tag)
    if name == "eval":
      for tag in tags:
        description = accumulator.SummaryMetadata(tag).summary_description
        assert f"K={config.eval_num_samples}" in description
        assert "nats per example, higher is better" in description
  train = _accumulator(os.path.join(workdir, "train"))
  assert f"K={config.num_samples}" in train.SummaryMetadata("bound").summary_description
  assert "loss" not in train.Tags()["tensors"]  # -bound, not drawn twice


def test_learning_rate_follows_the_schedule_and_norms_are_positive(run):
  workdir, config = run
  train = _accumulator(os.path.join(workdir, "train"))
  values = {tag: [float(tf.make_ndarray(e.tensor_proto))
                  for e in train.Tensors(tag)] for tag in ("learning_rate", "grad_norm",
                                                           "param_norm")}
  # Warm-up to the peak at step 10, cosine down to final_lr_fraction = 0 at 20.
  assert values["learning_rate"][0] == pytest.approx(config.learning_rate, rel=1e-5)
  assert values["learning_rate"][1] == pytest.approx(0., abs=1e-12)
  assert all(v > 0 for v in values["grad_norm"] + values["param_norm"])


def test_the_initial_model_is_logged_but_not_drawn(run):
  workdir, _ = run
  eval_run = _accumulator(os.path.join(workdir, "eval"))
  assert [e.step for e in eval_run.Tensors("bound_poe")] == [20]


def test_layout_overlays_the_integrations_and_config_and_hparams_are_written(run):
  workdir, config = run
  train = _accumulator(os.path.join(workdir, "train"))
  layout = layout_pb2.Layout()
  layout.ParseFromString(train.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
  regexes = [tag for category in layout.category for chart in category.chart
             for tag in chart.multiline.tag]
  assert r"^bound_(ind|moe|poe)$" in regexes and r"^bound$" in regexes
  text = train.Tensors("config")[0].tensor_proto.string_val[0].decode()
  assert f"| objective | `{config.objective}` |" in text and "| machine |" in text
  session = _accumulator(workdir)
  data = plugin_data_pb2.HParamsPluginData()
  data.ParseFromString(session.SummaryMetadata(
      "_hparams_/session_start_info").plugin_data.content)
  hparams = data.session_start_info.hparams
  assert hparams["objective"].string_value == config.objective
  assert hparams["learning_rate"].number_value == pytest.approx(config.learning_rate)
  assert data.session_start_info.group_name == "toy_run"
