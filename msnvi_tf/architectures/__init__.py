"""Network architectures, one module per data set, each exposing `build_model(config)`.

`build_model` returns an uncompiled `MultiSourceVAE` whose encoders, decoders
and objective follow the config (paper App. H).
"""
from msnvi_tf.runtime.config import dataset_module

__all__ = ["ARCHITECTURE_MODULES", "build_model", "dense_stem", "encoders_for"]

# config.dataset -> module under msnvi_tf.architectures.
ARCHITECTURE_MODULES = {
    "toy": "toy",
    "pendulum": "pendulum",
    "mnist_tb": "mnist",
    "mnist_qu": "mnist",
    "mnist_no": "mnist",
    "cub": "cub",
    "shapes": "cub",
}


def build_model(config):
  """The `MultiSourceVAE` of `config.dataset`."""
  return dataset_module(ARCHITECTURE_MODULES, __name__, config.dataset).build_model(config)


def dense_stem(hidden, activation, prefix):
  """Dense layers of widths `hidden` with one activation (Tables 3-5)."""
  import keras  # pylint: disable=g-import-not-at-top
  return [keras.layers.Dense(width, activation=activation, name=f"{prefix}_{i}")
          for i, width in enumerate(hidden)]


def encoders_for(config, source_shapes, make_stem):
  """Encoders for the config's objective: one per source, or the IWAE's one.

  Args:
    config: needs `objective`, `latent_dim`, `min_scale`, `iwae_sources`.
    source_shapes: `{source: per-example shape}`, in source order.
    make_stem: callable name -> list of Keras layers.

  Returns:
    `(encoders, encoder_inputs)` for `MultiSourceVAE`. For objective "iwae",
    one encoder: on the concatenation of `iwae_sources` (default: all sources;
    hard-wired), or on a single source if `iwae_sources` names one.
  """
  from msnvi_tf.core import beliefs  # pylint: disable=g-import-not-at-top
  if config.objective != "iwae":
    encoders = {s: beliefs.Encoder(make_stem(f"enc_{s}"), config.latent_dim, shape,
                                   config.min_scale, name=f"encoder_{s}")
                for s, shape in source_shapes.items()}
    return encoders, None
  keys = list(config.iwae_sources or source_shapes)
  unknown = [k for k in keys if k not in source_shapes]
  if unknown:
    raise ValueError(f"iwae_sources names unknown source(s) {unknown}; sources "
                     f"are {list(source_shapes)}.")
  shapes = [tuple(source_shapes[k]) for k in keys]
  if any(s[:-1] != shapes[0][:-1] for s in shapes):
    raise ValueError(f"Cannot concatenate sources {keys} of shapes {shapes} "
                     "along their last axis.")
  shape = shapes[0][:-1] + (sum(s[-1] for s in shapes),)
  name = keys[0] if len(keys) == 1 else "+".join(keys)
  encoder = beliefs.Encoder(make_stem("enc_iwae"), config.latent_dim, shape,
                            config.min_scale, name="encoder_iwae")
  return {name: encoder}, {name: keys}
