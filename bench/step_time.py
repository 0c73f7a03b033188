#!/usr/bin/env python3
"""Training-step speed: examples/s per objective and precision, against a matmul roofline.

For every data set config, precision and objective this times the jitted and
non-jitted training step on a synthetic batch of the config's shapes and, in the
same run, float32 square matmuls with the same FLOPs as the step (the roofline
of this machine's matmul kernels, see `roofline`; timed in turns with the
steps). It prints examples/s and the ratio

    roofline fraction = time(matmul of the step's FLOPs) / time(step),

plus where the step's time goes (encoders, decoders forward+backward, the rest:
sampling, log-sum-exp, optimizer). Step FLOPs are counted from the layers
(dense and convolution matmuls; backward = 2 x forward), e.g. MNIST-TB at
B=128, K=16: encoders 0.06 + decoders 2.0 GFLOP forward, 6.2 GFLOP per step.

One evaluation row per precision times the large-K log-likelihood estimate
(`MultiSourceVAE.log_likelihood`, PoE proposal, K=--large_k on a batch of the
config's eval_batch_size) the same way: examples/s, the examples/s it implies at
K=5,000 and the minutes of a 10,000-example test set per proposal, and its
roofline fraction, time(matmul of the decoder passes' FLOPs) / time(estimate)
(MNIST-TB: 0.49 MFLOP of decoders per sample and example).

  bench/step_time.py                                    # MNIST-TB, the paper's shapes
  bench/step_time.py --configs=mnist_tb,cub --set=cub:num_samples=8
  bench/step_time.py --precisions=float32,mixed_bfloat16,mixed_float16
  bench/step_time.py --intra_op_threads=0                # TF's default threading

The XLA rows are only representative with --intra_op_threads=0: training's "auto"
gives one intra-op thread on small CPUs only when XLA is off, and XLA:CPU needs
the intra-op threads.

Runs unchanged on a GPU host (where mixed_float16 is the interesting policy).
Numbers from one run are comparable with each other; machines here are shared
and differ (AMX or not), so compare ratios, not absolute times across runs.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import configs  # pylint: disable=g-import-not-at-top
from msnvi_tf import architectures
from msnvi_tf.core import kernels
from msnvi_tf.runtime import optimizers
from msnvi_tf.runtime import hardware

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["mnist_tb"], "Data set configs to benchmark.")
flags.DEFINE_list("objectives", ["ind", "moe", "poe", "hybrid", "iwae"], "Objectives.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Dtype policies.")
flags.DEFINE_list("jit", ["off", "on"], "XLA settings to time: off, on.")
flags.DEFINE_multi_string("set", [], "Config override config:key=value.")
flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
flags.DEFINE_integer("warmup", 3, "Untimed steps (tracing, compilation) first.")
flags.DEFINE_integer("repeats", 3, "Measurements per setting; the fastest counts.")
flags.DEFINE_integer("large_k", 200, "K of the large-K log-likelihood row (0: skip).")
flags.DEFINE_integer("large_k_calls", 2, "Timed estimates per measurement of that row.")
flags.DEFINE_string("intra_op_threads", "auto",
                    "As the config field: auto (training's choice), 0 = TF default, or N.")


def network_flops(network, example):
  """Forward FLOPs per example of a Keras network, by tracing its layers on `example`."""
  total = 0
  calls = []

  def hook(layer):
    call = layer.call

    def wrapped(*args, **kwargs):
      out = call(*args, **kwargs)
      calls.append((layer, args[0].shape, out.shape if hasattr(out, "shape") else None))
      return out
    return wrapped

  layers = [l for l in network._flatten_layers(include_self=False)  # pylint: disable=protected-access
            if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D,
                              keras.layers.Conv2DTranspose))]
  originals = {id(l): l.call for l in layers}
  for l in layers:
    l.call = hook(l)
  try:
    network(example)
  finally:
    for l in layers:
      l.call = originals[id(l)]
  for layer, in_shape, out_shape in calls:
    if isinstance(layer, keras.layers.Dense):
      total += 2 * int(np.prod(in_shape[1:])) // int(in_shape[-1]) * int(
          layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    else:
      kh, kw, a, b = layer.kernel.shape
      pixels = in_shape[1:3] if isinstance(layer, keras.layers.Conv2DTranspose) else out_shape[1:3]
      total += 2 * kh * kw * a * b * int(np.prod(pixels))
  return total


def step_flops(model, batch, objective):
  """FLOPs of one training step (forward + backward = 3 x forward)."""
  num_sources = len(model.sources)
  groups = {"ind": num_sources, "moe": num_sources, "poe": 1,
            "hybrid": num_sources + 1, "iwae": 1}[objective]
  one = {k: v[:1] for k, v in batch.items()}
  enc = sum(network_flops(model.encoders[s], model._encoder_input(one, s))  # pylint: disable=protected-access
            for s in model.sources)
  z = tf.zeros([1, model.latent_dim])
  dec = sum(network_flops(d, z) for d in model.decoders.values())
  batch_size = next(iter(batch.values())).shape[0]
  forward_enc = enc * batch_size
  forward_dec = dec * batch_size * model.num_samples * groups
  return 3 * (forward_enc + forward_dec), forward_enc, forward_dec


def synthetic_batch(model, batch_size, seed=0):
  """Random binary (Bernoulli-like) data of the model's shapes."""
  rng = np.random.default_rng(seed)
  return {k: tf.constant((rng.random((batch_size,) + tuple(s)) < 0.3).astype(np.float32))
          for k, s in model.data_shapes().items()}


def best_times(fns, steps, warmup, repeats):
  """Fastest seconds per call of each of `fns` (a dict), over `repeats` runs of
  `steps` calls; the functions take turns, so a busy neighbour slows all alike."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      for _ in range(steps):
        out = fn()
      tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
      times[name].append((time.perf_counter() - start) / steps)
  return {name: min(t) for name, t in times.items()}


def best_time(fn, steps, warmup, repeats):
  """Fastest seconds per call of `fn` (see `best_times`)."""
  return best_times({0: fn}, steps, warmup, repeats)[0]


def roofline(flops):
  """`{name: (fn, flops of fn)}`: float32 matmuls of about `flops` FLOPs.

  One square matmul, and one smaller square matmul per CPU core side by side,
  so the faster of the two uses every core whether TF runs them as intra-op
  threads (the default) or inter-op threads (TF_NUM_INTRAOP_THREADS=1). The
  roofline time of the step is `flops` at the faster one's rate.
  """
  fns = {}
  for parts in sorted({1, len(os.sched_getaffinity(0))}):
    n = max(64, int(round((flops / parts / 2.) ** (1. / 3.))))
    pairs = [(tf.random.normal([n, n]), tf.random.normal([n, n])) for _ in range(parts)]
    fns[f"matmul x{parts}"] = (
        tf.function(lambda pairs=pairs: [tf.matmul(a, b) for a, b in pairs]),
        parts * 2. * n ** 3)
  return fns


def component_times(model, batch, steps, warmup, repeats):
  """Seconds of encoders and of decoders, forward + backward, at the step's sizes."""
  sources = model.sources

  @tf.function
  def encoders():
    with tf.GradientTape() as tape:
      loc, scale = model.encode_stacked(batch, sources, True)
      loss = tf.reduce_sum(loc) + tf.reduce_sum(scale)
    return tape.gradient(loss, [v for s in sources
                                for v in model.encoders[s].trainable_variables])

  groups = len(sources)
  batch_size = next(iter(batch.values())).shape[0]
  z = tf.random.normal([groups, model.num_samples, batch_size, model.latent_dim])

  @tf.function
  def decoders():
    with tf.GradientTape() as tape, kernels.compiled_kernels():  # as in train_step
      loss = -tf.reduce_sum(model.log_joint(batch, z))
    return tape.gradient(loss, [v for d in model.decoders.values()
                                for v in d.trainable_variables])

  return (best_time(encoders, steps, warmup, repeats),
          best_time(decoders, steps, warmup, repeats))


def large_k_row(model, batch, num_samples, calls, repeats):
  """`(seconds per estimate, decoder FLOPs per estimate, roofline seconds)` of the
  large-K estimate on `batch`, timed in turns with matmuls of the same FLOPs."""
  z = tf.zeros([1, model.latent_dim])
  dec = sum(network_flops(d, z) for d in model.decoders.values())
  batch_size = next(iter(batch.values())).shape[0]
  flops = dec * batch_size * num_samples  # forward passes only
  matmuls = roofline(flops)
  fns = {name: fn for name, (fn, _) in matmuls.items()}
  fns["estimate"] = lambda: model.log_likelihood(batch, num_samples, seed=0)
  times = best_times(fns, calls, 1, repeats)
  t_mm = flops / max(f / times[name] for name, (_, f) in matmuls.items())
  return times["estimate"], flops, t_mm


def build(config, objective, policy):
  """The model of `config` for `objective` under `policy`, optimizer built."""
  with hardware.policy(policy):
    model = architectures.build_model(config.override([f"objective={objective}"]))
    model.compile(optimizer=optimizers.Adam(config.learning_rate))
    model.optimizer.build(model.trainable_variables)
  return model


def main(argv):
  del argv
  overrides = {}
  for item in FLAGS.set:
    name, _, assignment = item.partition(":")
    overrides.setdefault(name, []).append(assignment)
  threads = hardware.configure_threads(FLAGS.intra_op_threads)  # before TF starts
  print(f"TensorFlow {tf.__version__}; intra-op threads: {threads}; CPU flags: AMX-BF16="
        f"{'amx_bf16' in hardware.cpu_flags()}, AVX512-BF16="
        f"{'avx512_bf16' in hardware.cpu_flags()}; GPUs: "
        f"{len(tf.config.list_physical_devices('GPU'))}; auto precision: "
        f"{hardware.default_precision()[0]}")
  header = (f"{'config':10} {'objective':9} {'precision':15} {'xla':4} "
            f"{'GFLOP':>6} {'ms/step':>8} {'ex/s':>8} {'roofline':>8} {'vs f32':>7}")
  for name in FLAGS.configs:
    config = configs.get_config(name).override(overrides.get(name, []))
    print(f"\n{name}: batch {config.batch_size}, K={config.num_samples}, "
          f"Dz={config.latent_dim}")
    print(header)
    baseline = {}
    for policy in FLAGS.precisions:
      for objective in FLAGS.objectives:
        model = build(config, objective, policy)
        batch = synthetic_batch(model, config.batch_size)
        flops, _, _ = step_flops(model, batch, objective)
        matmuls = roofline(flops)
        fns = {name: fn for name, (fn, _) in matmuls.items()}
        for jit in FLAGS.jit:
          step = tf.function(model.train_step, jit_compile=(jit == "on"))
          fns[jit] = lambda step=step: step(batch)
        times = best_times(fns, FLAGS.steps, FLAGS.warmup, FLAGS.repeats)
        t_mm = flops / max(f / times[name] for name, (_, f) in matmuls.items())
        for jit in FLAGS.jit:
          t = times[jit]
          key = (objective, jit)
          baseline.setdefault(key, t)
          print(f"{name:10} {objective:9} {policy:15} {jit:4} {flops / 1e9:6.2f} "
                f"{1e3 * t:8.2f} {config.batch_size / t:8.0f} {t_mm / t:8.2f} "
                f"{baseline[key] / t:7.2f}", flush=True)
      model = build(config, "ind", policy)
      batch = synthetic_batch(model, config.batch_size)
      t_enc, t_dec = component_times(model, batch, FLAGS.steps, FLAGS.warmup,
                                     FLAGS.repeats)
      ind_step = tf.function(model.train_step)
      t_step = best_time(lambda: ind_step(batch), FLAGS.steps, FLAGS.warmup,
                         FLAGS.repeats)
      _, f_enc, f_dec = step_flops(model, batch, "ind")
      print(f"  where L_ind's step time goes ({policy}, no XLA): encoders fwd+bwd "
            f"{1e3 * t_enc:.2f} ms ({3 * f_enc / 1e9:.2f} GFLOP), decoders fwd+bwd "
            f"{1e3 * t_dec:.2f} ms ({3 * f_dec / 1e9:.2f} GFLOP), rest (sampling, "
            f"log-sum-exp, Adam) {1e3 * max(t_step - t_enc - t_dec, 0.):.2f} ms "
            f"of {1e3 * t_step:.2f} ms")
      if FLAGS.large_k:
        size = config.eval_batch_size
        batch = synthetic_batch(model, size)
        t, flops, t_mm = large_k_row(model, batch, FLAGS.large_k, FLAGS.large_k_calls,
                                     FLAGS.repeats)
        at_5000 = size / t * FLAGS.large_k / 5000.
        print(f"  large-K ln p(x) ({policy}, PoE proposal, K={FLAGS.large_k}, "
              f"{size} examples): {flops / 1e9:.1f} GFLOP of decoders, "
              f"{1e3 * t:.0f} ms, {size / t:.0f} examples/s ({at_5000:.1f} examples/s "
              f"at K=5000: {1e4 / at_5000 / 60.:.1f} min per proposal for 10,000 "
              f"examples), roofline {t_mm / t:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
