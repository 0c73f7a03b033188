"""Network architectures, one module per data set, and a generic dense builder.

Each data set's module exposes `build_model(config) -> MultiSourceVAE`, the
`architecture` of its registration (`msnvi_tf.register_dataset`). A new data
set of vectors or small images needs none: `dense_model` builds dense encoders
and decoders (App. H's MLPs) from the sources' shapes and the targets'
likelihood heads.
"""
from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

import keras

from msnvi_tf import registry
from msnvi_tf.core import beliefs
from msnvi_tf.core import likelihoods
from msnvi_tf.core import model as model_lib

__all__ = ["build_model", "dense_model", "dense_stem", "encoders_for", "assemble",
           "parse_names"]

# Likelihood heads `dense_model` makes by name: name -> fn(shape) -> head layer.
HEADS = {
    "bernoulli": likelihoods.BernoulliHead,
    "normal": likelihoods.NormalHead,
    "categorical": lambda shape: likelihoods.CategoricalHead(shape[-1]),
}


def parse_names(names: Union[str, Sequence[str]], what: str,
                known: Optional[Iterable[str]] = None) -> Tuple[str, ...]:
  """`"image,mask"`, `"noisy0"` or `("image", "mask")` -> a tuple of source names.

  Args:
    names: a comma-separated string (as `--set iwae_sources=noisy0` gives) or names.
    what: the config field, for the error message.
    known: the names allowed (default: any).

  Raises:
    ValueError: no names, or one not in `known`.
  """
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  names = tuple(names)
  known = None if known is None else list(known)
  if not names or (known is not None and any(n not in known for n in names)):
    allowed = "source names" if known is None else f"some of {known}"
    raise ValueError(f"{what} must name {allowed} (comma-separated); got {names!r}.")
  return names


def build_model(config):
  """The `MultiSourceVAE` of `config.dataset` (its registered architecture)."""
  return registry.for_config(config).build_model(config)


def dense_stem(hidden, activation, prefix, flatten: bool = False):
  """Dense layers of widths `hidden` with one activation (Tables 3-5).

  With `flatten`, a Flatten layer first (for image inputs).
  """
  layers = [keras.layers.Flatten(name=f"{prefix}_flatten")] if flatten else []
  return layers + [keras.layers.Dense(width, activation=activation, name=f"{prefix}_{i}")
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
  if config.objective != "iwae":
    encoders = {s: beliefs.Encoder(make_stem(f"enc_{s}"), config.latent_dim, shape,
                                   config.min_scale, name=f"encoder_{s}")
                for s, shape in source_shapes.items()}
    return encoders, None
  keys = list(parse_names(config.iwae_sources, "iwae_sources", source_shapes)
              if config.iwae_sources else source_shapes)
  shapes = [tuple(source_shapes[k]) for k in keys]
  if any(s[:-1] != shapes[0][:-1] for s in shapes):
    raise ValueError(f"Cannot concatenate sources {keys} of shapes {shapes} "
                     "along their last axis.")
  shape = shapes[0][:-1] + (sum(s[-1] for s in shapes),)
  name = keys[0] if len(keys) == 1 else "+".join(keys)
  encoder = beliefs.Encoder(make_stem("enc_iwae"), config.latent_dim, shape,
                            config.min_scale, name="encoder_iwae")
  return {name: encoder}, {name: keys}


def assemble(config, encoders, encoder_inputs, decoders, source_shapes):
  """The `MultiSourceVAE` of `encoders` and `decoders` with the config's objective.

  Args:
    config: needs `latent_dim`, `objective`, `num_samples`, `eval_num_samples`,
      `hybrid_weight`, `seed`.
    encoders, encoder_inputs: from `encoders_for`.
    decoders: `{target: likelihoods.Decoder}`.
    source_shapes: `{source: per-example shape}`.
  """
  return model_lib.MultiSourceVAE(
      encoders, decoders, config.latent_dim, objective=config.objective,
      num_samples=config.num_samples, eval_num_samples=config.eval_num_samples,
      hybrid_weight=config.hybrid_weight, encoder_inputs=encoder_inputs,
      seed=config.seed, source_shapes=source_shapes)


def dense_model(config, source_shapes: Mapping[str, tuple],
                heads: Mapping[str, Union[str, keras.layers.Layer]],
                target_shapes: Optional[Mapping[str, tuple]] = None):
  """A dense multi-source VAE from source shapes and likelihood heads.

  Every encoder and decoder is a stem of dense layers of widths `config.hidden`
  with `config.activation` (sources of rank > 1 are flattened first), then the
  belief head (encoders) or the target's likelihood head (decoders), as in
  App. H.

  Args:
    config: the fields of `encoders_for` and `assemble`, and `hidden`, `activation`.
    source_shapes: `{source: per-example shape}`, in source order.
    heads: `{target: head}`: a likelihood head layer (`likelihoods.BernoulliHead`,
      `NormalHead`, `CategoricalHead`, or your own), or one of the names in
      `HEADS` ("bernoulli", "normal", "categorical"), made for the target's
      shape.
    target_shapes: `{target: per-example shape}` of named heads whose target
      is not a source (default: a target's shape is its source's).

  Returns:
    An uncompiled `MultiSourceVAE`.

  Raises:
    ValueError: an unknown head name, or a named head without a shape.
  """
  shapes = {**source_shapes, **(target_shapes or {})}

  def stem(prefix, shape=(1,)):
    return dense_stem(config.hidden, config.activation, prefix, flatten=len(shape) > 1)

  encoders, encoder_inputs = encoders_for(
      config, source_shapes, lambda name: stem(name, _input_shape(name, source_shapes)))
  decoders = {}
  for target, head in heads.items():
    if isinstance(head, str):
      if head not in HEADS:
        raise ValueError(f"Unknown likelihood head {head!r} for target {target!r}; "
                         f"choose one of {sorted(HEADS)} or pass a head layer.")
      if target not in shapes:
        raise ValueError(f"Target {target!r} is not a source: give its shape in "
                         "target_shapes.")
      head = HEADS[head](tuple(shapes[target]))
    decoders[target] = likelihoods.Decoder(stem(f"dec_{target}"), head, config.latent_dim,
                                           name=f"decoder_{target}")
  return assemble(config, encoders, encoder_inputs, decoders, source_shapes)


def _input_shape(stem_name: str, source_shapes) -> tuple:
  """The input shape behind an encoder stem's name ("enc_<source>" or "enc_iwae")."""
  source = stem_name[len("enc_"):]
  return tuple(source_shapes.get(source, next(iter(source_shapes.values()))))
