"""The MNIST models (App. H, Table 4): encoders per variant and objective, one step each."""
import keras
import numpy as np
import pytest

import configs
from msnvi_tf import architectures
from msnvi_tf.data import mnist
from msnvi_tf.runtime import training

from conftest import make_mnist_config

pytestmark = pytest.mark.usefixtures("keras_seed")


def test_iwae_sources_from_a_flag_string_or_a_list_give_the_same_encoder():
  no = configs.get_config("mnist_no").override(["objective=iwae", "hidden=[8]"])
  # `--set iwae_sources=noisy0` gives the string "noisy0", not a list.
  for value in ("noisy0", "['noisy0']"):
    model = architectures.build_model(no.override([f"iwae_sources={value}"]))
    assert list(model.encoders) == ["noisy0"], value
  model = architectures.build_model(no.override(["iwae_sources=noisy1, noisy2"]))
  assert list(model.encoders) == ["noisy1+noisy2"]
  with pytest.raises(ValueError, match=r"^iwae_sources must name some of \['noisy0', "
                     r"'noisy1', 'noisy2', 'noisy3'\] \(comma-separated\); got \('noisy9',\)"):
    architectures.build_model(no.override(["iwae_sources=noisy9"]))


@pytest.mark.parametrize("variant, objective, extra", [
    ("mnist_tb", "hybrid", ("use_label=True",)),
    ("mnist_qu", "ind", ()),
    ("mnist_no", "poe", ()),
    ("mnist_no", "iwae", ("iwae_sources=['noisy0']",)),
])
def test_one_train_step_and_evaluate_per_variant(variant, objective, extra):
  config = make_mnist_config(variant, f"objective={objective}", *extra)
  train_ds, eval_ds = mnist.make_datasets(config)
  model = architectures.build_model(config)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  expected_sources = (["noisy0"] if objective == "iwae"
                      else list(mnist.source_shapes(variant, config.use_label)))
  assert model.sources == expected_sources
  assert model.targets == list(mnist.target_shapes(variant, config.use_label))
  before = [v.numpy().copy() for v in model.trainable_variables]
  logs = model.train_step(next(iter(train_ds)))
  assert np.isfinite(float(logs["loss"]))
  assert any(np.any(b != v.numpy()) for b, v in zip(before, model.trainable_variables))
  results = training.evaluate_bounds(model, eval_ds)
  for name in ("ind", "moe", "poe"):
    assert np.isfinite(results[name]) and results[name] < 0.
  if objective == "iwae":  # A single encoder: every integration is that belief.
    assert results["ind"] == pytest.approx(results["poe"], abs=5.)


def test_table4_defaults_stay_the_papers():
  for variant in ("mnist_tb", "mnist_qu", "mnist_no"):
    config = configs.get_config(variant)
    assert (config.hidden, config.activation, config.num_samples, config.latent_dim,
            config.batch_size, config.learning_rate, config.num_steps) == (
                (200, 200), "elu", 16, 16, 128, 5e-5, 250_000)
