"""Randomly binarised MNIST variants MNIST-TB / -QU / -NO (Sec. 5.2, Table 4)."""
from msnvi_tf.runtime import config as config_lib
from msnvi_tf.runtime.config import Field

__all__ = ["FIELDS", "get_config", "VARIANTS"]

# MNIST's own fields (msnvi_tf/data/mnist.py, msnvi_tf/architectures/mnist.py),
# with the paper's values as defaults; the common ones are in config_lib.FIELDS.
FIELDS = {
    "use_label": Field(False, "add a one-hot \"label\" source and target (Fig. 3b)"),
    # Model (Table 4): elu 200x2 stems.
    "hidden": Field((200, 200), "widths of the encoders' and decoders' dense stems"),
    "activation": Field("elu", "activation of the stems"),
    # Data.
    "data_source": Field("auto", "auto, idx or tfds (prepared TFDS mnist, no download)",
                         config_lib.choice(("auto", "idx", "tfds"))),
    "tfds_data_dir": Field("", "TFDS data dir of data_source tfds (\"\": the TFDS default)",
                           resume=config_lib.MAY_CHANGE),
    "eval_seed": Field(2019, "seed of the fixed test-set binarisation (and noise)",
                       config_lib.SEED),
    "flip_prob": Field(0.05, "bit-flip probability of the MNIST-NO sources", config_lib.UNIT),
}

# Named variants beside the paper's config (bin/train --variant=fast).
VARIANTS = {
    # A higher peak learning rate with warm-up and cosine decay: 100k steps
    # instead of the paper's 250k at a constant 5e-5 (docs/mnist.md measures both).
    "fast": dict(lr_schedule="warmup_cosine", learning_rate=1e-3, warmup_steps=2_000,
                 decay_steps=98_000, final_lr_fraction=0.01, num_steps=100_000,
                 eval_every=10_000),
}


def get_config(variant="mnist_tb"):
  """The Table 4 config of `variant` ("mnist_tb", "mnist_qu" or "mnist_no")."""
  if variant not in ("mnist_tb", "mnist_qu", "mnist_no"):
    raise ValueError(f"Unknown MNIST variant {variant!r}; choose mnist_tb, "
                     "mnist_qu or mnist_no.")
  return config_lib.make_config(
      FIELDS,
      # What to train (Table 1 columns: ind, moe, poe, hybrid, hybrid with
      # num_samples=1, iwae).
      dataset=variant,
      objective="ind",
      iwae_sources=None,  # IWAE: None = hard-wired on all sources; ["noisy0"] = single.
      latent_dim=16,  # Table 4.
      # Optimisation (Table 4): Adam(5e-5, 0.9, 0.999), batch 128, K = 16, 250k steps.
      num_samples=16,
      eval_num_samples=16,
      batch_size=128,
      learning_rate=5e-5,
      num_steps=250_000,
      # Data.
      data_dir="",  # IDX directory; "" = $MSNVI_MNIST_DIR or <repo>/../shared/data/mnist.
      train_size=0,  # first N training images; 0 = all 60,000.
      eval_size=0,  # first N test images; 0 = all 10,000.
      # Loop.
      steps_per_call=100,
      log_every=1_000,
      eval_every=25_000,
      checkpoint_every=5_000,
      eval_batch_size=500,
  )
