"""Toy mixture of bivariate Gaussians (Sec. 5.1, Table 3)."""
from msnvi_tf.runtime import config as config_lib
from msnvi_tf.runtime.config import Field

__all__ = ["FIELDS", "get_config", "VARIANTS"]

# The toy's own fields (msnvi_tf/data/toy.py, msnvi_tf/architectures/toy.py), with
# the paper's values as defaults; the common ones are in config_lib.FIELDS.
FIELDS = {
    # Model (Table 3): tanh 32x2 stems.
    "hidden": Field((32, 32), "widths of the encoders' and decoders' dense stems"),
    "activation": Field("tanh", "activation of the stems"),
    "decoder_scale": Field("dense", "std of the decoders' Normal: dense (from a linear "
                           "layer, App. H) or global", config_lib.choice(("dense", "global"))),
    "decoder_init_scale": Field(0.1, "initial std of the decoders' Normal: the data noise "
                                "level (1.0 collapses L_ind to the prior)", config_lib.POSITIVE),
    # Data: components on the unit circle.
    "num_components": Field(8, "Gaussian components on the unit circle", config_lib.COUNT),
    "component_std": Field(0.1, "std of each component", config_lib.POSITIVE),
}

# Named variants beside the paper's config (bin/train --variant=...): none yet.
VARIANTS = {}


def get_config():
  """The Table 3 config."""
  return config_lib.make_config(
      FIELDS,
      # What to train.
      dataset="toy",
      objective="ind",  # Sec. 5.1 trains L_ind.
      iwae_sources=None,  # IWAE: None = hard-wired encoder on all sources.
      # Model (Table 3): Dz = 2.
      latent_dim=2,
      # Small networks: bf16 ran slower than float32 (README, "Speed, precision
      # and scale") and costs precision, so not "auto".
      precision="float32",
      # Optimisation (Table 3): Adam(1e-4, 0.9, 0.999), batch 32, K = 8, 25k steps.
      num_samples=8,
      eval_num_samples=8,
      batch_size=32,
      learning_rate=1e-4,
      num_steps=25_000,
      # Data.
      train_size=100_000,
      eval_size=2_000,
      data_dir="",  # synthetic: unused.
      # Loop.
      steps_per_call=250,
      log_every=2_500,
      eval_every=1_000,  # 26 points (step 0 too): a curve in TensorBoard, 0.1 s each.
      checkpoint_every=5_000,
      eval_batch_size=500,
  )
