"""MNIST architectures (Table 4): elu 200x2 stems, Bernoulli pixels, Categorical label."""
from msnvi_tf import architectures
from msnvi_tf.core import likelihoods
from msnvi_tf.core import model as model_lib
from msnvi_tf.data import mnist

__all__ = ["build_model"]


def build_model(config):
  """One encoder per source (or the IWAE's one) and one decoder per target.

  App. H: every decoder is the stem followed by a linear dense layer giving the
  Bernoulli logits of its pixels (392 for MNIST-TB, 196 for MNIST-QU, 784 for
  the clean digit of MNIST-NO); the optional label decoder gives Categorical
  logits over 10 classes.
  """
  def stem(prefix):
    return architectures.dense_stem(config.hidden, config.activation, prefix)

  source_shapes = mnist.source_shapes(config.dataset, config.use_label)
  encoders, encoder_inputs = architectures.encoders_for(config, source_shapes, stem)
  decoders = {}
  for target, shape in mnist.target_shapes(config.dataset, config.use_label).items():
    head = (likelihoods.CategoricalHead(shape[0]) if target == "label"
            else likelihoods.BernoulliHead(shape))
    decoders[target] = likelihoods.Decoder(stem(f"dec_{target}"), head,
                                           config.latent_dim, name=f"decoder_{target}")
  return model_lib.MultiSourceVAE(
      encoders, decoders, config.latent_dim, objective=config.objective,
      num_samples=config.num_samples, eval_num_samples=config.eval_num_samples,
      hybrid_weight=config.hybrid_weight, encoder_inputs=encoder_inputs,
      seed=config.seed, source_shapes=source_shapes)
