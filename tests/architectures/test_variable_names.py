"""Every data set's architecture, under every objective, names its variables uniquely."""
import pytest


@pytest.mark.parametrize("dataset", ["toy", "mnist_tb", "pendulum", "shapes"])
@pytest.mark.parametrize("objective", ["hybrid", "iwae"])
def test_every_variable_has_a_unique_tensorflow_name(dataset, objective):
  # TF Serving's loader finds variables by name; duplicates break the export.
  import configs  # pylint: disable=g-import-not-at-top
  from msnvi_tf import architectures  # pylint: disable=g-import-not-at-top
  model = architectures.build_model(
      configs.get_config(dataset).override([f"objective={objective}"]))
  names = [v.value.name for v in model.variables]
  assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
