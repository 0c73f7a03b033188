"""The CUB model of Table 6 (and the shapes stand-in): shapes, refusals, mixed precision."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import configs
from msnvi_tf import architectures

from conftest import make_shapes_config, shapes_batch


def _compiled(config):
  model = architectures.build_model(config)
  model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
  model.optimizer.build(model.trainable_variables)
  return model


def test_table6_shapes_at_paper_size():
  config = configs.get_config("cub").override(["num_samples=1"])
  model = architectures.build_model(config)
  assert sorted(model.encoders) == ["image", "mask"]
  assert sorted(model.decoders) == ["image", "mask"]
  h = tf.zeros([1, 128, 128, 3])
  stem = model.encoders["image"].stem
  for layer in stem[:-2]:
    h = layer(h)
  assert h.shape == (1, 4, 4, 96)  # last pool of Table 6
  assert stem[-1](stem[-2](h)).shape == (1, 256)
  z = tf.zeros([2, 96])
  assert model.decoders["image"].mean(z).shape == (2, 128, 128, 3)
  assert model.decoders["mask"].mean(z).shape == (2, 128, 128, 1)
  h = z
  for layer in model.decoders["mask"].stem:
    h = layer(h)
  assert h.shape == (2, 64, 64, 16)  # last interpolation of Table 6
  assert model.decoders["image"].head.scale_kind == "global"
  assert model.decoders["image"].head.raw_scale.shape == ()


def test_wrong_image_size_and_unknown_target_are_refused():
  with pytest.raises(ValueError, match="image_size=64"):
    architectures.build_model(configs.get_config("shapes").override(["image_size=64"]))
  with pytest.raises(ValueError, match="targets"):
    architectures.build_model(make_shapes_config("targets=segmentation"))


@pytest.mark.parametrize("objective,targets,precision,encoders,decoders", [
    ("ind", "image,mask", "mixed_bfloat16", ["image", "mask"], ["image", "mask"]),
    ("hybrid", "image,mask", "mixed_float16", ["image", "mask"], ["image", "mask"]),
    ("hybrid", "mask", "mixed_bfloat16", ["image", "mask"], ["mask"]),  # hybrid*
    ("ind", "mask", "mixed_float16", ["image", "mask"], ["mask"]),  # ind*
    ("iwae", "mask", "mixed_bfloat16", ["image"], ["mask"]),
])
def test_one_mixed_precision_train_step_per_objective(objective, targets, precision,
                                                      encoders, decoders):
  keras.config.set_dtype_policy(precision)
  config = make_shapes_config(f"objective={objective}", f"targets={targets}",
                        f"precision={precision}")
  model = _compiled(config)
  assert sorted(model.encoders) == encoders and sorted(model.decoders) == decoders
  conv = model.decoders[decoders[0]].stem[2]
  assert conv.compute_dtype == precision.split("_")[1]  # the policy reached the convs
  before = [v.numpy().copy() for v in model.trainable_variables]
  step = tf.function(model.train_step)
  # float16 uses dynamic loss scaling: steps whose scaled gradients overflow
  # are skipped while the scale drops, so allow a few.
  for _ in range(1 if precision == "mixed_bfloat16" else 40):
    logs = step(shapes_batch())
    assert math.isfinite(float(logs["loss"])) and math.isfinite(float(logs["bound"]))
    if not np.array_equal(before[0], model.trainable_variables[0].numpy()):
      break
  bound, bounds = model._bounds(shapes_batch(), 2, ("ind", "poe"))  # pylint: disable=protected-access
  assert bound.dtype == tf.float32 and bounds["poe"].dtype == tf.float32
  changed = [not np.array_equal(b, v.numpy())
             for b, v in zip(before, model.trainable_variables)]
  assert sum(changed) > len(changed) // 2
