"""Perspective pendulum seen by three cameras (Sec. 5.3, Table 5)."""
from msnvi_tf.runtime import config as config_lib

__all__ = ["get_config", "VARIANTS"]

# Named variants beside the paper's config (bin/train --variant=...): none yet.
VARIANTS = {}


def get_config():
  return config_lib.make_config(
      # What to train.
      dataset="pendulum",
      objective="ind",  # Sec. 5.3 trains L_ind.
      iwae_sources=None,  # IWAE: None = hard-wired encoder on all cameras.
      # Model (Table 5): encoders tanh 32x2 on the flattened image, decoder tanh
      # 256/64/16 to a Normal over (x, y) with a global std (App. H), Dz = 2.
      encoder_hidden=(32, 32),
      decoder_hidden=(256, 64, 16),
      activation="tanh",
      latent_dim=2,
      decoder_init_scale=0.1,
      # Small networks: bf16 ran slower than float32 (README, "Speed, precision
      # and scale") and costs precision, so not "auto".
      precision="float32",
      # Optimisation (Table 5): Adam(5e-5, 0.9, 0.999), batch 16, K = 16, 50k steps.
      num_samples=16,
      eval_num_samples=16,
      batch_size=16,
      learning_rate=5e-5,
      num_steps=50_000,
      # Data (Sec. 5.3): R = 1, cameras at D = 2R, tilts 45 deg, 32x32 pixels,
      # pixel noise std 0.1. See msnvi_tf/data/pendulum.py.
      image_size=32,
      pendulum_radius=1.0,
      camera_distance=2.0,
      camera_tilt_deg=45.0,
      focal_length=22.0,  # pixels: the whole orbit stays inside every image.
      bob_radius=0.15,
      rod_width=0.5,
      rod_intensity=0.5,
      noise_std=0.1,
      train_size=10_000,
      eval_size=5_000,  # also the healthy frames that calibrate the conflict alarms.
      data_dir="",  # synthetic: unused.
      # Loop.
      steps_per_call=250,
      log_every=2_500,
      eval_every=5_000,
      checkpoint_every=5_000,
      eval_batch_size=500,
  )
