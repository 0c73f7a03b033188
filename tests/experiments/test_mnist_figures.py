"""Figs. 3a, 4 and 7 of an MNIST-QU model: written, titled, Fig. 4's curves saved."""
import json
import os

import numpy as np

from msnvi_tf import architectures
from msnvi_tf.experiments.mnist import figures
from msnvi_tf.runtime import optimizers

from conftest import make_mnist_config


def test_mnist_figures_name_data_set_model_and_step_and_save_fig4s_curves(
    tmp_path, monkeypatch):
  config = make_mnist_config("mnist_qu", "objective=hybrid")  # K = 4: column hybrid_k4
  model = optimizers.compile_model(architectures.build_model(config), config)
  model.trained_steps = 7
  titles = {}
  grid = figures.image_grid

  def titled_grid(rows, path, row_labels=None, title=""):
    titles[os.path.basename(path)] = title
    return grid(rows, path, row_labels, title)

  monkeypatch.setattr(figures, "image_grid", titled_grid)
  paths = figures.plot_mnist_figures(model, config, str(tmp_path), num_examples=12,
                                     chain_steps=3, num_samples=2, chain_figure_steps=10)
  assert sorted(paths) == ["fig3a", "fig4", "fig7"]
  for path in paths.values():
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert titles["fig3a_mnist_qu.png"].startswith("Fig. 3a, mnist_qu, hybrid_k4 at step 7")
  assert titles["fig7_mnist_qu.png"] == (
      "Fig. 7, mnist_qu, hybrid_k4 at step 7: Markov chain imputing q3: chain means at "
      "steps 0, 5, 10")
  curves = json.load(open(os.path.join(str(tmp_path), "imputation_mnist_qu.json")))
  assert len(curves["hybrid_k4"]["chain"]) == 4  # the start and 3 steps
  assert np.isfinite(curves["hybrid_k4"]["chain"]).all() and curves["hybrid_k4"]["eq6"] < 0.
