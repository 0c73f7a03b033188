"""Fields every experiment config shares (App. H and the training loop)."""
from msnvi_tf.runtime.config import Config

__all__ = ["base_config"]


def base_config(**fields) -> Config:
  """The shared defaults, updated with one experiment's `fields`."""
  return Config({
      "hybrid_weight": 0.5,  # lambda of Eq. (5).
      "min_scale": 1e-4,  # floor of the beliefs' std (msnvi_tf.core.beliefs).
      "beta1": 0.9,  # Adam (App. H).
      "beta2": 0.999,
      # Learning-rate schedule (msnvi_tf.runtime.optimizers.learning_rate): the paper's
      # is "constant"; "warmup_cosine" warms up to learning_rate, then decays.
      "lr_schedule": "constant",
      "warmup_steps": 0,
      "decay_steps": 0,
      "final_lr_fraction": 0.0,
      "seed": 0,
      "max_checkpoints": 3,
      "export_num_samples": 100,  # latent samples of the serving signatures.
      # Target fraction of held-out healthy examples with a conflict alarm; the
      # robust integration's thresholds are calibrated to it at the end of
      # training (msnvi_tf.core.calibration; models with >= 2 sources).
      "conflict_false_alarm_rate": 0.005,
      "precision": "auto",  # msnvi_tf.runtime.hardware: what pays on this machine.
      "jit_compile": "auto",  # XLA on a single GPU replica (msnvi_tf.runtime.training.resolve_jit).
      "distribute": "auto",  # msnvi_tf.runtime.training.make_strategy.
      "intra_op_threads": "auto",  # msnvi_tf.runtime.training.configure_threads.
      **fields,
  })
