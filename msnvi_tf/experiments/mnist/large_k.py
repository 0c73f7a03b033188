"""Large-K estimates of ln p(x) per proposal: the PoE of all sources or one source's belief.

Per example, ln (1/K) sum_k p(x, z_k) / q(z_k) with z_k ~ q (`MultiSourceVAE.
log_likelihood`, drawn in chunks), with its standard error over the examples.
Table 1 (`msnvi_tf.experiments.mnist.table1`) adds these to its grid and lists them
by proposal (`proposal_rows`).
"""
import logging
import math
import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from msnvi_tf.core import integration
from msnvi_tf.runtime import progress as progress_lib

__all__ = ["default_proposals", "large_k_estimates", "proposal_rows"]

log = logging.getLogger("msnvi_tf")


def default_proposals(model) -> List[str]:
  """Proposals of the large-K estimate: "poe" (all sources), then every source.

  A model with one encoder (the IWAE) has the one proposal "poe" (its belief).
  """
  return ["poe"] + (model.sources if len(model.sources) > 1 else [])


def _proposal(model, name):
  """`(sources, method)` of `log_likelihood` for a proposal name: an integration
  method over all sources ("poe", "moe", ...) or one source's own belief."""
  if name in model.sources:
    return [name], "poe"  # PoE of one belief with the prior: that belief
  if name in integration.INTEGRATIONS:
    return model.sources, name
  raise ValueError(f"Unknown large-K proposal {name!r}: name an integration method "
                   f"{sorted(integration.INTEGRATIONS)} or a source {model.sources}.")


def large_k_estimates(model, batches: Sequence[Mapping], num_samples: int,
                      proposals: Optional[Sequence[str]] = None,
                      chunk_size: Optional[int] = None, seed: int = 0,
                      progress: str = "") -> Dict[str, Dict]:
  """Large-K estimates of ln p(x) per proposal over all examples of `batches`.

  Per example, ln (1/K) sum_k p(x, z_k) / q(z_k) with z_k ~ q (`MultiSourceVAE.
  log_likelihood`); batch i draws its samples with seed `seed + i` (the same
  for every proposal). Logs examples/s to the `msnvi_tf` logger.

  Args:
    model: a `MultiSourceVAE`.
    batches: batch dicts holding every source and target.
    num_samples: K.
    proposals: names from `default_proposals` (default: all of them), or other
      integration methods over all sources ("moe").
    chunk_size: samples per chunk (default: `log_likelihood`'s).
    seed: base seed.
    progress: prefix of the progress lines (e.g. the workdir).

  Returns:
    `{proposal: {"log_likelihood": mean, "se": standard error of the mean
    (std / sqrt(N)), "std": std over examples, "examples": N, "seconds",
    "examples_per_second", "values": [N] numpy float32}}`.
  """
  proposals = default_proposals(model) if proposals is None else list(proposals)
  total = sum(int(tf.shape(next(iter(b.values())))[0]) for b in batches)
  results = {}
  for name in proposals:
    sources, method = _proposal(model, name)
    values, done, start = [], 0, time.perf_counter()
    lines = progress_lib.Progress(total, f"{progress}large-K (K={num_samples}) {name}")
    for i, batch in enumerate(batches):
      values.append(model.log_likelihood(batch, num_samples, sources, method,
                                         chunk_size, seed + i).numpy())
      done += values[-1].size
      lines.update(done)
    seconds = time.perf_counter() - start
    values = np.concatenate(values) if values else np.zeros([0], np.float32)
    n = values.size
    std = float(np.std(values.astype(np.float64), ddof=1)) if n > 1 else math.nan
    results[name] = {
        "log_likelihood": float(np.mean(values, dtype=np.float64)) if n else math.nan,
        "se": std / math.sqrt(n) if n > 1 else math.nan, "std": std, "examples": n,
        "seconds": seconds, "examples_per_second": n / seconds if seconds else math.nan,
        "values": values}
    log.info("%slarge-K (K=%d) %s: ln p(x) %.3f +- %.3f (s.e.) over %d examples, "
             "%.1f examples/s", progress, num_samples, name,
             results[name]["log_likelihood"], results[name]["se"], n,
             results[name]["examples_per_second"])
  return results


def proposal_rows(results: Sequence[Mapping]) -> List[Dict]:
  """One row per (model, large-K proposal) of results that have them."""
  rows = []
  for r in sorted(results, key=lambda r: (r["dataset"], r["column"])):
    for proposal, e in (r.get("large_k_estimates") or {}).items():
      rows.append({"dataset": r["dataset"], "column": r["column"], "step": r["step"],
                   "large_k": r["large_k"], "proposal": proposal,
                   "examples": e["examples"], "log_likelihood": e["log_likelihood"],
                   "se": e["se"], "precision": r.get("large_k_precision"),
                   "examples_per_second": e.get("examples_per_second"),
                   "workdir": r["workdir"]})
  return rows
