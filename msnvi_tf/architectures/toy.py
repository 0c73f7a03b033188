"""Toy architecture (Table 3): tanh 32x2 stems, 1-D Normal likelihood per axis."""
from msnvi_tf import architectures
from msnvi_tf.core import likelihoods
from msnvi_tf.data import toy

__all__ = ["build_model"]


def build_model(config):
  """Two encoders (x, y) and two decoders with Normal(mean, std) heads.

  App. H: "The generative models are both 1D Normal distributions,
  parameterised by linear dense layers": mean and std both from linear layers
  on the stem (std through a softplus).
  """
  heads = {t: likelihoods.NormalHead((1,), scale=config.decoder_scale,
                                     init_scale=config.decoder_init_scale)
           for t in toy.SOURCES}
  return architectures.dense_model(config, {s: (1,) for s in toy.SOURCES}, heads)
