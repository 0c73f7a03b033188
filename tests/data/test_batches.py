"""The batching every data set shares (`msnvi_tf.data`): bad data is refused naming the
source and the example, before any training; a stream started at any step is the tail
of the stream from step 0."""
import numpy as np
import pytest

import configs
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


def test_check_finite_names_the_entry_holding_nan():
  arrays = {"x": np.zeros((4, 1), np.float32), "y": np.array([[0.], [np.nan]])}
  data_lib.check_finite({"x": arrays["x"]}, "toy data")
  with pytest.raises(ValueError, match="'y'.*1 NaN"):
    data_lib.check_finite(arrays, "toy data")


@pytest.mark.parametrize("dataset,overrides", [
    ("toy", ["train_size=50"]),
    ("pendulum", ["train_size=50", "eval_size=8"]),
    ("mnist_tb", ["train_size=50", "eval_size=8"]),
    ("mnist_no", ["train_size=50", "eval_size=8"]),
    ("shapes", ["train_size=50", "eval_size=4", "image_size=8"]),
])
def test_training_stream_from_any_step_is_the_tail_of_the_stream_from_zero(
    dataset, overrides):
  config = configs.get_config(dataset).override(overrides + ["batch_size=16"])
  head = [b for b in data_lib.make_datasets(config)[0].take(9)]
  for start in (1, 3, 7):  # 50 examples, batches of 16: 3, 6 and 7 span epochs.
    tail = data_lib.make_datasets(config, start_step=start)[0].take(9 - start)
    for expected, got in zip(head[start:], tail):
      assert sorted(got) == sorted(expected)
      for name in expected:
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy())
  # Every epoch serves every example once, in a new order.
  toy = data_lib.training_batches({"i": np.arange(50)}, 10, seed=3).take(10)
  epochs = np.concatenate([b["i"].numpy() for b in toy]).reshape(2, 50)
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(50))
  assert list(epochs[0]) != list(epochs[1])
