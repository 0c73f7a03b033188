"""Experiment configs, one module per data set (paper Tables 3-6).

Each module's `get_config(...)` returns the paper's config of its data sets and
`VARIANTS` their named variants (e.g. MNIST's "fast" schedule); they are
registered with the data sets by `msnvi_tf/__init__.py`. `get_config(name,
variant)` returns the config of any registered data set, built-in or a user's
(`msnvi_tf.register_dataset`). The fields of every data set are declared in
`msnvi_tf.runtime.config.FIELDS`, a data set's own in its module's `FIELDS`.
"""
from msnvi_tf import registry

__all__ = ["get_config"]


def get_config(name: str, variant: str = "paper"):
  """The config of data set `name`: the paper's, or a named `variant` of it.

  A variant is a set of fields that replace the paper's (e.g. a faster
  learning-rate schedule); "paper" is the config as the paper gives it.

  Raises:
    ValueError: unknown data set or variant.
  """
  entry = registry.get(name)
  config = entry.config()
  if variant != "paper":
    variants = entry.variants
    if variant not in variants:
      raise ValueError(f"Unknown variant {variant!r} of {name}; choose one of "
                       f"{['paper'] + sorted(variants)}.")
    config.update(variants[variant])
  return config
