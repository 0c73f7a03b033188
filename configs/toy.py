"""Toy mixture of bivariate Gaussians (Sec. 5.1, Table 3)."""
from msnvi_tf.runtime import config as config_lib

__all__ = ["get_config", "VARIANTS"]

# Named variants beside the paper's config (bin/train --variant=...): none yet.
VARIANTS = {}


def get_config():
  return config_lib.make_config(
      # What to train.
      dataset="toy",
      objective="ind",  # Sec. 5.1 trains L_ind.
      iwae_sources=None,  # IWAE: None = hard-wired encoder on all sources.
      # Model (Table 3): tanh 32x2 stems, Dz = 2.
      hidden=(32, 32),
      activation="tanh",
      latent_dim=2,
      decoder_scale="dense",  # "dense": std from a linear layer (App. H); or "global".
      decoder_init_scale=0.1,  # the data noise level; 1.0 collapses L_ind to the prior.
      # Small networks: bf16 ran slower than float32 (README, "Speed, precision
      # and scale") and costs precision, so not "auto".
      precision="float32",
      # Optimisation (Table 3): Adam(1e-4, 0.9, 0.999), batch 32, K = 8, 25k steps.
      num_samples=8,
      eval_num_samples=8,
      batch_size=32,
      learning_rate=1e-4,
      num_steps=25_000,
      # Data: 8 components on the unit circle, std 0.1.
      num_components=8,
      component_std=0.1,
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
