"""msnvi_tf: Multi-Source Neural Variational Inference (Kurle et al., AAAI 2019).

Sub-packages:
  core          the paper's maths, no I/O: beliefs, likelihoods, integration
                (PoE, MoE, robust), conflict, objectives, MultiSourceVAE
  runtime       how it runs: config, training loop, workdir, hardware, export
  experiments   one module per paper experiment: tables and figures
  data, architectures   one module per data set
  registry      data sets by name: `register_dataset` adds your own

The built-in data sets and the robust integration are registered here, by
explicit calls.
"""
import importlib

from msnvi_tf.core import integration as _integration
from msnvi_tf.core import robust as _robust
from msnvi_tf.registry import Experiment
from msnvi_tf.registry import register_dataset

__all__ = ["Experiment", "register_dataset"]
__version__ = "0.1.0"

_integration.register("robust", _robust.robust)


def _config(module: str, *args):
  """A config function imported on first use: `configs.<module>.get_config(*args)`."""
  return lambda: importlib.import_module(f"configs.{module}").get_config(*args)


# name: (data and architecture module, config module and experiment package,
# argument of its get_config, (train, test) split sizes of real data sets).
_BUILT_IN = {
    "toy": ("toy", "toy", (), None),
    "pendulum": ("pendulum", "pendulum", (), None),
    "mnist_tb": ("mnist", "mnist", ("mnist_tb",), (60_000, 10_000)),
    "mnist_qu": ("mnist", "mnist", ("mnist_qu",), (60_000, 10_000)),
    "mnist_no": ("mnist", "mnist", ("mnist_no",), (60_000, 10_000)),
    "cub": ("cub", "cub", ("cub",), (3_000, 3_033)),  # CUB-200 2010.
    "shapes": ("shapes", "cub", ("shapes",), None),  # architecture: cub's.
}
# Data sets with healthy sequences (`registry`: a latent filter is fitted in training).
_SEQUENCES = {"pendulum": "msnvi_tf.data.pendulum:healthy_sequences"}
for _name, (_module, _experiment, _args, _sizes) in _BUILT_IN.items():
  register_dataset(
      _name, data=f"msnvi_tf.data.{_module}:make_datasets",
      architecture=f"msnvi_tf.architectures.{_experiment}:build_model",
      config=_config(_experiment, *_args), variants=f"configs.{_experiment}:VARIANTS",
      split_sizes=_sizes, experiment=f"msnvi_tf.experiments.{_experiment}:EXPERIMENT",
      sequences=_SEQUENCES.get(_name))
