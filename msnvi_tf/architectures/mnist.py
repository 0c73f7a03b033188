"""MNIST architectures (Table 4): elu 200x2 stems, Bernoulli pixels, Categorical label."""
from msnvi_tf import architectures
from msnvi_tf.data import mnist

__all__ = ["build_model"]


def build_model(config):
  """One encoder per source (or the IWAE's one) and one decoder per target.

  App. H: every decoder is the stem followed by a linear dense layer giving the
  Bernoulli logits of its pixels (392 for MNIST-TB, 196 for MNIST-QU, 784 for
  the clean digit of MNIST-NO); the optional label decoder gives Categorical
  logits over 10 classes.
  """
  targets = mnist.target_shapes(config.dataset, config.use_label)
  return architectures.dense_model(
      config, mnist.source_shapes(config.dataset, config.use_label),
      {t: "categorical" if t == "label" else "bernoulli" for t in targets}, targets)
