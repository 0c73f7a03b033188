#!/usr/bin/env python3
"""Serving memory: peak RSS of one large `predict` request, chunked against unchunked.

Exports the model of a trained workdir twice into a temporary directory, once
with the default chunk size (`export.ServingModule`: 20,000 / K rows per chunk)
and once as a single chunk of the whole request, then answers the same
`predict` request of --rows rows (every source present) from each SavedModel in
a fresh process and prints that process's peak resident set size (ru_maxrss),
its wall time, and the ratio unchunked / chunked from the same run. A third
fresh process that only loads the SavedModel gives the baseline RSS of
TensorFlow plus the model.

  bench/serving_memory.py --workdir=workdirs/toy_ind              # 100,000 rows
  bench/serving_memory.py --workdir=workdirs/toy_ind --rows=20000

Absolute RSS depends on the machine and the TF build; compare the ratio.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("workdir", None, "a workdir written by bin/train", required=True)
flags.DEFINE_integer("rows", 100_000, "rows of the predict request")
flags.DEFINE_string("_serve", None, "internal: answer one request from this SavedModel")
flags.DEFINE_boolean("_load_only", False, "internal: only load the SavedModel")
FLAGS = flags.FLAGS


def _serve(path, rows, load_only):
  """Loads `path`, answers one request of `rows` rows, prints a JSON line."""
  import numpy as np
  import tensorflow as tf
  loaded = tf.saved_model.load(path)
  contract = json.loads(loaded.metadata()["contract"].numpy())
  start = time.perf_counter()
  if not load_only:
    rng = np.random.default_rng(0)
    names = [n for n in contract["signatures"]["predict"]["inputs"] if n != "present"]
    request = {n: tf.constant(rng.normal(size=[rows, *contract["inputs"][n]["shape"][1:]]),
                              tf.float32) for n in names}
    request["present"] = tf.ones([rows, len(contract["sources"])])
    out = loaded.signatures["predict"](**request)
    assert all(np.isfinite(v.numpy()).all() for v in out.values())
  print(json.dumps({"seconds": time.perf_counter() - start,
                    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def _measure(path, rows, load_only=False):
  out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--workdir={FLAGS.workdir}",
                        f"--_serve={path}", f"--rows={rows}",
                        f"--_load_only={load_only}"],
                       check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS._serve:
    _serve(FLAGS._serve, FLAGS.rows, FLAGS._load_only)
    return
  from msnvi_tf.runtime import export, workdir
  model, config = workdir.load_trained(FLAGS.workdir)
  with tempfile.TemporaryDirectory() as tmp:
    chunked = export.export(model, os.path.join(tmp, "chunked"), 1,
                            num_samples=config.export_num_samples, seed=config.seed)
    whole = export.export(model, os.path.join(tmp, "whole"), 1,
                          num_samples=config.export_num_samples, seed=config.seed,
                          chunk_rows=FLAGS.rows)
    chunk_rows = json.load(open(os.path.join(chunked, "assets", export.CONTRACT_FILE)))
    chunk_rows = chunk_rows["chunk_rows"]
    base = _measure(chunked, FLAGS.rows, load_only=True)
    rows = [("load only", base), (f"chunks of {chunk_rows} rows", _measure(chunked, FLAGS.rows)),
            ("one chunk", _measure(whole, FLAGS.rows))]
  print(f"predict, {FLAGS.rows} rows, K = {config.export_num_samples}, "
        f"{config.dataset} model at step {model.trained_steps}:")
  for name, r in rows:
    print(f"  {name:24s} peak RSS {r['peak_rss_gb']:.2f} GB   {r['seconds']:.1f} s")
  print(f"  ratio one chunk / chunked: {rows[2][1]['peak_rss_gb'] / rows[1][1]['peak_rss_gb']:.1f}")


if __name__ == "__main__":
  app.run(main)
