"""Comparison reports from run workdirs: a paper-style table and accuracy curves.

Layout (written by `launch/compare.py`): ROOT/<partition>/<method>/seed<k>/ holding each run's
summary.json and metrics.jsonl (`gas_jax.metrics`), or ROOT/<partition>/<method>/seed<k>.json,
the same run packed into one file (`cell_results.pack_run`, written by `launch/campaign.py`). The tables and
plots take the cells' results as given (`Results`: one source of truth per cell, chosen by
`gas_jax.cell_results.resolve`); they never look for files themselves.

- `results_table`: the layout of the paper's Table 1 - one row per method, one column per
  partition, mean ± std over seeds of summary.json's final_accuracy (mean test accuracy of its
  last evaluations, `window_note` says how many) in %, the best mean of each column in bold. The
  std is the population std (numpy ddof=0; the paper does not say which); a cell with fewer
  finished seeds than asked says how many it has, a cell without any shows "-".
- `time_to_accuracy_table`: the same layout, simulated seconds to reach each target accuracy
  (mean ± std over the seeds that reached it, and how many did).
- `plot_curves`: mean test accuracy against the simulated clock (or the global iteration), a
  shaded band for ± std over seeds, one line per method and one subplot per partition. Each seed's
  curve is linearly interpolated onto a grid covering the range all of that method's seeds reach.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np

from gas_jax import metrics as metrics_lib
from gas_jax.errors import RunError

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


Results = Dict[Tuple[str, str, int], Tuple[Dict, List[Dict]]]


def load_cell(results: Results, partition, method, seeds) -> List[Tuple[Dict, List[Dict]]]:
  """The finished runs of one table cell: those of `results` ((partition, method, seed) ->
  (summary, rows), each cell's one source of truth, `cell_results.resolve`) for `seeds`."""
  return [results[partition, method, s] for s in seeds if (partition, method, s) in results]


def cell_stats(values: Sequence[float]) -> Tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(np.mean(v)), float(np.std(v))


def results_table(results: Results, methods: Sequence[str], partitions: Sequence[str],
                  seeds: Sequence[int], metric: str = METRIC) -> str:
  """Markdown table: rows = methods, columns = partitions, mean ± std of `metric` in %."""
  stats = {}
  for p in partitions:
    for m in methods:
      vals = [100.0 * s[metric] for s, _ in load_cell(results, p, m, seeds)]
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


def timing_table(results: Results, methods, partitions, seeds) -> str:
  """Mean simulated time and wall time of the finished runs, per method and partition."""
  lines = ["| method | " + " | ".join(f"{p} simulated s | {p} wall s" for p in partitions) + " |",
           "|---|" + "---|---|" * len(partitions)]
  for m in methods:
    row = []
    for p in partitions:
      runs = load_cell(results, p, m, seeds)
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


def plot_curves(results: Results, methods: Sequence[str], partitions: Sequence[str],
                seeds: Sequence[int], x_key: str, path: str, xlabel: str,
                log_x: bool = False) -> None:
  """Mean test accuracy (%) vs `x_key` with a ± std band; one subplot per partition."""
  fig, axes = plt.subplots(1, len(partitions), figsize=(6.0 * len(partitions), 4.5),
                           squeeze=False)
  for ax, p in zip(axes[0], partitions):
    for m in methods:
      curves = []
      for _, rows in load_cell(results, p, m, seeds):
        x, y = accuracy_points(rows, x_key)
        if len(x):
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
  save_figure(fig, path)


def save_figure(fig, path: str) -> None:
  """Saves a PNG whole or not at all (laid out, folders made, a temporary file renamed over
  `path`), closes `fig`."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp.png")
  try:
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.unlink(tmp)


COUNTED_FILE = "cells.json"


def write_report(root: str, methods: Sequence[str], partitions: Sequence[str],
                 seeds: Sequence[int], results: Results, sources: Optional[Dict] = None,
                 targets: Optional[Sequence[float]] = None) -> Dict[str, str]:
  """results.md, accuracy_vs_time.png, accuracy_vs_iteration.png and staleness.png in `root`
  from `results` ((partition, method, seed) -> (summary, rows): the cells that count), each
  file written whole or not at all; with `sources` (key -> the file each result was read from)
  also cells.json, the list of the cells that counted (the paper's figures read only those:
  `cell_results.load_counted`); `targets`: the time-to-accuracy table's (default: those the
  summaries hold). Raises RunError, writing nothing, when `results` is empty: an empty table
  never replaces a good one."""
  if not results:
    raise RunError("no cell of this grid finished with this config: results.md not written "
                   "(check --config.num_global_iters and the other overrides)")
  seeds_txt = ", ".join(map(str, seeds))
  window = window_note(results, methods, partitions, seeds)
  if targets is None:
    targets = stored_targets(results)
  md = ["# Comparison", "",
        f"Test accuracy (%): mean ± std over seeds {seeds_txt} of `final_accuracy` ({window}); "
        "best per column in bold; std with ddof=0; (n=k): only k of the seeds finished.", "",
        results_table(results, methods, partitions, seeds),
        "Time to accuracy (simulated s): mean ± std (ddof=0) over the seeds that reached the "
        "target, at the first evaluated global iteration with test accuracy >= target; (reached"
        "/finished seeds).", "",
        time_to_accuracy_table(results, methods, partitions, seeds, targets),
        "Run times (mean over seeds):", "", timing_table(results, methods, partitions, seeds)]
  paths = dict(table=os.path.join(root, "results.md"),
               time=os.path.join(root, "accuracy_vs_time.png"),
               iteration=os.path.join(root, "accuracy_vs_iteration.png"),
               staleness=os.path.join(root, "staleness.png"))
  os.makedirs(root, exist_ok=True)
  plot_staleness(results, methods, partitions, seeds, paths["staleness"])
  plot_curves(results, methods, partitions, seeds, "simulated_time_s", paths["time"],
              "simulated time (s, log scale)", log_x=True)
  plot_curves(results, methods, partitions, seeds, "global_iteration", paths["iteration"],
              "global iteration")
  if sources is not None:
    paths["cells"] = os.path.join(root, COUNTED_FILE)
    counted = [dict(partition=p, method=m, seed=s, source=os.path.relpath(sources[p, m, s], root))
               for p, m, s in sorted(results, key=str)]
    metrics_lib.atomic_write(paths["cells"], json.dumps(dict(cells=counted), indent=1) + "\n")
  metrics_lib.atomic_write(paths["table"], "\n".join(md))
  return paths


def accuracy_points(rows: Sequence[Dict], x_key: str) -> Tuple[np.ndarray, np.ndarray]:
  """(x, test accuracy in %) of the evaluated rows (with `eval_every` > 1 the others hold
  null)."""
  ev = [r for r in rows if r.get("test_accuracy") is not None]
  return (np.array([r[x_key] for r in ev], np.float64),
          100.0 * np.array([r["test_accuracy"] for r in ev], np.float64))


def window_note(results: Results, methods, partitions, seeds) -> str:
  """final_accuracy's window over the finished cells, with the true count of evaluations
  (summary.json's final_accuracy_evals): 'mean of the last 5 evaluations', or the range and
  the count of each (partition, method) when they differ."""
  counts = {}
  for p in partitions:
    for m in methods:
      ns = sorted({metrics_lib.final_evals(s) for s, _ in load_cell(results, p, m, seeds)})
      if ns:
        counts[p, m] = ns
  if not counts:
    return "mean of the last 5 evaluations"
  phrase = metrics_lib.evals_phrase([n for ns in counts.values() for n in ns])
  if len({tuple(ns) for ns in counts.values()}) == 1 and len(next(iter(counts.values()))) == 1:
    return phrase
  each = ", ".join(f"{p}/{m} {'/'.join(map(str, ns))}" for (p, m), ns in counts.items())
  return f"{phrase}; per cell: {each}"


def stored_targets(results: Results) -> List[float]:
  """The targets the cells' summaries hold in time_to_accuracy (sorted)."""
  keys = set()
  for s, _ in results.values():
    keys.update((s.get("time_to_accuracy") or {}).keys())
  return sorted(float(k) for k in keys)


def seconds_to(summary: Dict, rows: Sequence[Dict], target: float) -> Optional[float]:
  """Simulated seconds to reach `target` of one run: from its summary's time_to_accuracy, or
  computed from its rows (`metrics.time_to_accuracy`) for a target it does not hold."""
  key = metrics_lib.target_key(target)
  stored = summary.get("time_to_accuracy") or {}
  if key in stored:
    hit = stored[key]
  else:
    hit = metrics_lib.time_to_accuracy(list(rows), [target],
                                       int(summary.get("eval_every", 1)))[key]
  return None if hit is None else float(hit["simulated_time_s"])


def time_to_accuracy_table(results: Results, methods: Sequence[str], partitions: Sequence[str],
                           seeds: Sequence[int], targets: Sequence[float]) -> str:
  """Markdown table: rows = methods, one column per partition and target, the mean ± std
  (ddof=0) of the simulated seconds to reach the target over the seeds that reached it, and
  (reached/finished seeds); "-" for a cell without finished runs (issue #28: the paper's "time
  to reach 60 %")."""
  heads = [f"{p} {100 * t:g} %" for p in partitions for t in targets]
  lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
  for m in methods:
    row = []
    for p in partitions:
      runs = load_cell(results, p, m, seeds)
      for t in targets:
        if not runs:
          row.append("-")
          continue
        secs = [x for x in (seconds_to(s, rows, t) for s, rows in runs) if x is not None]
        mean, std = cell_stats(secs) if secs else (None, None)
        text = "-" if mean is None else f"{mean:.1f} ± {std:.1f}"
        row.append(f"{text} ({len(secs)}/{len(runs)})")
    lines.append(f"| {m} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


# Staleness histograms (issue 28, item 3), drawn from the cells that count. The paper's
# Fig. 2(a) and Fig. 4: gas_jax/figures.py.


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


def plot_staleness(results: Results, methods: Sequence[str], partitions: Sequence[str],
                   seeds: Sequence[int], path: str) -> Dict:
  """`plot_staleness_rows` of a comparison (`plot_curves`' arguments): one subplot per method
  (per "partition / method" with several partitions) that has cells in `results`, its seeds
  pooled. Returns the counts drawn."""
  groups = {}
  for p in partitions:
    for m in methods:
      runs = [rows for _, rows in load_cell(results, p, m, seeds)]
      if runs:
        groups[m if len(partitions) == 1 else f"{p} / {m}"] = runs
  return plot_staleness_rows(groups, path, title="staleness of aggregated models and merged "
                      "activations")
