"""Toy architecture (Table 3): tanh 32x2 stems, 1-D Normal likelihood per axis."""
from msnvi_tf import architectures
from msnvi_tf.core import likelihoods
from msnvi_tf.core import model as model_lib
from msnvi_tf.data import toy

__all__ = ["build_model"]


def build_model(config):
  """Two encoders (x, y) and two decoders with Normal(mean, std) heads.

  App. H: "The generative models are both 1D Normal distributions,
  parameterised by linear dense layers": mean and std both from linear layers
  on the stem (std through a softplus).
  """
  def stem(prefix):
    return architectures.dense_stem(config.hidden, config.activation, prefix)

  source_shapes = {s: (1,) for s in toy.SOURCES}
  encoders, encoder_inputs = architectures.encoders_for(config, source_shapes, stem)
  decoders = {
      t: likelihoods.Decoder(stem(f"dec_{t}"),
                             likelihoods.NormalHead((1,), scale=config.decoder_scale,
                                                     init_scale=config.decoder_init_scale),
                             config.latent_dim, name=f"decoder_{t}")
      for t in toy.SOURCES}
  return model_lib.MultiSourceVAE(
      encoders, decoders, config.latent_dim, objective=config.objective,
      num_samples=config.num_samples, eval_num_samples=config.eval_num_samples,
      hybrid_weight=config.hybrid_weight, encoder_inputs=encoder_inputs,
      seed=config.seed, source_shapes=source_shapes)
