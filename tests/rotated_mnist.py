"""A data set added from outside msnvi_tf: an MNIST digit and its 90° rotation.

The README's walkthrough; tests/test_plugin.py trains, evaluates and exports it:

  bin/train --dataset=mnist_rot --dataset_module=tests/rotated_mnist.py
  bin/evaluate --workdirs=workdirs/mnist_rot_poe
"""
import tensorflow as tf

import configs
import msnvi_tf
from msnvi_tf import architectures
from msnvi_tf.data import mnist

SOURCES = ("digit", "rotated")


def digit_and_rotation(image, seed=None):
  """The view: `image [B, 28, 28]` (binarised) -> the digit and its rotation, `[B, 784]` each."""
  del seed  # no noise of its own
  rotated = tf.reverse(tf.transpose(image, [0, 2, 1]), [1])  # np.rot90 of each image
  return {"digit": tf.reshape(image, [-1, 784]), "rotated": tf.reshape(rotated, [-1, 784])}


def make_datasets(config, start_step=0):
  """MNIST's pipeline (loading, binarisation, resumable batches) with this view."""
  return mnist.make_datasets(config, start_step, view=digit_and_rotation)


def build_model(config):
  """Dense encoders and Bernoulli decoders of App. H for both views."""
  return architectures.dense_model(config, {s: (784,) for s in SOURCES},
                                   {s: "bernoulli" for s in SOURCES})


def get_config():
  """MNIST-TB's config (Table 4 and the loader's fields), trained with L_PoE."""
  config = configs.get_config("mnist_tb")
  config.update(dataset="mnist_rot", objective="poe")
  return config


msnvi_tf.register_dataset("mnist_rot", data=make_datasets, architecture=build_model,
                          config=get_config, split_sizes=(60_000, 10_000))
