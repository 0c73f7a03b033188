"""CUB architecture (Table 6): conv encoders, conv + bilinear decoders.

Encoder stem (per source), for widths c_1..c_L (Table 6: 16, 32, 48, 64, 96):
  [conv 3x3 c_i lrelu, conv 3x3 c_i lrelu, max pool 3x3 stride 2] x L,
  flatten, dense 256 linear  -> `beliefs.BeliefHead`.
Decoder (per target), for widths d_1..d_J (Table 6: 64, 48, 32, 16):
  dense 4x4x96 linear, [conv 3x3 d_j lrelu, conv 3x3 d_j lrelu, bilinear x2] x J,
  then a 5x5 stride-2 transposed conv to the likelihood's mean (image) or
  logits (mask): `[4 * 2^(J+1)]^2` pixels, 128 x 128 in the paper.
The image likelihood is a Normal with one global std for all pixels (App. H),
the mask likelihood a Bernoulli. lrelu has alpha = 0.1.

Sources are always "image" and "mask"; `config.targets` picks the decoders
(the asterisk variants of Table 2 keep only one), `config.iwae_sources` the
IWAE's encoder input. Both are comma-separated names (or sequences).
"""
from typing import Sequence, Tuple, Union

import keras

from msnvi_tf import architectures
from msnvi_tf.core import likelihoods
from msnvi_tf.data import cub

__all__ = ["build_model", "parse_names", "encoder_stem", "decoder_stem",
           "source_shapes"]

_CHANNELS = {"image": 3, "mask": 1}


def parse_names(names: Union[str, Sequence[str]], what: str) -> Tuple[str, ...]:
  """`"image,mask"` or `("image", "mask")` -> a tuple of CUB source names."""
  return architectures.parse_names(names, what, cub.SOURCES)


def source_shapes(image_size: int):
  """`{"image": (S, S, 3), "mask": (S, S, 1)}`."""
  return {s: (image_size, image_size, _CHANNELS[s]) for s in cub.SOURCES}


def _check_sizes(config):
  enc = 4 * 2 ** len(config.encoder_channels)
  dec = 8 * 2 ** len(config.decoder_channels)
  if not config.image_size == enc == dec:
    raise ValueError(
        f"image_size={config.image_size} does not fit the architecture: the "
        f"encoder pools {len(config.encoder_channels)} times down to 4x4 (needs "
        f"{enc}), the decoder upsamples {len(config.decoder_channels)} times from "
        f"4x4 plus a stride-2 head (gives {dec}). Change encoder_channels / "
        f"decoder_channels with image_size (e.g. 32: (16, 32, 48) and (32, 16)).")


def encoder_stem(config, prefix):
  """Table 6 inference stem: conv pairs and pools down to 4x4, dense 256."""
  layers = []
  for i, width in enumerate(config.encoder_channels):
    for j in range(2):
      layers.append(keras.layers.Conv2D(
          width, 3, padding="same", activation=None, name=f"{prefix}_conv{i}_{j}"))
      layers.append(keras.layers.LeakyReLU(config.lrelu_alpha, name=f"{prefix}_lrelu{i}_{j}"))
    layers.append(keras.layers.MaxPooling2D(3, 2, padding="same", name=f"{prefix}_pool{i}"))
  layers.append(keras.layers.Flatten(name=f"{prefix}_flatten"))
  layers.append(keras.layers.Dense(config.encoder_dense, name=f"{prefix}_dense"))
  return layers


def decoder_stem(config, prefix):
  """Table 6 generative stem: dense 4x4x96, conv pairs and bilinear x2 up to S/2."""
  base = config.decoder_base_channels
  layers = [keras.layers.Dense(4 * 4 * base, name=f"{prefix}_dense"),
            keras.layers.Reshape((4, 4, base), name=f"{prefix}_reshape")]
  for i, width in enumerate(config.decoder_channels):
    for j in range(2):
      layers.append(keras.layers.Conv2D(
          width, 3, padding="same", activation=None, name=f"{prefix}_conv{i}_{j}"))
      layers.append(keras.layers.LeakyReLU(config.lrelu_alpha, name=f"{prefix}_lrelu{i}_{j}"))
    layers.append(keras.layers.UpSampling2D(2, interpolation="bilinear",
                                            name=f"{prefix}_interpol{i}"))
  return layers


def _head(config, target, event_shape):
  """5x5 stride-2 transposed conv to the mean / logits, in its likelihood."""
  param_layer = keras.layers.Conv2DTranspose(
      _CHANNELS[target], 5, strides=2, padding="same", name=f"dec_{target}_head")
  if target == "image":
    return likelihoods.NormalHead(event_shape, scale="global",
                                  init_scale=config.decoder_init_scale,
                                  param_layer=param_layer, name="image_likelihood")
  return likelihoods.BernoulliHead(event_shape, param_layer=param_layer,
                                   name="mask_likelihood")


def build_model(config):
  """Encoders for "image" and "mask" (or the IWAE's one), decoders for `targets`."""
  _check_sizes(config)
  shapes = source_shapes(config.image_size)
  targets = parse_names(config.targets, "targets")
  encoder_config = config.copy()
  encoder_config.iwae_sources = parse_names(config.iwae_sources, "iwae_sources")
  encoders, encoder_inputs = architectures.encoders_for(
      encoder_config, shapes, lambda prefix: encoder_stem(config, prefix))
  decoders = {
      t: likelihoods.Decoder(decoder_stem(config, f"dec_{t}"),
                             _head(config, t, shapes[t]), config.latent_dim,
                             name=f"decoder_{t}")
      for t in targets}
  return architectures.assemble(config, encoders, encoder_inputs, decoders, shapes)
