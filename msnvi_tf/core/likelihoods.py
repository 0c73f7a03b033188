"""Likelihood heads p(x_t | z) and the decoder that carries them.

A decoder is a stem (Keras layers mapping z to features) followed by a head. A
head is a Keras layer with two halves: `call(h)` returns the distribution's
parameters as float32 tensors (so the Keras graph only ever carries tensors), and
`distribution(params)` wraps them in a TFP distribution whose event is one whole
observation (`tfd.Independent` over the observation axes), so `log_prob` sums
over pixels / coordinates. Parameters and log-probabilities are float32 whatever
the compute dtype of the stem.

The Bernoulli and Normal heads' log-probabilities are the hand-written kernels
of `msnvi_tf.core.kernels`, XLA-fused inside `compiled_kernels()` (which the
model's train and test steps enter; re-exported here for them).

Evaluation without gradients (`Decoder.evaluation_log_prob`, used by the large-K
log-likelihood) has one more fast path: under a mixed-precision policy, a
decoder of Dense layers with a Bernoulli head runs its matmuls in bf16 / float16
and everything between them in float32 XLA kernels (`Decoder.fused_log_prob`).
"""
import math
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import kernels
from msnvi_tf.core import networks

tfd = tfp.distributions

__all__ = [
    "BernoulliHead",
    "NormalHead",
    "CategoricalHead",
    "Decoder",
    "HEADS",
]


class _Head(keras.layers.Layer):
  """Shared plumbing: a parameter layer producing `[N, *event_shape]` outputs."""

  def __init__(self, event_shape: Sequence[int], param_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.event_shape = tuple(int(d) for d in event_shape)
    if param_layer is None:
      param_layer = keras.Sequential([
          keras.layers.Dense(int(np.prod(self.event_shape))),
          keras.layers.Reshape(self.event_shape)], name="params")
    self.param_layer = param_layer

  def _params(self, h):
    return tf.cast(self.param_layer(h), tf.float32)  # [N, *event]

  def _independent(self, dist):
    return tfd.Independent(dist, reinterpreted_batch_ndims=len(self.event_shape))

  def log_prob(self, params, x):
    """ln p(x | params), summed over the event axes: `[..., B]` float32."""
    return self.distribution(params).log_prob(x)

  def get_config(self):
    return {**super().get_config(), "event_shape": self.event_shape}


class BernoulliHead(_Head):
  """Bernoulli likelihood from linear logits (MNIST pixels, masks).

  p(x | z) = prod_i Ber(x_i; sigmoid(logits_i(z))).
  """

  def call(self, h):
    return (self._params(h),)

  def distribution(self, params):
    (logits,) = params
    return self._independent(tfd.Bernoulli(logits=logits, dtype=tf.float32))

  def log_prob(self, params, x):
    """`kernels.bernoulli_log_prob`: TFP's value without its broadcasting and validation
    ops, with one fused kernel each way in the training step."""
    return kernels.bernoulli_log_prob(params[0], x, len(self.event_shape))

  def mean(self, params):
    return tf.sigmoid(params[0])


class NormalHead(_Head):
  """Normal likelihood, mean from a linear layer; std global or predicted.

  p(x | z) = prod_i N(x_i; mu_i(z), sigma_i^2), with
    scale="global": sigma a learned variable of shape `scale_shape` (App. H:
      pendulum and CUB share one std over all pixels / coordinates), or
    scale="dense": sigma_i(z) = softplus(linear(h)) + min_scale.

  Args:
    event_shape: shape of one observation.
    scale: "global" or "dense".
    scale_shape: shape of the global std (default: a scalar shared by all dims).
    init_scale: initial value of the std.
    min_scale: floor of the std.
    param_layer: optional layer producing the mean `[N, *event_shape]`.
  """

  def __init__(self, event_shape, scale="global", scale_shape=(), init_scale=1.,
               min_scale=1e-3, param_layer=None, **kwargs):
    super().__init__(event_shape, param_layer, **kwargs)
    if scale not in ("global", "dense"):
      raise ValueError(f"NormalHead scale must be 'global' or 'dense', got {scale!r}.")
    self.scale_kind = scale
    self.min_scale = min_scale
    self.scale_shape = tuple(scale_shape)
    raw_init = math.log(math.expm1(max(init_scale - min_scale, 1e-6)))
    self._raw_init = raw_init
    if scale == "dense":
      self.scale_layer = keras.Sequential([
          keras.layers.Dense(int(np.prod(self.event_shape)),
                             bias_initializer=keras.initializers.Constant(raw_init)),
          keras.layers.Reshape(self.event_shape)], name="scale")

  def build(self, input_shape):
    if self.scale_kind == "global":  # Created here, inside the head's name scope.
      self.raw_scale = self.add_weight(
          shape=self.scale_shape, name="raw_scale", dtype="float32",
          initializer=keras.initializers.Constant(self._raw_init))

  def call(self, h):
    loc = self._params(h)  # [N, *event]
    if self.scale_kind == "global":  # [1, ..., 1, *scale_shape]: broadcasts to loc
      ones = [1] * (1 + len(self.event_shape) - len(self.scale_shape))
      raw = tf.reshape(tf.cast(self.raw_scale, tf.float32), ones + list(self.scale_shape))
    else:
      raw = tf.cast(self.scale_layer(h), tf.float32)  # [N, *event]
    return loc, tf.nn.softplus(raw) + self.min_scale

  def distribution(self, params):
    loc, scale = params
    return self._independent(tfd.Normal(loc, scale))

  def log_prob(self, params, x):
    """`kernels.normal_log_prob`: one fused kernel each way in the training step."""
    return kernels.normal_log_prob(params[0], params[1], x, len(self.event_shape))

  def mean(self, params):
    return params[0]


class CategoricalHead(_Head):
  """Categorical likelihood over one-hot labels (the MNIST label source).

  p(x | z) = Cat(x; softmax(logits(z))), x one-hot of shape `[num_classes]`.
  """

  def __init__(self, num_classes: int, param_layer=None, **kwargs):
    super().__init__((num_classes,), param_layer, **kwargs)

  def call(self, h):
    return (self._params(h),)

  def distribution(self, params):
    (logits,) = params
    return tfd.OneHotCategorical(logits=logits, dtype=tf.float32)

  def mean(self, params):
    return tf.nn.softmax(params[0])

  def get_config(self):
    config = super().get_config()
    config["num_classes"] = config.pop("event_shape")[0]
    return config


HEADS = {"bernoulli": BernoulliHead, "normal": NormalHead,
         "categorical": CategoricalHead}


class Decoder(networks.StemAndHead):
  """One target's generative network z -> p(x_t | z).

  Args:
    stem: list of Keras layers applied to z in order.
    head: a likelihood head (`BernoulliHead`, `NormalHead`, `CategoricalHead`).
    latent_dim: Dz; the decoder is built on `[1, Dz]` at construction.
  """

  def __init__(self, stem: Sequence[keras.layers.Layer], head, latent_dim: int,
               **kwargs):
    self.latent_dim = latent_dim
    super().__init__(stem, head, (latent_dim,), **kwargs)

  @property
  def event_shape(self):
    return self.head.event_shape

  def _apply(self, z):
    """Runs the network on z of any leading shape `[..., Dz]`.

    Parameters of shape `[N, ...]` get z's leading shape; broadcast ones of
    shape `[1, ...]` (a global std) get ones there.
    """
    lead = tf.shape(z)[:-1]
    ones = [1] * (len(z.shape) - 1)
    params = self(tf.reshape(z, [-1, self.latent_dim]))  # each [N or 1, *event]
    return tuple(
        tf.reshape(p, tf.concat([ones if p.shape[0] == 1 else lead, tf.shape(p)[1:]], 0))
        for p in params)

  def distribution(self, z):
    """p(x_t | z) with batch shape `z.shape[:-1]`."""
    return self.head.distribution(self._apply(z))

  def log_prob(self, z, x):
    """ln p(x_t | z): z `[..., B, Dz]`, x `[B, *event]` -> `[..., B]` float32."""
    return self.head.log_prob(self._apply(z), tf.cast(x, tf.float32))

  def mean(self, z):
    """E[x_t | z]: z `[..., Dz]` -> `[..., *event]`."""
    return self.head.mean(self._apply(z))

  # ------------------------------------------- evaluation (no gradients)
  def fused_layers(self):
    """`(stem, head_dense)` if `fused_log_prob` applies, else None.

    It applies to a stem of plain Dense layers and a Bernoulli head whose
    parameter layer is one linear Dense layer and a Reshape (the MNIST decoders).
    """
    def plain_dense(layer):
      return (type(layer) is keras.layers.Dense  # pylint: disable=unidiomatic-typecheck
              and getattr(layer, "quantization_mode", None) is None
              and not getattr(layer, "lora_enabled", False))

    if not isinstance(self.head, BernoulliHead) or not all(
        plain_dense(layer) for layer in self.stem):
      return None
    layers = getattr(self.head.param_layer, "layers", None)
    if (not layers or len(layers) != 2 or not plain_dense(layers[0])
        or layers[0].activation is not keras.activations.linear
        or not isinstance(layers[1], keras.layers.Reshape)
        or tuple(layers[1].target_shape) != self.event_shape):
      return None
    return list(self.stem), layers[0]

  def fused_log_prob(self, z, x):
    """`log_prob`'s value computed layer by layer: matmuls in the compute dtype,
    bias + activation and the head's bias + log-probability in float32.

    Inside `compiled_kernels()` each of those float32 steps is one XLA kernel.
    No hand-written gradient: for evaluation. Needs `fused_layers()`.

    Args:
      z: `[..., B, Dz]`; x: `[B, *event]`.

    Returns:
      `[..., B]` float32.
    """
    fused = self.fused_layers()
    if fused is None:
      raise ValueError(f"{self.name}: fused_log_prob needs a Dense stem and a "
                       "Bernoulli head of one Dense layer.")
    stem, head_dense = fused
    compiled = kernels.compiled_now()
    dtype = self.compute_dtype

    def bias(layer):
      if layer.bias is None:
        return tf.zeros([layer.units], tf.float32)
      return tf.cast(tf.convert_to_tensor(layer.bias), tf.float32)

    def kernel(layer):
      return tf.cast(tf.convert_to_tensor(layer.kernel), dtype)

    h = tf.cast(tf.reshape(z, [-1, self.latent_dim]), dtype)  # [N, Dz]
    for layer in stem:
      h = kernels.bias_activation(compiled)(tf.matmul(h, kernel(layer)),
                                            bias(layer), layer.activation)
    logits = tf.matmul(h, kernel(head_dense))  # [N, prod(event)], compute dtype
    logits = tf.reshape(logits, tf.concat([tf.shape(z)[:-1], self.event_shape], 0))
    return kernels.bernoulli_value_with_bias(compiled)(
        logits, tf.reshape(bias(head_dense), self.event_shape),
        tf.cast(x, tf.float32), len(self.event_shape))

  def evaluation_log_prob(self, z, x):
    """ln p(x_t | z) where no gradient is needed: `log_prob`, faster where it can be.

    Inside `compiled_kernels()`, a decoder under a mixed-precision policy that
    `fused_layers()` accepts runs `fused_log_prob`: TF's bf16 elementwise CPU
    kernels (bias, elu) are slower than its float32 ones, which made
    mixed_bfloat16 MNIST-TB evaluation slower than float32 with `log_prob`
    and faster with this (bench/step_time.py measures both). Elsewhere:
    `log_prob`.
    """
    if (kernels.compiled_now() and self.compute_dtype != "float32"
        and self.fused_layers() is not None):
      return self.fused_log_prob(z, x)
    return self.log_prob(z, x)
