"""One command per table of the paper: train what is missing, evaluate, draw.

`reproduce(table, runs_dir, output_dir)` (what `bin/reproduce` runs) takes a
`Table` of `TABLES`:
  1. trains each of its models with `bin/train` in `<runs_dir>/<model name>`,
     skipping finished ones (metrics.json at the config's last step) and resuming
     interrupted ones (the same command resumes exactly);
  2. evaluates them all as `bin/evaluate` does (`dispatch.evaluate`, with the
     table's options) into `output_dir`;
  3. draws the table's figures (`dispatch.plot`) and learning curves.
Re-running it after it finished trains nothing and rewrites the outputs.

The tables and their models:
  table3     toy mixture of Gaussians (Sec. 5.1): the five objectives, Figs. 2, 6
  table2     the `shapes` stand-in for CUB, `--variant=cpu` (Sec. 5.2): the
             paper's columns (a mask and an image model for ind*, hybrid*, IWAE)
             and L_hybrid with K = 1, bounds at K = 80; Figs. 8, 9
  table1_tb, table1_qu, table1_no   MNIST (Sec. 5.2), `--variant=fast`: the six
             columns of Table 1 with K = 5,000 estimates over all test images;
             Figs. 3, 4, 7 (table1_tb also trains the labelled model of Fig. 3b)
"""
import collections
import json
import logging
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from msnvi_tf.experiments import dispatch

__all__ = ["Model", "Table", "TABLES", "finished", "train_command", "reproduce"]

log = logging.getLogger("msnvi_tf")

# name: the workdir's name; label: its column in the table (None: from its
# config); args: bin/train flags besides --workdir.
Model = collections.namedtuple("Model", ["name", "label", "args"])
# models; evaluate: options of dispatch.evaluate; plot: names of the models
# whose figures are drawn (the first is the main one) and the options;
# curves: `(PNG name, model names, tags)` of the learning curves.
Table = collections.namedtuple("Table", ["title", "models", "evaluate", "plot",
                                         "plot_options", "curves"])

_TOY = [("ind", "L_ind"), ("moe", "L_MoE"), ("poe", "L_PoE"), ("hybrid", "L_hybrid"),
        ("iwae", "IWAE")]
_SHAPES = "--dataset=shapes --variant=cpu".split()
_TABLE2 = [  # name, label, objective and --set overrides
    ("ind", "ind", ["--objective=ind"]),
    ("ind_seg", "ind*", ["--objective=ind", "--set=targets=mask"]),
    ("ind_img", "ind* (img-to-img)", ["--objective=ind", "--set=targets=image"]),
    ("hybrid", "hybrid", ["--objective=hybrid"]),
    ("hybrid_seg", "hybrid*", ["--objective=hybrid", "--set=targets=mask"]),
    ("hybrid_img", "hybrid* (img-to-img)", ["--objective=hybrid", "--set=targets=image"]),
    ("iwae_seg", "iwae", ["--objective=iwae", "--set=targets=mask"]),
    ("iwae_img", "iwae (img-to-img)", ["--objective=iwae", "--set=targets=image"]),
    ("hybrid_k1", "hybrid (K=1)", ["--objective=hybrid", "--set=num_samples=1"]),
]
_MNIST_COLUMNS = [("ind", ["--objective=ind"]), ("moe", ["--objective=moe"]),
                  ("poe", ["--objective=poe"]), ("hybrid", ["--objective=hybrid"]),
                  ("hybrid_k1", ["--objective=hybrid", "--set=num_samples=1"])]
_LARGE_K = dict(large_k=5000, large_k_examples=0)


def _mnist(variant: str, iwae: Sequence[str]) -> Table:
  """Table 1 of one MNIST variant: its six columns, fast schedule."""
  common = [f"--dataset={variant}", "--variant=fast"]
  models = [Model(f"{variant}_{c}_fast", c, common + a) for c, a in _MNIST_COLUMNS]
  models.append(Model(f"{variant}_{iwae[0]}_fast", iwae[0],
                      common + ["--objective=iwae"] + list(iwae[1:])))
  plot = [f"{variant}_hybrid_fast", f"{variant}_ind_fast", f"{variant}_{iwae[0]}_fast"]
  options = {}
  if variant == "mnist_tb":  # Fig. 3b: the L_hybrid model with the label as a source.
    models.append(Model("mnist_tb_hybrid_label_fast", None,
                        common + ["--objective=hybrid", "--set=use_label=True"]))
    options["label_workdir"] = "mnist_tb_hybrid_label_fast"
  names = [m.name for m in models if m.label]
  return Table(f"Table 1, {variant}", models, _LARGE_K, plot, options,
               [("learning_curves.png", names, ("bound_poe",))])


TABLES: Dict[str, Table] = {
    "table3": Table(
        "Table 3 (toy)", [Model(f"toy_{o}", t, ["--dataset=toy", f"--objective={o}"])
                          for o, t in _TOY],
        {}, [f"toy_{o}" for o, _ in _TOY], {},
        [("learning_curves.png", [f"toy_{o}" for o, _ in _TOY], ("bound_poe",))]),
    "table2": Table(
        "Table 2 (shapes, --variant=cpu)",
        [Model(f"shapes_{n}", label, _SHAPES + a) for n, label, a in _TABLE2],
        dict(num_samples=80), [f"shapes_{n}" for n in ("ind", "hybrid", "hybrid_k1",
                                                        "ind_seg", "hybrid_seg")], {},
        [("learning_curves_seg.png", [f"shapes_{n}" for n in ("ind_seg", "hybrid_seg",
                                                              "iwae_seg")], ("bound",)),
         ("learning_curves_img.png", [f"shapes_{n}" for n in ("ind_img", "hybrid_img",
                                                              "iwae_img")], ("bound",)),
         ("learning_curves_both.png", [f"shapes_{n}" for n in ("ind", "hybrid",
                                                               "hybrid_k1")], ("bound",))]),
    "table1_tb": _mnist("mnist_tb", ["iwae"]),
    "table1_qu": _mnist("mnist_qu", ["iwae"]),
    "table1_no": _mnist("mnist_no", ["iwae_noisy0", "--set=iwae_sources=noisy0"]),
}


def finished(workdir: str) -> bool:
  """Whether `workdir` holds a run trained to its config's last step."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      num_steps = json.load(f)["num_steps"]
    with open(os.path.join(workdir, "metrics.json")) as f:
      return json.load(f)["step"] >= num_steps
  except (OSError, ValueError, KeyError):
    return False


def train_command(model: Model, workdir: str, overrides: Sequence[str] = ()) -> List[str]:
  """The `bin/train` command of `model` in `workdir` (with extra `--set` overrides)."""
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "bin", "train")
  if not os.path.exists(script):
    raise FileNotFoundError(f"{script} not found: bin/reproduce runs from a checkout of "
                            "msnvi_tf (pip install -e).")
  return ([sys.executable, script] + list(model.args) + [f"--workdir={workdir}"]
          + [f"--set={o}" for o in overrides])


def reproduce(table: str, runs_dir: str, output_dir: str, overrides: Sequence[str] = (),
              train: bool = True, evaluate_options: Optional[Dict] = None) -> List[str]:
  """Trains the missing models of `table`, evaluates them, draws its figures.

  Args:
    table: a name of `TABLES`.
    runs_dir: the directory of the models' workdirs (`<runs_dir>/<model name>`).
    output_dir: where the table, figures and learning curves go.
    overrides: `key=value` config overrides for every model trained (e.g.
      `precision=float32`); a resumed model must be given the same ones.
    train: train missing or unfinished models (False: use what is there).
    evaluate_options: options of `dispatch.evaluate` over the table's.

  Returns:
    The paths written.

  Raises:
    ValueError: an unknown table.
    RuntimeError: a training failed (its exit status; bin/train said why).
    FileNotFoundError: with `train=False`, a model that is not trained.
  """
  if table not in TABLES:
    raise ValueError(f"Unknown table {table!r}; choose one of {sorted(TABLES)}.")
  spec = TABLES[table]
  workdirs = {m.name: os.path.join(runs_dir, m.name) for m in spec.models}
  for i, model in enumerate(spec.models):
    workdir = workdirs[model.name]
    if finished(workdir):
      log.info("%s [%d/%d] %s: trained; kept.", table, i + 1, len(spec.models), workdir)
      continue
    if not train:
      raise FileNotFoundError(f"{workdir} is not trained to its last step (run without "
                              "--notrain to train it).")
    command = train_command(model, workdir, overrides)
    log.info("%s [%d/%d] training %s: %s", table, i + 1, len(spec.models), workdir,
             " ".join(command[1:]))
    status = subprocess.call(command)
    if status:
      raise RuntimeError(f"Training {workdir} stopped with exit status {status} (see its "
                         "output above); re-run the same command to resume it.")
  labelled = [f"{m.label}={workdirs[m.name]}" if m.label else workdirs[m.name]
              for m in spec.models if m.label is not None]
  paths = dispatch.evaluate(labelled, output_dir,
                            **{**spec.evaluate, **(evaluate_options or {})})
  plot_options = {k: workdirs.get(v, v) for k, v in spec.plot_options.items()}
  paths += dispatch.plot([workdirs[n] for n in spec.plot], os.path.join(output_dir, "figures"),
                         **plot_options)
  labels = {m.name: m.label or m.name for m in spec.models}
  for name, models, tags in spec.curves:
    paths += dispatch.plot([f"{labels[n]}={workdirs[n]}" for n in models], output_dir,
                           curves=True, tags=tags, name=name,
                           title=f"{spec.title}: test bounds while training")
  return paths
