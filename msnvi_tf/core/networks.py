"""`StemAndHead`: the shape shared by encoders and decoders (App. H).

Every inference and generative network of the paper is a "stem" of layers
followed by a head (the belief head of an encoder, the likelihood head of a
decoder). `StemAndHead` builds its layers eagerly at construction, each inside
its own name scope, so every variable has a unique TensorFlow name
("encoder_x/enc_x_0/kernel"). Unique names matter beyond readability: the
TF1-style SavedModel loader that TF Serving and `saved_model_cli run` use
resolves variables by name, and colliding names break the export.
"""
from typing import Sequence

import keras

__all__ = ["StemAndHead"]


class StemAndHead(keras.Model):
  """Layers `stem` applied in order, then `head`; built on one example of `input_shape`.

  Args:
    stem: list of Keras layers.
    head: the final layer (its output is the network's output).
    input_shape: per-example input shape (no batch axis).
  """

  def __init__(self, stem: Sequence[keras.layers.Layer], head: keras.layers.Layer,
               input_shape: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.stem = list(stem)
    self.head = head
    example = keras.ops.zeros((1,) + tuple(int(d) for d in input_shape))
    h = example
    with keras.name_scope(self.name):
      for layer in self.stem + [self.head]:
        h = layer(h)
    self(example)

  def call(self, x):
    h = x
    for layer in self.stem:
      h = layer(h)
    return self.head(h)
