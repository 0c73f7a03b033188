"""Table 1: trained models evaluated under every integration, next to the paper.

Each trained model (one workdir of `bin/train`) is evaluated on the test set
with K importance samples under the three bounds of `objectives`:
  ind  (Eq. 1)   the average of the single-source bounds,
  moe  (App. B)  the mixture of the beliefs as proposal,
  poe  (Eq. 4)   the product of the beliefs (Eq. 3) as proposal,
giving one column of the Table 1 grid (rows: evaluation objective, columns:
training objective). The grid is reported as negative ELBOs (nats, lower is
better), like the paper. A large-K estimate of ln p(x) (`MultiSourceVAE.
log_likelihood`, drawn in chunks) is added per model, with its standard error,
for the PoE proposal and for each single source's belief as the proposal
(`msnvi_tf.experiments.mnist.large_k`).
"""
import csv
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

from msnvi_tf import architectures
from msnvi_tf import data as data_lib
from msnvi_tf.core import objectives
from msnvi_tf.experiments.mnist import large_k as large_k_lib
from msnvi_tf.runtime import training
from msnvi_tf.runtime import workdir as workdir_lib

__all__ = ["COLUMNS", "COLUMN_TITLES", "VARIANT_TITLES", "PAPER_TABLE1", "column_of",
           "paper_bound", "column_title",
           "evaluate_workdir", "grid_rows", "format_markdown", "write_grid", "load_results",
           "SUMMARY_FIELDS", "summary_rows", "write_summary"]

EVAL_ROWS = objectives.INTEGRATED_BOUNDS  # ("ind", "moe", "poe")
COLUMNS = ("ind", "moe", "poe", "hybrid", "hybrid_k1", "iwae")
COLUMN_TITLES = {"ind": "L_ind", "moe": "L_MoE", "poe": "L_PoE", "hybrid": "L_hybrid",
                 "hybrid_k1": "L_hybrid (K=1)", "iwae": "IWAE"}
VARIANT_TITLES = {"mnist_tb": "MNIST-TB", "mnist_qu": "MNIST-QU", "mnist_no": "MNIST-NO"}


def _table(ind, moe, poe, iwae, iwae_column="iwae"):
  """One variant of Table 1: `{eval row: {train column: negative ELBO}}`."""
  cols = COLUMNS[:5]
  return {"ind": dict(zip(cols, ind)), "moe": dict(zip(cols, moe)),
          "poe": {**dict(zip(cols, poe)), iwae_column: iwae}}


# Table 1 of the paper: negative ELBOs (K = 16) on the test set, lower is better.
# The IWAE has one encoder, so only its PoE row is reported: hard-wired ("iwae")
# on MNIST-TB/-QU, on a single noisy source on MNIST-NO ("iwae_noisy0"; the four
# noisy sources are alike).
PAPER_TABLE1 = {
    "mnist_tb": _table((102.20, 102.40, 265.59, 104.03, 108.97),
                       (101.51, 101.82, 264.48, 103.37, 108.30),
                       (94.38, 94.39, 87.59, 90.07, 90.81), 88.79),
    "mnist_qu": _table((120.46, 120.37, 447.67, 129.63, 140.61),
                       (119.10, 119.98, 446.02, 128.16, 139.19),
                       (108.07, 107.85, 87.67, 89.20, 90.17), 88.79),
    "mnist_no": _table((94.81, 94.86, 101.20, 96.27, 95.31),
                       (93.98, 94.03, 100.36, 95.58, 94.55),
                       (94.52, 94.65, 92.27, 92.21, 94.49), 94.95, "iwae_noisy0"),
}


def column_of(config) -> str:
  """The Table 1 column of a training config.

  Its objective; "_k<K>" when an integrated objective trains with K != 16
  samples ("hybrid_k1"); for an IWAE on some sources only (`iwae_sources`),
  their names ("iwae_noisy0", "iwae_noisy1+noisy2"), as the hard-wired IWAE
  ("iwae") is another model.
  """
  column = config.objective
  if config.objective == "iwae":
    sources = config.get("iwae_sources")
    if sources:
      column += "_" + "+".join(architectures.parse_names(sources, "iwae_sources"))
    return column
  if config.num_samples != 16:
    column += f"_k{config.num_samples}"
  return column


def paper_bound(config, row: str = "poe") -> Optional[float]:
  """The paper's Table 1 cell of a training config's column in `row` (nats).

  None where Table 1 has none: another data set, or a column the paper does not
  report (the hard-wired IWAE of MNIST-NO, a K it did not train with).
  """
  table = PAPER_TABLE1.get(config.get("dataset"))
  return table[row].get(column_of(config)) if table else None


def column_title(column: str) -> str:
  """A column's title in the tables: "L_hybrid (K=1)", "IWAE (noisy1+noisy2)", ...

  A column `dispatch` named after its workdir, "hybrid (seed1)", keeps that
  name: "L_hybrid (seed1)".
  """
  base, sep, workdir = column.partition(" (")
  if sep:
    return f"{column_title(base)} ({workdir}"
  if column.startswith("iwae_"):
    return f"IWAE ({column[len('iwae_'):]})"
  return COLUMN_TITLES.get(column, column)


def evaluate_workdir(workdir: str, num_samples: int = 16, eval_size: int = 0,
                     large_k: int = 1000, large_k_examples: int = 500,
                     chunk_size: int = 0, eval_batch_size: int = 500,
                     large_k_proposals: Optional[Sequence[str]] = None,
                     large_k_precision: str = "float32",
                     large_k_seed: int = 0) -> Dict:
  """Evaluates one trained model under ind / MoE / PoE and with a large-K estimate.

  Bounds: ln (1/K) sum_k p(x, z_k) / q(z_k) with q the single-source beliefs (Eq. 1),
  their mixture (App. B) or their product (Eqs. 3, 4), averaged over the test set.

  Args:
    workdir: a workdir written by `bin/train`.
    num_samples: K of the three bounds (16 in Table 1).
    eval_size: first N test examples (0: the whole test set).
    large_k: K of the log-likelihood estimate (0: skip it).
    large_k_examples: test examples of the large-K estimate (0: all of the
      evaluation set; its cost is large_k times that of one bound, per proposal).
    chunk_size: samples per chunk of the large-K estimate (0: `log_likelihood`'s
      default).
    eval_batch_size: examples per evaluation batch.
    large_k_proposals: proposals of the large-K estimate (default: "poe" and
      every single source, see `large_k.default_proposals`).
    large_k_precision: dtype policy of the large-K estimate ("float32", the
      default, keeps results machine-independent; "mixed_bfloat16" or "auto" run
      its matmuls in bf16 where that pays; docs/mnist.md measures both).
    large_k_seed: seed of the large-K samples (see `large_k.large_k_estimates`).

  Returns:
    `{"workdir", "dataset", "column", "objective", "step", "num_samples",
    "num_examples", "ind", "moe", "poe", "large_k", "large_k_examples",
    "log_likelihood", "log_likelihood_se", "large_k_precision",
    "large_k_estimates"}`; bounds and log-likelihood in nats per example (higher
    is better; the grid reports their negatives). "log_likelihood" is the PoE
    proposal's estimate, "log_likelihood_se" its standard error; "large_k_estimates"
    maps every proposal to `{"log_likelihood", "se", "std", "examples",
    "seconds", "examples_per_second"}`.
  """
  # float32 whatever `precision=auto` would pick here: table entries must not
  # depend on the machine.
  model, config = workdir_lib.load_trained(
      workdir, eval_num_samples=num_samples, eval_size=eval_size,
      eval_batch_size=eval_batch_size, precision="float32")
  eval_ds = data_lib.test_batches(config)
  result = {**_bound_entries(workdir, config, model, eval_ds), "large_k": large_k,
            "large_k_examples": 0, "log_likelihood": math.nan,
            "log_likelihood_se": math.nan, "large_k_precision": None,
            "large_k_estimates": {}}
  if large_k:
    if large_k_precision != "float32":
      model, _ = workdir_lib.load_trained(workdir, eval_size=eval_size,
                                       eval_batch_size=eval_batch_size,
                                       precision=large_k_precision)
    examples = eval_ds.unbatch().take(large_k_examples or -1)  # -1: all
    estimates = large_k_lib.large_k_estimates(
        model, list(examples.batch(eval_batch_size)), large_k, large_k_proposals,
        chunk_size, large_k_seed, progress=f"{workdir}: ")
    result.update(_large_k_entries(model, estimates))
  return result


def _bound_entries(workdir, config, model, eval_ds) -> Dict:
  """`evaluate_workdir`'s entries naming the model and its three bounds on `eval_ds`."""
  metrics = training.evaluate_bounds(model, eval_ds)
  return {"workdir": workdir_lib.run_name(workdir), "dataset": config.dataset,
          "column": column_of(config), "objective": config.objective,
          "step": model.trained_steps, "num_samples": config.eval_num_samples,
          "num_examples": int(sum(int(tf.shape(next(iter(b.values())))[0])
                                  for b in eval_ds)),
          **{k: metrics[k] for k in EVAL_ROWS}}


def _large_k_entries(model, estimates: Mapping[str, Dict]) -> Dict:
  """`evaluate_workdir`'s large-K entries from `large_k.large_k_estimates`."""
  poe = estimates.get("poe", {})
  return {
      "large_k_examples": max((e["examples"] for e in estimates.values()), default=0),
      "log_likelihood": poe.get("log_likelihood", math.nan),
      "log_likelihood_se": poe.get("se", math.nan),
      "large_k_precision": model.decoders[model.targets[0]].dtype_policy.name,
      "large_k_estimates": {name: {k: v for k, v in e.items() if k != "values"}
                            for name, e in estimates.items()}}


def _fmt(value):
  return "" if value is None or not math.isfinite(value) else f"{value:.2f}"


def grid_rows(results: Sequence[Mapping]) -> List[Dict]:
  """Long-format rows of the Table 1 grid, ours beside the paper's.

  Returns:
    One dict per (dataset, evaluation objective, training column) that either
    we or the paper have: `{"dataset", "eval_objective", "train_objective",
    "ours", "paper", "step", "workdir"}` with negative ELBOs (None if absent).
  """
  ours = {(r["dataset"], r["column"]): r for r in results}
  datasets = [d for d in PAPER_TABLE1 if any(r["dataset"] == d for r in results)]
  datasets += sorted({r["dataset"] for r in results} - set(datasets))
  rows = []
  for dataset in datasets:
    paper = PAPER_TABLE1.get(dataset, {})
    columns = list(COLUMNS) + sorted(
        ({c for d, c in ours if d == dataset} | set(paper.get("poe", {})))
        - set(COLUMNS))
    for row in EVAL_ROWS:
      for column in columns:
        result = ours.get((dataset, column))
        if column.startswith("iwae") and row != "poe":  # One encoder: ind = MoE = PoE.
          result = None
        value = paper.get(row, {}).get(column)
        if result is None and value is None:
          continue
        rows.append({"dataset": dataset, "eval_objective": row,
                     "train_objective": column,
                     "ours": None if result is None else -result[row],
                     "paper": value,
                     "step": None if result is None else result["step"],
                     "workdir": None if result is None else result["workdir"]})
  return rows


def format_markdown(results: Sequence[Mapping]) -> str:
  """The grid as Markdown tables, one per data set: cells "ours (paper)"."""
  rows = grid_rows(results)
  lines = []
  for dataset in dict.fromkeys(r["dataset"] for r in rows):
    mine = [r for r in rows if r["dataset"] == dataset]
    columns = list(dict.fromkeys(r["train_objective"] for r in mine))
    steps = sorted({r["step"] for r in mine if r["step"] is not None})
    sizes = sorted({r["num_examples"] for r in results if r["dataset"] == dataset})
    lines += [f"### {VARIANT_TITLES.get(dataset, dataset)}",
              "",
              "Negative ELBO on the test set (nats, lower is better), "
              f"ours (paper); training steps: {', '.join(map(str, steps)) or '-'}; "
              f"test examples: {', '.join(map(str, sizes)) or '-'}.",
              "",
              "| eval \\ train | " + " | ".join(
                  column_title(c) for c in columns) + " |",
              "|---" * (len(columns) + 1) + "|"]
    for row in EVAL_ROWS:
      cells = []
      for column in columns:
        match = [r for r in mine if r["eval_objective"] == row
                 and r["train_objective"] == column]
        if not match:
          cells.append("-")
          continue
        ours, paper = match[0]["ours"], match[0]["paper"]
        ours_text = "-" if ours is None else _fmt(ours)
        cells.append(ours_text if paper is None else f"{ours_text} ({paper:.2f})")
      lines.append(f"| {COLUMN_TITLES[row]} | " + " | ".join(cells) + " |")
    lines.append("")
  large = [r for r in results if r.get("large_k")]
  if large:
    lines += ["### Large-K log-likelihood (PoE proposal)", "",
              "| data set | training objective | steps | K | examples | "
              "-ln p(x) | -L_PoE (K=16, grid's examples) |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(large, key=lambda r: (r["dataset"], r["column"])):
      lines.append(
          f"| {VARIANT_TITLES.get(r['dataset'], r['dataset'])} | "
          f"{column_title(r['column'])} | {r['step']} | "
          f"{r['large_k']} | {r['large_k_examples']} | "
          f"{_fmt(-r['log_likelihood'])} | {_fmt(-r['poe'])} |")
    lines.append("")
  rows = large_k_lib.proposal_rows(results)
  if rows:
    lines += ["### Large-K log-likelihood by proposal", "",
              "-ln p(x) +- its standard error over the test examples (std / sqrt(N)); "
              "proposal: the PoE of all sources or one source's belief.", "",
              "| data set | training objective | steps | K | examples | proposal | "
              "-ln p(x) | s.e. | precision |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
      lines.append(
          f"| {VARIANT_TITLES.get(row['dataset'], row['dataset'])} | "
          f"{column_title(row['column'])} | {row['step']} | "
          f"{row['large_k']} | {row['examples']} | {row['proposal']} | "
          f"{_fmt(-row['log_likelihood'])} | {_fmt(row['se'])} | {row['precision']} |")
    lines.append("")
  return "\n".join(lines)


def write_grid(results: Sequence[Mapping], output_dir: str) -> Dict[str, str]:
  """Writes table1.md, table1.csv, large_k.csv, large_k_proposals.csv and
  results.json into `output_dir`.

  Returns:
    `{"markdown", "csv", "large_k_csv", "proposals_csv", "json"}` paths.
  """
  tf.io.gfile.makedirs(output_dir)
  paths = {name: os.path.join(output_dir, file) for name, file in (
      ("markdown", "table1.md"), ("csv", "table1.csv"),
      ("large_k_csv", "large_k.csv"), ("proposals_csv", "large_k_proposals.csv"),
      ("json", "results.json"))}
  with tf.io.gfile.GFile(paths["markdown"], "w") as f:
    f.write(format_markdown(results))
  fields = ("dataset", "eval_objective", "train_objective", "ours", "paper", "step",
            "workdir")
  with tf.io.gfile.GFile(paths["csv"], "w") as f:
    writer = csv.DictWriter(f, fields, lineterminator="\n")
    writer.writeheader()
    for row in grid_rows(results):
      writer.writerow({k: "" if row[k] is None else row[k] for k in fields})
  large_fields = ("dataset", "column", "step", "large_k", "large_k_examples",
                  "log_likelihood", "poe", "workdir", "log_likelihood_se")
  with tf.io.gfile.GFile(paths["large_k_csv"], "w") as f:
    writer = csv.DictWriter(f, large_fields, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(r for r in results if r.get("large_k"))
  proposal_fields = ("dataset", "column", "step", "large_k", "proposal", "examples",
                     "log_likelihood", "se", "precision", "examples_per_second",
                     "workdir")
  with tf.io.gfile.GFile(paths["proposals_csv"], "w") as f:
    writer = csv.DictWriter(f, proposal_fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(large_k_lib.proposal_rows(results))
  with tf.io.gfile.GFile(paths["json"], "w") as f:
    json.dump(list(results), f, indent=2)
  return paths


def load_results(path: str) -> Optional[List[Dict]]:
  """Results saved by `write_grid` (results.json), or None if there are none."""
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


# docs/results/table1.csv: one row per cell of the paper's Table 1.
SUMMARY_FIELDS = ("dataset", "column", "row", "ours", "paper", "ours_minus_paper", "K",
                  "test_examples", "nll_large_k", "nll_large_k_se", "large_k", "steps", "schedule", "training_commit",
                  "evaluation_commit", "machine", "precision", "seed", "results", "note")


def summary_rows(manifest: Sequence[Mapping], root: str = ".") -> List[Dict]:
  """The paper's Table 1 cell by cell (48 rows), ours from the runs of `manifest`.

  Args:
    manifest: one entry per trained model: `{"dataset", "column", "results"
      (a results.json of write_grid, relative to root), "schedule",
      "training_commit", "machine", "precision", "seed", "note"}`. A cell takes
      the model of the fast schedule where there is one (the recipe of
      docs/mnist.md), else the paper schedule's.
    root: the directory the results paths are relative to.

  Returns:
    One dict per cell with `SUMMARY_FIELDS`: negative ELBOs (nats, lower is
    better) rounded to 2 decimals as in the tables, None where not run;
    `nll_large_k` (+- `nll_large_k_se`) is the model's -ln p(x) estimated with
    `large_k` samples from the PoE proposal (the same on the model's three rows).
  """
  chosen = {}
  for entry in sorted(manifest, key=lambda e: e["schedule"] != "fast", reverse=True):
    chosen[entry["dataset"], entry["column"]] = entry  # fast last: it wins.
  rows = []
  for dataset, table in PAPER_TABLE1.items():
    for row in EVAL_ROWS:
      for column, paper in table[row].items():
        entry = chosen.get((dataset, column))
        result = None
        if entry is not None:
          results = load_results(os.path.join(root, entry["results"])) or []
          matches = [r for r in results
                     if r["dataset"] == dataset and r["column"] == column]
          if not matches:
            raise ValueError(f"{entry['results']} holds no {dataset} / {column} model.")
          result = matches[0]
        ours = None if result is None else round(-result[row], 2)
        rows.append({
            "dataset": dataset, "column": column, "row": row, "ours": ours, "paper": paper,
            "ours_minus_paper": None if ours is None else round(ours - paper, 2),
            "K": None if result is None else result["num_samples"],
            "test_examples": None if result is None else result["num_examples"],
            **_large_k_cells(result),
            "steps": None if result is None else result["step"],
            **{k: (entry or {}).get(k) for k in (
                "schedule", "training_commit", "evaluation_commit", "machine", "precision",
                "seed", "results")},
            "note": "not run yet" if entry is None else entry.get("note", "")})
  return rows


def _large_k_cells(result: Optional[Mapping]) -> Dict:
  """The summary's large-K entries of a model (None where it has no estimate)."""
  nll = None if result is None else -result.get("log_likelihood", math.nan)
  if nll is None or not math.isfinite(nll):
    return {"nll_large_k": None, "nll_large_k_se": None, "large_k": None}
  return {"nll_large_k": round(nll, 2), "nll_large_k_se": round(result["log_likelihood_se"], 2),
          "large_k": result["large_k"]}


def write_summary(manifest_path: str, output_dir: str) -> List[str]:
  """Writes table1.csv and table1.md of `summary_rows` into `output_dir`.

  Results paths in the manifest are relative to the repository (the parent of
  the manifest's directory's parent, e.g. docs/results/ -> .).
  """
  with tf.io.gfile.GFile(manifest_path) as f:
    manifest = json.load(f)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(manifest_path))))
  rows = summary_rows(manifest, root)
  tf.io.gfile.makedirs(output_dir)
  csv_path, md_path = (os.path.join(output_dir, n) for n in ("table1.csv", "table1.md"))
  with tf.io.gfile.GFile(csv_path, "w") as f:
    writer = csv.DictWriter(f, SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r[k] is None else r[k] for k in SUMMARY_FIELDS} for r in rows)
  run = [r["ours_minus_paper"] for r in rows if r["ours"] is not None]
  lines = [f"# Table 1, cell by cell: {len(run)} of {len(rows)} cells run", "",
           f"Of those, {sum(abs(d) <= 1. for d in run)} are within 1 nat of the paper, "
           f"{sum(d < -1. for d in run)} better by more, {sum(d > 1. for d in run)} worse "
           "by more.", "",
           "Negative ELBO on the test set (nats, lower is better): ours, the paper's, "
           "ours - paper. Written by `bin/reproduce --summary` from "
           f"`{os.path.basename(manifest_path)}`; every run's commit, machine and schedule "
           "are in table1.csv.", "",
           "| data set | trained with | evaluated with | ours | paper | ours - paper | "
           "K | test examples | steps | schedule | model's -ln p(x) (PoE proposal) |", "|---" * 11 + "|"]
  for r in rows:
    lines.append(
        f"| {VARIANT_TITLES[r['dataset']]} | {column_title(r['column'])} | "
        f"{COLUMN_TITLES[r['row']]} | " + " | ".join(
            "-" if r[k] is None else (f"{r[k]:.2f}" if k in ("ours", "paper",
                                                            "ours_minus_paper") else str(r[k]))
            for k in ("ours", "paper", "ours_minus_paper", "K", "test_examples", "steps",
                      "schedule"))
        + (" | -" if r["nll_large_k"] is None else
           f" | {r['nll_large_k']:.2f} +- {r['nll_large_k_se']:.2f} (K = {r['large_k']})")
        + " |")
  here = os.path.dirname(os.path.abspath(manifest_path))  # links: from docs/results/
  off = {}  # (dataset, column) -> cells more than 1 nat from the paper
  for r in rows:
    if r["ours"] is not None and abs(r["ours_minus_paper"]) > 1.:
      off.setdefault((r["dataset"], r["column"]), []).append(r)
  if off:
    lines += ["", "## Cells more than 1 nat from the paper", ""]
  for (dataset, column), cells in off.items():
    entry = next(e for e in manifest if e["dataset"] == dataset and e["column"] == column
                 and e.get("results") == cells[0]["results"])
    which = ", ".join(f"{COLUMN_TITLES[c['row']]} {c['ours_minus_paper']:+.2f}" for c in cells)
    links = [f"[{name}]({os.path.relpath(os.path.join(root, entry[k]), here)})"
             for k, name in (("curve", "learning curve"), ("discussion", "discussion"))
             if entry.get(k)]
    lines.append(f"- **{VARIANT_TITLES[dataset]}, {column_title(column)}** ({which}): "
                 f"{entry.get('why', 'not explained yet.')}"
                 + (f" ({', '.join(links)})" if links else ""))
  with tf.io.gfile.GFile(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return [csv_path, md_path]
