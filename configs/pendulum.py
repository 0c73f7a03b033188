"""Perspective pendulum seen by three cameras (Sec. 5.3, Table 5)."""
from msnvi_tf.runtime import config as config_lib
from msnvi_tf.runtime.config import Field

__all__ = ["FIELDS", "get_config", "VARIANTS"]

# The pendulum's own fields (msnvi_tf/data/pendulum.py, msnvi_tf/architectures/
# pendulum.py), with the paper's values as defaults; the common ones are in
# config_lib.FIELDS.
FIELDS = {
    # Model (Table 5): encoders tanh 32x2 on the flattened image, decoder tanh
    # 256/64/16 to a Normal over (x, y) with a global std (App. H).
    "encoder_hidden": Field((32, 32), "widths of the encoders' dense stems"),
    "decoder_hidden": Field((256, 64, 16), "widths of the decoder's dense stem"),
    "activation": Field("tanh", "activation of the stems"),
    "decoder_init_scale": Field(0.1, "initial std of the decoder's Normal",
                                config_lib.POSITIVE),
    # Data (Sec. 5.3): R = 1, cameras at D = 2R, tilts 45 deg, 32x32 pixels,
    # pixel noise std 0.1. See msnvi_tf/data/pendulum.py.
    "image_size": Field(32, "pixels per side of a camera's image", config_lib.COUNT),
    "pendulum_radius": Field(1.0, "R, the rotation radius", config_lib.POSITIVE),
    "camera_distance": Field(2.0, "D, camera-to-origin distance (the paper: 2R)",
                             config_lib.POSITIVE),
    "camera_tilt_deg": Field(45.0, "rotation of cameras 1 (about x) and 2 (about y)"),
    "focal_length": Field(22.0, "f in pixels: the whole orbit stays inside every image",
                          config_lib.POSITIVE),
    "bob_radius": Field(0.15, "r, radius of the bob sphere (world units)", config_lib.POSITIVE),
    "rod_width": Field(0.5, "half-width of the rod in pixels"),
    "rod_intensity": Field(0.5, "grey value of the rod (0 draws no rod)", config_lib.UNIT),
    "noise_std": Field(0.1, "std of the pixel noise"),
}

# Named variants beside the paper's config (bin/train --variant=...): none yet.
VARIANTS = {}


def get_config():
  """The Table 5 config."""
  return config_lib.make_config(
      FIELDS,
      # What to train.
      dataset="pendulum",
      objective="ind",  # Sec. 5.3 trains L_ind.
      iwae_sources=None,  # IWAE: None = hard-wired encoder on all cameras.
      latent_dim=2,  # Table 5.
      # Small networks: bf16 ran slower than float32 (README, "Speed, precision
      # and scale") and costs precision, so not "auto".
      precision="float32",
      # Optimisation (Table 5): Adam(5e-5, 0.9, 0.999), batch 16, K = 16, 50k steps.
      num_samples=16,
      eval_num_samples=16,
      batch_size=16,
      learning_rate=5e-5,
      num_steps=50_000,
      # Data.
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
