"""The package's top level: every module imports; `register_dataset` and its names."""
import importlib
import pkgutil

import pytest

import configs
import msnvi_tf
from msnvi_tf import registry
from msnvi_tf.data import mnist


@pytest.mark.smoke
def test_every_module_of_the_package_and_the_configs_imports():
  names = [m.name for m in pkgutil.walk_packages(msnvi_tf.__path__, "msnvi_tf.")]
  assert {"msnvi_tf.core.model", "msnvi_tf.runtime.training",
          "msnvi_tf.experiments.dispatch"} <= set(names)
  for name in names:
    importlib.import_module(name)
  assert set(registry.names()) >= {"toy", "mnist_tb", "mnist_qu", "mnist_no", "pendulum",
                                   "cub", "shapes"}
  for name in registry.names():
    assert configs.get_config(name).dataset == name


def test_registering_a_taken_name_or_a_non_function_is_refused():
  with pytest.raises(ValueError, match="already registered"):
    msnvi_tf.register_dataset("mnist_tb", data=mnist.make_datasets,
                              architecture=lambda c: None, config=lambda: None)
  with pytest.raises(ValueError, match="data must be a function"):
    msnvi_tf.register_dataset("new", data=3, architecture=lambda c: None,
                              config=lambda: None)
  with pytest.raises(ValueError, match=r"experiment must be an Experiment\(evaluate, plot\)"):
    msnvi_tf.register_dataset("new", data=mnist.make_datasets, architecture=lambda c: None,
                              config=lambda: None, experiment=lambda runs, out: [])
  assert "new" not in registry.names()


def test_every_built_in_data_set_has_its_paper_experiment():
  built_in = ("toy", "pendulum", "mnist_tb", "mnist_qu", "mnist_no", "cub", "shapes")
  experiments = {name: registry.get(name).experiment for name in built_in}  # other tests
  # register data sets of their own (without an experiment) in the same process
  assert experiments["mnist_tb"] is experiments["mnist_no"]  # one package, three variants
  assert experiments["cub"] is experiments["shapes"]
  assert experiments["toy"].evaluate is None and experiments["toy"].plot is not None
  assert all(e.evaluate and e.plot for n, e in experiments.items() if n != "toy")
  assert experiments["mnist_qu"].reference(configs.get_config("mnist_qu")) == 108.07
  assert experiments["pendulum"].reference is None


def test_unknown_dataset_names_the_registered_ones_and_how_to_add_one():
  with pytest.raises(ValueError, match="register_dataset") as error:
    configs.get_config("mnist_rotated")
  assert "mnist_tb" in str(error.value)
  with pytest.raises(ValueError, match="dataset_module 'no/such.py': no such file"):
    registry.import_dataset_module("no/such.py")
  with pytest.raises(ValueError, match="dataset_module 'no_such_module' cannot be imported"):
    registry.import_dataset_module("no_such_module")
