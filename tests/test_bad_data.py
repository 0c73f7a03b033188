"""Bad data gives a clear error naming the source and the example, before any training."""
import numpy as np
import pytest

from msnvi_tf import architectures
from msnvi_tf import data as data_lib


def test_nan_or_inf_names_the_source_and_the_first_bad_example():
  images = np.zeros((6, 2, 2), np.float32)
  images[4, 1, 0] = np.inf
  images[5, 0, 0] = np.nan
  with pytest.raises(ValueError, match=r"'camera1' has 2 NaN or infinite .*example 4"):
    data_lib.training_batches({"camera0": np.zeros((6, 3)), "camera1": images}, 2, seed=0)
  with pytest.raises(ValueError, match=r"test data: entry 'camera1'.*example 4"):
    data_lib.eval_batches({"camera1": images}, 2, what="test data")


def test_an_example_of_another_shape_is_named():
  images = [np.zeros((28, 28))] * 3 + [np.zeros((28, 27))]
  with pytest.raises(ValueError, match=r"example 3 of entry 'digit' has shape \(28, 27\)"):
    data_lib.training_batches({"digit": images}, 2, seed=0)


def test_empty_data_set_and_unequal_sources_are_refused():
  with pytest.raises(ValueError, match="is empty"):
    data_lib.training_batches({"x": np.zeros((0, 1)), "y": np.zeros((0, 1))}, 2, seed=0)
  with pytest.raises(ValueError, match="has no entries"):
    data_lib.training_batches({}, 2, seed=0)
  with pytest.raises(ValueError, match=r"different numbers of examples \{'x': 3, 'y': 2\}"):
    data_lib.training_batches({"x": np.zeros((3, 1)), "y": np.zeros((2, 1))}, 2, seed=0)


def test_a_batch_of_the_wrong_image_size_is_refused_by_the_model(toy_config):
  model = architectures.build_model(toy_config)
  with pytest.raises(ValueError, match=r"'y' has per-example shape \(3,\), expected \(1,\)"):
    model.test_step({"x": np.zeros((2, 1), np.float32), "y": np.zeros((2, 3), np.float32)})


def test_data_smaller_than_a_batch_still_serves_full_batches():
  batches = data_lib.training_batches({"x": np.arange(3.)}, 5, seed=0).take(3)
  served = np.concatenate([b["x"].numpy() for b in batches])
  assert served.shape == (15,) and sorted(served) == sorted(np.tile(np.arange(3.), 5))
