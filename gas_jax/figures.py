"""The paper's figures from finished comparison folders (`launch/compare.py` layout, read with
`gas_jax.report`): Fig. 2(a), the gradient dissimilarity with and without generation, and Fig. 4,
accuracy against simulated time for every number of local iterations E on one axis.
`launch/figures.py` is the command line (`launch/fig2.sh`, `launch/table2.sh` call it).
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from gas_jax import cell_results, report

plt = report.plt


def discover_cells(root: str) -> Tuple[Dict[Tuple[str, str], List[int]], report.Results]:
  """({(partition, method): seeds}, results) of the cells that counted in ROOT's comparison
  (ROOT/cells.json, written by `launch/compare.py`: one source of truth per cell, so a figure
  never mixes in a run of other overrides lying in the same folder)."""
  results = cell_results.load_counted(root)
  found: Dict[Tuple[str, str], List[int]] = {}
  for p, m, s in results:
    found.setdefault((p, m), []).append(s)
  return {k: sorted(v) for k, v in found.items()}, results


def _curves(runs, x_key: str, y_key: str, scale: float = 1.0):
  """(x, y) per run from the rows that have both keys (non-null)."""
  out = []
  for rows in runs:
    rows = [r for r in rows if r.get(x_key) is not None and r.get(y_key) is not None]
    if rows:
      out.append((np.array([r[x_key] for r in rows], np.float64),
                  scale * np.array([r[y_key] for r in rows], np.float64)))
  return out


def _band(ax, curves, **kw):
  """Mean ± std over the runs' curves; returns (grid, mean)."""
  grid, mean, std = report.mean_curve(curves)
  line, = ax.plot(grid, mean, lw=1.5, **kw)
  ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
  return grid, mean


FIG2_LABELS = {"gas": "GAS (with generation)", "gas_nogen": "GAS without generation"}


def plot_dissimilarity(root: str, path: str, methods: Sequence[str] = ("gas", "gas_nogen"),
                       log_y: bool = True) -> Dict[str, Dict[str, tuple]]:
  """Fig. 2(a): gradient dissimilarity of the server update (metrics `grad_dissimilarity`,
  spec §1.10) against the global iteration, mean ± std over the seeds found under ROOT
  (`discover_cells`), one line per method, one subplot per partition. Returns what was drawn:
  {partition: {method: (iterations, mean dissimilarity, number of runs)}}."""
  found, results = discover_cells(root)
  partitions = sorted({p for p, m in found if m in methods})
  fig, axes = plt.subplots(1, max(1, len(partitions)), figsize=(6.0 * max(1, len(partitions)),
                                                                 4.5), squeeze=False)
  drawn = {}
  for ax, p in zip(axes[0], partitions):
    for m in methods:
      seeds = found.get((p, m), [])
      curves = _curves([rows for _, rows in report.load_cell(results, p, m, seeds)],
                       "global_iteration", "grad_dissimilarity")
      if curves:
        grid, mean = _band(ax, curves, label=f"{FIG2_LABELS.get(m, m)} (n={len(curves)})")
        drawn.setdefault(p, {})[m] = (grid, mean, len(curves))
    if log_y and ax.lines:
      ax.set_yscale("log")
    ax.set_title(f"Fig. 2(a): {p}")
    ax.set_xlabel("global iteration")
    ax.set_ylabel("gradient dissimilarity")
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  report.save_figure(fig, path)
  return drawn


def plot_local_iters(roots: Dict[int, str], path: str, methods: Sequence[str],
                     minutes: bool = True) -> Dict[str, Dict[Tuple[str, int], tuple]]:
  """Fig. 4: mean test accuracy (%) against simulated time for every E on one axis (one
  subplot per partition): `roots` = {E: the comparison folder of that E}; colour = E, line
  style = method; ± std band over the seeds found there (`discover_cells`). Rows without a test
  accuracy (an evaluation cadence) are skipped. Returns what was drawn: {partition:
  {(method, E): (time grid, mean accuracy %, number of runs)}}."""
  discovered = {e: discover_cells(r) for e, r in roots.items()}
  found = {e: d[0] for e, d in discovered.items()}
  partitions = sorted({p for f in found.values() for p, m in f if m in methods})
  styles = ["-", "--", ":", "-."]
  colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(1, len(roots))))
  fig, axes = plt.subplots(1, max(1, len(partitions)), figsize=(7.0 * max(1, len(partitions)),
                                                                 5.0), squeeze=False)
  drawn = {}
  for ax, p in zip(axes[0], partitions):
    for ci, e in enumerate(sorted(roots)):
      for mi, m in enumerate(methods):
        seeds = found[e].get((p, m), [])
        runs = [rows for _, rows in report.load_cell(discovered[e][1], p, m, seeds)]
        curves = [(x / (60.0 if minutes else 1.0), y) for x, y in
                  _curves(runs, "simulated_time_s", "test_accuracy", 100.0)]
        if curves:
          grid, mean = _band(ax, curves, color=colours[ci], ls=styles[mi % len(styles)],
                             label=f"{m} E={e} (n={len(curves)})")
          drawn.setdefault(p, {})[m, e] = (grid, mean, len(curves))
    ax.set_title(f"Fig. 4: {p}")
    ax.set_xlabel("simulated time (min)" if minutes else "simulated time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=7, ncol=2, loc="lower right")
  report.save_figure(fig, path)
  return drawn
