"""Comparison reports from run workdirs: a paper-style table and accuracy curves.

Layout (written by `launch/compare.py`): ROOT/<partition>/<method>/seed<k>/ holding each run's
summary.json and metrics.jsonl (`gas_jax.metrics`), or ROOT/<partition>/<method>/seed<k>.json,
the same run packed into one file (`pack_run`, written by `launch/campaign.py`). Everything here
only reads those files.

- `results_table`: the layout of the paper's Table 1 - one row per method, one column per
  partition, mean ± std over seeds of summary.json's final_accuracy (mean test accuracy of the
  last 5 evaluations; `window_note` says the true count) in %, the best mean of each column in bold. The std is the population
  std (numpy ddof=0; the paper does not say which); a cell with fewer finished seeds than asked
  says how many it has, a cell without any shows "-".
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
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(root: str, methods: Sequence[str], partitions: Sequence[str],
                 seeds: Sequence[int], cells=None,
                 targets: Optional[Sequence[float]] = None) -> Dict[str, str]:
  """results.md, accuracy_vs_time.png and accuracy_vs_iteration.png in `root` (`cells`: only
  those (partition, method, seed) count, if given; `targets`: the time-to-accuracy table's, by
  default those the summaries hold)."""
  seeds_txt = ", ".join(map(str, seeds))
  window = window_note(root, methods, partitions, seeds, cells)
  if targets is None:
    targets = stored_targets(root, methods, partitions, seeds, cells)
  md = ["# Comparison", "",
        f"Test accuracy (%): mean ± std over seeds {seeds_txt} of `final_accuracy` ({window}); "
        "best per column in bold; std with ddof=0.", "",
        results_table(root, methods, partitions, seeds, cells=cells),
        "Time to accuracy (simulated s): mean ± std (ddof=0) over the seeds that reached the "
        "target, at the first evaluated global iteration with test accuracy >= target; (reached"
        "/finished seeds).", "",
        time_to_accuracy_table(root, methods, partitions, seeds, targets, cells),
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


def accuracy_points(rows: Sequence[Dict], x_key: str) -> Tuple[np.ndarray, np.ndarray]:
  """(x, test accuracy in %) of the evaluated rows (with `eval_every` > 1 the others hold
  null)."""
  ev = [r for r in rows if r.get("test_accuracy") is not None]
  return (np.array([r[x_key] for r in ev], np.float64),
          100.0 * np.array([r["test_accuracy"] for r in ev], np.float64))


def window_note(root, methods, partitions, seeds, cells=None) -> str:
  """final_accuracy's window over the finished cells, with the true count of evaluations
  (summary.json's final_accuracy_evals): 'mean of the last 5 evaluations', or the range and
  the count of each (partition, method) when they differ."""
  counts = {}
  for p in partitions:
    for m in methods:
      ns = sorted({metrics_lib.final_evals(s) for s, _ in load_cell(root, p, m, seeds, cells)})
      if ns:
        counts[p, m] = ns
  if not counts:
    return "mean of the last 5 evaluations"
  phrase = metrics_lib.evals_phrase([n for ns in counts.values() for n in ns])
  if len({tuple(ns) for ns in counts.values()}) == 1 and len(next(iter(counts.values()))) == 1:
    return phrase
  each = ", ".join(f"{p}/{m} {'/'.join(map(str, ns))}" for (p, m), ns in counts.items())
  return f"{phrase}; per cell: {each}"


def stored_targets(root, methods, partitions, seeds, cells=None) -> List[float]:
  """The targets the finished cells' summaries hold in time_to_accuracy (sorted)."""
  keys = set()
  for p in partitions:
    for m in methods:
      for s, _ in load_cell(root, p, m, seeds, cells):
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


def time_to_accuracy_table(root: str, methods: Sequence[str], partitions: Sequence[str],
                           seeds: Sequence[int], targets: Sequence[float], cells=None) -> str:
  """Markdown table: rows = methods, one column per partition and target, the mean ± std
  (ddof=0) of the simulated seconds to reach the target over the seeds that reached it, and
  (reached/finished seeds); "-" for a cell without finished runs (issue #28: the paper's "time
  to reach 60 %")."""
  heads = [f"{p} {100 * t:g} %" for p in partitions for t in targets]
  lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
  for m in methods:
    row = []
    for p in partitions:
      runs = load_cell(root, p, m, seeds, cells)
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
