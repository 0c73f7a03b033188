"""Imputation (Eq. 6 and the Markov chain of Rezende et al.) on a small MNIST-TB model."""
import keras
import pytest
import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf.core import imputation
from msnvi_tf.data import mnist

from conftest import make_mnist_config


@pytest.mark.slow
@pytest.mark.usefixtures("keras_seed")
def test_markov_chain_imputation_improves_on_its_bernoulli_start():
  config = make_mnist_config("mnist_tb", "train_size=1024", "eval_size=64", "batch_size=64",
                   "objective=ind")
  train_ds, _ = mnist.make_datasets(config)
  model = architectures.build_model(config)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  step = tf.function(model.train_step)
  for batch in train_ds.take(200):
    step(batch)
  x = mnist.make_test_examples(config)
  chain, means = imputation.markov_chain_imputation(
      model, x, ["bottom"], num_steps=8, num_samples=8, return_means=True)
  assert chain.shape == (9, 64) and means["bottom"].shape == (9, 64, 392)
  start, end = float(tf.reduce_mean(chain[0])), float(tf.reduce_mean(chain[-3:]))
  assert end > start + 10., (start, end)
  eq6 = imputation.predictive_log_likelihood(model, x, ["top"], ["bottom"],
                                             num_samples=8)
  assert eq6.shape == (64,) and float(tf.reduce_mean(eq6)) > start + 10.
