"""Comparison reports from run workdirs: a paper-style table and accuracy curves.

Layout (written by `launch/compare.py`): ROOT/<partition>/<method>/seed<k>/ holding each run's
summary.json and metrics.jsonl (`gas_jax.metrics`), or ROOT/<partition>/<method>/seed<k>.json,
the same run packed into one file (`pack_run`, written by `launch/campaign.py`). Everything here
only reads those files.

- `results_table`: the layout of the paper's Table 1 - one row per method, one column per
  partition, mean ± std over seeds of summary.json's final_accuracy (mean test accuracy of the
  last 5 global iterations) in %, the best mean of each column in bold. The std is the population
  std (numpy ddof=0; the paper does not say which); a cell with fewer finished seeds than asked
  says how many it has, a cell without any shows "-".
- `plot_curves`: mean test accuracy against the simulated clock (or the global iteration), a
  shaded band for ± std over seeds, one line per method and one subplot per partition. Each seed's
  curve is linearly interpolated onto a grid covering the range all of that method's seeds reach.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

METRIC = "final_accuracy"


def partition_label(config) -> str:
  """'shard2', 'dir0.1' or 'iid' from a config's data block."""
  d = config.data
  if d.partition == "shard":
    return f"shard{d.shards}"
  if d.partition == "dirichlet":
    return f"dir{d.alpha:g}"
  return str(d.partition)


def cell_dir(root: str, partition: str, method: str, seed: int) -> str:
  return os.path.join(root, partition, method, f"seed{seed}")


PACKED_FORMAT = "gas-jax packed cell 1"


def packed_path(workdir: str) -> str:
  """Where a cell's packed result lives: its workdir's path + ".json" (`launch/campaign.py`)."""
  return os.path.normpath(workdir) + ".json"


def pack_run(workdir: str, **extra) -> Dict:
  """One finished run as one small JSON-able dict: its config.json, summary.json and
  metrics.jsonl rows (no checkpoints), plus `extra` (e.g. the cell's wall time)."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  summary, rows = load_run(workdir)
  return dict(format=PACKED_FORMAT, config=config, summary=summary, metrics=rows, **extra)


def read_packed(workdir: str) -> Optional[Dict]:
  """The packed result of the cell at `workdir`, None if there is none."""
  path = packed_path(workdir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    packed = json.load(f)
  if packed.get("format") != PACKED_FORMAT:
    raise ValueError(f"{path}: not a packed cell ({PACKED_FORMAT!r})")
  return packed


def load_run(workdir: str) -> Optional[Tuple[Dict, List[Dict]]]:
  """(summary, metrics rows) of a finished run, None if summary.json is missing; a cell whose
  folder holds no finished run is read from its packed result (`packed_path`) if it has one."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    packed = read_packed(workdir)
    return None if packed is None else (packed["summary"], packed["metrics"])
  with open(path) as f:
    summary = json.load(f)
  rows = []
  metrics = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(metrics):
    with open(metrics) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  return summary, rows


def load_cell(root, partition, method, seeds, cells=None) -> List[Tuple[Dict, List[Dict]]]:
  """The finished runs of one table cell; `cells`: if given, only (partition, method, seed)
  in it count (launch/compare.py passes the cells finished with the comparison's config)."""
  runs = [load_run(cell_dir(root, partition, method, s)) for s in seeds
          if cells is None or (partition, method, s) in cells]
  return [r for r in runs if r is not None]


def cell_stats(values: Sequence[float]) -> Tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(np.mean(v)), float(np.std(v))


def results_table(root: str, methods: Sequence[str], partitions: Sequence[str],
                  seeds: Sequence[int], metric: str = METRIC, cells=None) -> str:
  """Markdown table: rows = methods, columns = partitions, mean ± std of `metric` in %."""
  stats = {}
  for p in partitions:
    for m in methods:
      vals = [100.0 * s[metric] for s, _ in load_cell(root, p, m, seeds, cells)]
      if vals:
        stats[p, m] = (*cell_stats(vals), len(vals))
  best = {}
  for p in partitions:
    means = [round(stats[p, m][0], 2) for m in methods if (p, m) in stats]
    if means:
      best[p] = max(means)
  lines = ["| method | " + " | ".join(partitions) + " |",
           "|---|" + "---|" * len(partitions)]
  for m in methods:
    cells = []
    for p in partitions:
      if (p, m) not in stats:
        cells.append("-")
        continue
      mean, std, n = stats[p, m]
      text = f"{mean:.2f} ± {std:.2f}"
      if round(mean, 2) == best[p]:
        text = f"**{text}**"
      if n < len(seeds):
        text += f" (n={n})"
      cells.append(text)
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def timing_table(root, methods, partitions, seeds, cells=None) -> str:
  """Mean simulated time and wall time of the finished runs, per method and partition."""
  lines = ["| method | " + " | ".join(f"{p} simulated s | {p} wall s" for p in partitions) + " |",
           "|---|" + "---|---|" * len(partitions)]
  for m in methods:
    row = []
    for p in partitions:
      runs = load_cell(root, p, m, seeds, cells)
      if runs:
        row += [f"{np.mean([s['simulated_time_s'] for s, _ in runs]):.1f}",
                f"{np.mean([s['wall_time_s'] for s, _ in runs]):.0f}"]
      else:
        row += ["-", "-"]
    lines.append(f"| {m} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def mean_curve(curves: Sequence[Tuple[np.ndarray, np.ndarray]], points: int = 200):
  """(grid, mean, std) of several (x, y) curves interpolated onto their common x range."""
  lo = max(float(x[0]) for x, _ in curves)
  hi = min(float(x[-1]) for x, _ in curves)
  grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
  ys = np.stack([np.interp(grid, x, y) for x, y in curves])
  return grid, ys.mean(0), ys.std(0)


def plot_curves(root: str, methods: Sequence[str], partitions: Sequence[str],
                seeds: Sequence[int], x_key: str, path: str, xlabel: str,
                log_x: bool = False, cells=None) -> None:
  """Mean test accuracy (%) vs `x_key` with a ± std band; one subplot per partition."""
  fig, axes = plt.subplots(1, len(partitions), figsize=(6.0 * len(partitions), 4.5),
                           squeeze=False)
  for ax, p in zip(axes[0], partitions):
    for m in methods:
      curves = []
      for _, rows in load_cell(root, p, m, seeds, cells):
        if rows:
          x = np.array([r[x_key] for r in rows], np.float64)
          y = 100.0 * np.array([r["test_accuracy"] for r in rows], np.float64)
          curves.append((x, y))
      if not curves:
        continue
      grid, mean, std = mean_curve(curves)
      line, = ax.plot(grid, mean, label=f"{m} (n={len(curves)})", lw=1.5)
      ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    if log_x:
      ax.set_xscale("log")
    ax.set_title(p)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(root: str, methods: Sequence[str], partitions: Sequence[str],
                 seeds: Sequence[int], cells=None) -> Dict[str, str]:
  """results.md, accuracy_vs_time.png and accuracy_vs_iteration.png in `root` (`cells`: only
  those (partition, method, seed) count, if given)."""
  seeds_txt = ", ".join(map(str, seeds))
  md = ["# Comparison", "",
        f"Test accuracy (%): mean ± std over seeds {seeds_txt} of `final_accuracy` (mean of the "
        "last 5 global iterations); best per column in bold; std with ddof=0.", "",
        results_table(root, methods, partitions, seeds, cells=cells),
        "Run times (mean over seeds):", "", timing_table(root, methods, partitions, seeds, cells)]
  paths = dict(table=os.path.join(root, "results.md"),
               time=os.path.join(root, "accuracy_vs_time.png"),
               iteration=os.path.join(root, "accuracy_vs_iteration.png"))
  os.makedirs(root, exist_ok=True)
  with open(paths["table"], "w") as f:
    f.write("\n".join(md))
  plot_curves(root, methods, partitions, seeds, "simulated_time_s", paths["time"],
              "simulated time (s, log scale)", log_x=True, cells=cells)
  plot_curves(root, methods, partitions, seeds, "global_iteration", paths["iteration"],
              "global iteration", cells=cells)
  return paths


# Staleness histograms (issue 28, item 3), drawn from finished cells (run folders or packed
# results, as `load_run` reads them). The paper's Fig. 2(a) and Fig. 4: gas_jax/figures.py.


def save_figure(fig, path: str) -> None:
  """Writes `fig` to `path` (folders made) and closes it."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_staleness_rows(groups: Dict[str, Sequence[Sequence[Dict]]], path: str,
                        title: str = "") -> Dict[str, Dict[str, Dict[int, int]]]:
  """Staleness histograms, one subplot per group (a method): bars of the share of aggregated
  models at each model staleness and of merged activation minibatches at each activation
  staleness (`gas_jax.staleness`), summed over every row of every run of the group; `groups`:
  {label: [rows of one run, ...]}. Rows without the columns (older runs) count nothing.
  Returns the counts drawn: {label: {"model" / "activation": {staleness: count}}}."""
  from gas_jax import staleness  # noqa: PLC0415  (imported here: this block is appended)
  labels = list(groups)
  cols = max(1, min(4, len(labels)))
  nrows = max(1, -(-len(labels) // cols))
  fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 3.2 * nrows), squeeze=False)
  for ax in axes.flat[len(labels):]:
    ax.axis("off")
  drawn_counts = {}
  for ax, label in zip(axes.flat, labels):
    rows = [r for run in groups[label] for r in run]
    drawn, drawn_counts[label] = False, {}
    for i, kind in enumerate(staleness.KINDS):
      counts = staleness.merge_hists(r.get(f"{kind}_staleness_hist") for r in rows)
      if not counts:
        continue
      drawn_counts[label][kind] = counts
      total = sum(counts.values())
      mean = sum(v * n for v, n in counts.items()) / total
      x = np.array(list(counts), np.float64) + (i - 0.5) * 0.4
      ax.bar(x, [n / total for n in counts.values()], width=0.4,
             label=f"{kind} (n={total}, mean {mean:.2f}, max {max(counts)})")
      drawn = True
    ax.set_title(f"{label} (runs: {len(groups[label])})", fontsize=10)
    ax.set_xlabel("staleness (model: global versions; activation: server updates)",
                  fontsize=7)
    ax.set_ylabel("share")
    ax.grid(alpha=0.3)
    if drawn:
      ax.legend(fontsize=7)
    else:
      ax.text(0.5, 0.5, "no staleness columns", ha="center", va="center",
              transform=ax.transAxes)
  if title:
    fig.suptitle(title)
  save_figure(fig, path)
  return drawn_counts


def plot_staleness(root: str, methods: Sequence[str], partitions: Sequence[str],
                   seeds: Sequence[int], path: str, cells=None) -> Dict:
  """`plot_staleness_rows` of a comparison (`plot_curves`' arguments): one subplot per method
  (per "partition / method" with several partitions) that has finished cells (`load_cell`: run
  folders or packed results; `cells` as there), its seeds pooled. Returns the counts drawn."""
  groups = {}
  for p in partitions:
    for m in methods:
      runs = [rows for _, rows in load_cell(root, p, m, seeds, cells)]
      if runs:
        groups[m if len(partitions) == 1 else f"{p} / {m}"] = runs
  return plot_staleness_rows(groups, path, title="staleness of aggregated models and merged "
                      "activations")
