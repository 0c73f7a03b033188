"""Log-probability kernels of the Bernoulli and Normal heads, fused under XLA.

The Bernoulli and Normal log-probabilities, the hot spots of the MNIST and CUB
training steps, have hand-written gradients and, inside `compiled_kernels()`
(which the model's train and test steps enter), run as XLA-fused kernels.
Outside it (e.g. when a SavedModel is traced for TF Serving, whose CPU build
has XLA JIT off by default) the same math runs as plain TensorFlow ops.

`bias_activation` and `bernoulli_value_with_bias` are the float32 steps of
`likelihoods.Decoder.fused_log_prob` (evaluation without gradients).
"""
import contextlib
import math
import threading

import tensorflow as tf

__all__ = [
    "compiled_kernels",
    "compiled_now",
    "bernoulli_log_prob",
    "normal_log_prob",
    "bias_activation",
    "bernoulli_value_with_bias",
]

_KERNELS = threading.local()


@contextlib.contextmanager
def compiled_kernels(enabled: bool = True):
  """Heads traced inside this context use XLA-compiled log-probability kernels.

  The flag is read when a function is traced and is per thread (tf.distribute
  traces each replica in its own thread, inside the replica function).
  """
  previous = compiled_now()
  _KERNELS.enabled = enabled
  try:
    yield
  finally:
    _KERNELS.enabled = previous


def compiled_now() -> bool:
  """Whether this thread is inside `compiled_kernels()`."""
  return getattr(_KERNELS, "enabled", False)


def _per_example(upstream, event_ndims):
  """`[..., B]` -> `[..., B, 1, ..., 1]`: broadcasts against `[..., B, *event]`."""
  return tf.reshape(upstream, tf.concat([tf.shape(upstream), [1] * event_ndims], 0))


def _kernel(fn):
  """`kernel(compiled)` is `fn` itself or `fn` as one XLA-compiled function."""
  jitted = tf.function(fn, jit_compile=True, autograph=False)
  return lambda compiled: jitted if compiled else fn


@_kernel
def _bernoulli_value(logits, x, event_ndims):
  """Log-probability and sigmoid(logits), sharing one sigmoid."""
  probs = tf.sigmoid(logits)
  # softplus(l) = relu(l) - ln max(sigmoid(l), 1 - sigmoid(l)), exact and stable:
  # the max lies in [1/2, 1].
  log_prob = x * logits - tf.nn.relu(logits) + tf.math.log(tf.maximum(probs, 1. - probs))
  return tf.reduce_sum(log_prob, list(range(-event_ndims, 0))), probs


@_kernel
def _bernoulli_grad(upstream, x, probs, event_ndims):
  """d/dl of sum_i x_i l_i - softplus(l_i) is x_i - sigmoid(l_i), times upstream."""
  upstream = _per_example(upstream, event_ndims)
  return upstream * (x - probs)


@_kernel
def bias_activation(h, bias, activation):
  """activation(h + bias) in float32, returned in h's dtype (one pass under XLA)."""
  return tf.cast(activation(tf.cast(h, tf.float32) + bias), h.dtype)


@_kernel
def bernoulli_value_with_bias(logits, bias, x, event_ndims):
  """`_bernoulli_value`'s log-probability of logits + bias, without the sigmoid
  output (nothing needs it without gradients): sum of x l - relu(l) - ln(1 + e^-|l|)."""
  logits = tf.cast(logits, tf.float32) + bias
  log_prob = (x * logits - tf.nn.relu(logits)
              - tf.math.log(1. + tf.exp(-tf.abs(logits))))
  return tf.reduce_sum(log_prob, list(range(-event_ndims, 0)))


@_kernel
def _normal_value(loc, scale, x, event_ndims):
  """sum over the event axes of ln N(x; loc, scale^2); scale broadcasts."""
  z = (x - loc) / scale
  log_prob = -0.5 * tf.square(z) - tf.math.log(scale) - 0.5 * math.log(2. * math.pi)
  return tf.reduce_sum(log_prob, list(range(-event_ndims, 0)))


@_kernel
def _normal_grad(upstream, loc, scale, x, event_ndims):
  """Gradients w.r.t. loc, (x - loc) / scale^2, and scale, ((x - loc)^2 / scale^2 - 1)
  / scale, times upstream; the scale's summed down to its (broadcast) shape."""
  upstream = _per_example(upstream, event_ndims)
  z = (x - loc) / scale
  grad_loc = upstream * z / scale
  grad_scale = upstream * (tf.square(z) - 1.) / scale
  _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(grad_scale), s1=tf.shape(scale))
  return grad_loc, tf.reshape(tf.reduce_sum(grad_scale, axes), tf.shape(scale))


def normal_log_prob(loc, scale, x, event_ndims: int):
  """sum_i ln N(x_i; loc_i, scale_i^2) over the last `event_ndims` axes.

  -0.5 ((x - loc) / scale)^2 - ln scale - 0.5 ln 2 pi per coordinate, with a
  hand-written gradient; `scale` may be a full tensor or broadcast (a global
  std of shape `[1, ..., 1]`), and is never materialised at loc's shape.

  Args:
    loc: `[..., B, *event]` float32.
    scale: float32, broadcasting against `loc`.
    x: `[B, *event]` float32 (data: no gradient).
    event_ndims: number of event axes summed over.

  Returns:
    `[..., B]` float32.
  """
  compiled = compiled_now()  # see bernoulli_log_prob

  @tf.custom_gradient
  def log_prob(loc, scale):
    value = _normal_value(compiled)(loc, scale, x, event_ndims)  # [..., B]
    return value, lambda upstream: _normal_grad(compiled)(upstream, loc, scale, x,
                                                          event_ndims)
  return log_prob(loc, scale)


def bernoulli_log_prob(logits, x, event_ndims: int):
  """sum_i x_i l_i - softplus(l_i) over the last `event_ndims` axes.

  ln Ber(x; sigmoid(l)) for x in {0, 1} (and its continuous extension for x in
  [0, 1]), with a hand-written gradient x - sigmoid(l) with respect to the
  logits (x is data: it gets no gradient).

  Args:
    logits: `[..., B, *event]` float32.
    x: `[B, *event]` float32, broadcasting against `logits`.
    event_ndims: number of event axes summed over.

  Returns:
    `[..., B]` float32.
  """
  # Read now: the gradient is built later, after the caller left the context.
  compiled = compiled_now()

  @tf.custom_gradient
  def log_prob(logits):
    # value [..., B], probs [..., B, *event]
    value, probs = _bernoulli_value(compiled)(logits, x, event_ndims)
    return value, lambda upstream: _bernoulli_grad(compiled)(upstream, x, probs, event_ndims)
  return log_prob(logits)
