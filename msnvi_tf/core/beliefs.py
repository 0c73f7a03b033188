"""Beliefs q_m(z | x_m): diagonal Gaussians computed by one encoder per source.

An encoder is a stem (any Keras layers) followed by `BeliefHead`: a linear dense
layer for the mean and a sigmoid dense layer for the standard deviation (paper,
App. H). The sigmoid keeps every std <= 1, hence every precision
Lambda_m = scale^-2 >= 1 = Lambda_0 of the N(0, I) prior, which is the sufficient
condition of App. C for a valid product of experts.

Beliefs are `tfd.MultivariateNormalDiag` in float32 whatever the Keras dtype
policy; they travel in dicts keyed by source name.
"""
from typing import Mapping, Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import networks

tfd = tfp.distributions

__all__ = [
    "BeliefHead",
    "Encoder",
    "make_belief",
    "stack_beliefs",
]


def make_belief(loc, scale):
  """Builds a belief N(loc, diag(scale^2)) in float32.

  Args:
    loc: `[..., Dz]` mean.
    scale: `[..., Dz]` standard deviation, > 0.

  Returns:
    `tfd.MultivariateNormalDiag` with batch shape `[...]`, event shape `[Dz]`.
  """
  return tfd.MultivariateNormalDiag(
      loc=tf.cast(loc, tf.float32), scale_diag=tf.cast(scale, tf.float32))


class BeliefHead(keras.layers.Layer):
  """Maps stem features to the (loc, scale) of a diagonal Gaussian belief.

  loc = W_mu h + b_mu (linear); scale = min_scale + (1 - min_scale) sigmoid(W_s h + b_s),
  so scale lies in (min_scale, 1] and precision in [1, min_scale^-2) (App. H).

  Args:
    latent_dim: Dz.
    min_scale: floor of the std; keeps precisions finite in float32.
  """

  def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
    super().__init__(**kwargs)
    self.latent_dim = latent_dim
    self.min_scale = min_scale
    self.loc_layer = keras.layers.Dense(latent_dim, name="loc")
    self.scale_layer = keras.layers.Dense(latent_dim, name="scale_logit")

  def build(self, input_shape):
    for layer in (self.loc_layer, self.scale_layer):  # Unique variable names.
      with keras.name_scope(layer.name):
        layer.build(input_shape)

  def call(self, h):
    loc = tf.cast(self.loc_layer(h), tf.float32)  # [B, Dz]
    logit = tf.cast(self.scale_layer(h), tf.float32)  # [B, Dz]
    scale = self.min_scale + (1. - self.min_scale) * tf.sigmoid(logit)
    return loc, scale

  def get_config(self):
    return {**super().get_config(), "latent_dim": self.latent_dim,
            "min_scale": self.min_scale}


class Encoder(networks.StemAndHead):
  """One source's inference network x_m -> (loc, scale) of q_m(z | x_m).

  Args:
    stem: list of Keras layers applied in order (the paper's "stem").
    latent_dim: Dz.
    input_shape: shape of one example of the source (no batch axis); the
      encoder is built on it so that it has variables before training.
    min_scale: see `BeliefHead`.
  """

  def __init__(self, stem: Sequence[keras.layers.Layer], latent_dim: int,
               input_shape: Sequence[int], min_scale=1e-4, **kwargs):
    self.source_shape = tuple(int(d) for d in input_shape)
    super().__init__(stem, BeliefHead(latent_dim, min_scale, name="belief"),
                     self.source_shape, **kwargs)


def stack_beliefs(beliefs: Mapping[str, tfd.MultivariateNormalDiag], names):
  """Stacks the beliefs of `names` along a new leading axis: `([M, B, Dz], [M, B, Dz])`."""
  loc = tf.stack([beliefs[n].mean() for n in names])  # [M, B, Dz]
  scale = tf.stack([beliefs[n].stddev() for n in names])  # [M, B, Dz]
  return loc, scale
