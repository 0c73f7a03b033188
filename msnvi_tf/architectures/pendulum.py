"""Pendulum architecture (Table 5): three image encoders, one (x, y) decoder."""
from msnvi_tf import architectures
from msnvi_tf.core import likelihoods
from msnvi_tf.data import pendulum

__all__ = ["build_model"]


def build_model(config):
  """Encoders for "camera0..2", a decoder for "position" (App. H, Table 5).

  Each encoder flattens its `[size, size]` image and applies dense tanh 32x2;
  the decoder applies dense tanh 256/64/16 and a linear layer for the mean of a
  Normal over (x, y) whose std is one global variable.
  """
  def encoder_stem(prefix):
    return architectures.dense_stem(config.encoder_hidden, config.activation, prefix,
                                    flatten=True)

  size = config.image_size
  source_shapes = {s: (size, size) for s in pendulum.SOURCES}
  encoders, encoder_inputs = architectures.encoders_for(
      config, source_shapes, encoder_stem)
  decoder = likelihoods.Decoder(
      architectures.dense_stem(config.decoder_hidden, config.activation, "dec"),
      likelihoods.NormalHead((2,), scale="global",
                             init_scale=config.decoder_init_scale),
      config.latent_dim, name=f"decoder_{pendulum.TARGET}")
  return architectures.assemble(config, encoders, encoder_inputs,
                                {pendulum.TARGET: decoder}, source_shapes)
