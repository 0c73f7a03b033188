"""Adam whose update is TensorFlow's fused `ResourceApplyAdam` kernel.

Keras 3's Adam updates each variable with about ten small ops (two moment
updates, the bias correction, a division, a square root, three assignments).
On a CPU, where the MNIST step has ~30 variables, their dispatch is a visible
part of a training step (README, "Speed, precision and scale"; bench/step_time.py
measures it). This subclass runs the
same update, with the same slot variables (so checkpoints are interchangeable),
as one fused kernel per variable (App. H: Adam with beta1, beta2 of the config):

    m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
    theta <- theta - lr sqrt(1 - beta2^t) / (1 - beta1^t) m / (sqrt(v) + eps).

AMSGrad and non-TensorFlow backends use Keras' own update.
"""
import keras
import tensorflow as tf

__all__ = ["Adam", "learning_rate", "compile_model", "SCHEDULES"]

SCHEDULES = ("constant", "warmup_cosine")


def _handle(variable):
  """The resource handle of a Keras or TensorFlow variable (or its replica's)."""
  return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class Adam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` with one fused TensorFlow kernel per variable update."""

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or keras.backend.backend() != "tensorflow":
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    index = self._get_variable_index(variable)
    tf.raw_ops.ResourceApplyAdam(
        var=_handle(variable), m=_handle(self._momentums[index]),
        v=_handle(self._velocities[index]),
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


def learning_rate(config):
  """The learning rate of `config`: a float, or a schedule of the optimizer's step.

  "constant": `config.learning_rate` throughout (App. H, Tables 3-6).
  "warmup_cosine": linear warm-up from 0 to `config.learning_rate` over
  `config.warmup_steps`, then a cosine decay over `config.decay_steps` to
  `config.final_lr_fraction * config.learning_rate`, which it keeps. The
  schedule is a function of the optimizer's step counter, which checkpoints
  hold, so a resumed run follows it exactly.

  Raises:
    ValueError: unknown `config.lr_schedule`.
  """
  kind = config.lr_schedule
  if kind == "constant":
    return config.learning_rate
  if kind == "warmup_cosine":
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0., decay_steps=config.decay_steps,
        alpha=config.final_lr_fraction, warmup_target=config.learning_rate,
        warmup_steps=config.warmup_steps)
  raise ValueError(f"Unknown lr_schedule {kind!r}; choose one of {list(SCHEDULES)}.")


def compile_model(model, config):
  """Compiles `model` with Adam (App. H) at `config`'s learning rate; returns it.

  Also builds the optimizer's slots, so a checkpoint restores into them.
  """
  model.compile(optimizer=Adam(learning_rate(config), beta_1=config.beta1,
                               beta_2=config.beta2))
  model.optimizer.build(model.trainable_variables)
  return model
