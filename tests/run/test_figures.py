"""Staleness histograms (gas_jax.report.plot_staleness), Fig. 2(a) and Fig. 4 (gas_jax.figures,
launch/figures.py) on fabricated finished cells: run folders and packed results."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers.cli_runs import ROOT
from gas_jax import cell_results, figures, report


def _cell(root, partition, method, seed, rows, packed=False, counted=True):
  """A finished cell (run folder, or campaign's packed result: WORKDIR.json, no folder), listed
  in ROOT/cells.json as compare.py lists the cells that counted (unless `counted` is False)."""
  wd = report.cell_dir(str(root), partition, method, seed)
  summary = dict(final_accuracy=0.5, simulated_time_s=1.0, wall_time_s=1.0,
                 global_iterations=len(rows))
  if packed:
    os.makedirs(os.path.dirname(wd), exist_ok=True)
    source = report.packed_path(wd)
    with open(source, "w") as f:
      json.dump(dict(format=report.PACKED_FORMAT, config={}, summary=summary, metrics=rows), f)
  else:
    os.makedirs(wd)
    source = os.path.join(wd, "summary.json")
    with open(source, "w") as f:
      json.dump(summary, f)
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  if counted:
    listing = os.path.join(str(root), report.COUNTED_FILE)
    cells = json.load(open(listing))["cells"] if os.path.exists(listing) else []
    cells.append(dict(partition=partition, method=method, seed=seed,
                      source=os.path.relpath(source, str(root))))
    with open(listing, "w") as f:
      json.dump(dict(cells=cells), f)


def test_plot_staleness_counts_every_row(tmp_path):
  _cell(tmp_path, "shard2", "gas", 0, [
      dict(model_staleness_hist={"0": 1, "1": 1}, activation_staleness_hist={"0": 2}),
      dict(model_staleness_hist={"2": 2}, activation_staleness_hist={"3": 2})])
  _cell(tmp_path, "shard2", "gas", 1, [dict(model_staleness_hist={"0": 2},
                                            activation_staleness_hist=None),
                                       dict(test_accuracy=0.3)], packed=True)   # older row
  _cell(tmp_path, "shard2", "fedavg", 0, [dict(model_staleness_hist={"0": 2},
                                               activation_staleness_hist=None)])
  os.makedirs(report.cell_dir(str(tmp_path), "shard2", "ca2fl", 0))   # unfinished
  path = str(tmp_path / "staleness.png")
  results = cell_results.load_counted(str(tmp_path))
  drawn = report.plot_staleness(results, ["gas", "fedavg", "ca2fl"], ["shard2"], [0, 1], path)
  assert drawn == {"gas": {"model": {0: 3, 1: 1, 2: 2}, "activation": {0: 2, 3: 2}},
                   "fedavg": {"model": {0: 2}}}
  assert os.path.getsize(path) > 1000
  two = report.plot_staleness(results, ["fedavg"], ["shard2", "dir0.1"], [0], path)
  assert list(two) == ["shard2 / fedavg"]


def _fig2_root(tmp_path):
  for seed, base in ((2023, 1.0), (1998, 3.0)):
    _cell(tmp_path, "shard2", "gas", seed, [
        dict(global_iteration=i, grad_dissimilarity=base + i - 1) for i in (1, 2, 3)])
  _cell(tmp_path, "shard2", "gas_nogen", 2023, [
      dict(global_iteration=i, grad_dissimilarity=10.0 * i) for i in (1, 2, 3)], packed=True)
  # A finished run the comparison did not count (e.g. of other overrides) is never drawn.
  _cell(tmp_path, "shard2", "gas", 7, [
      dict(global_iteration=i, grad_dissimilarity=1e6) for i in (1, 2, 3)], counted=False)
  return str(tmp_path)


def test_fig2_dissimilarity_by_hand(tmp_path):
  root = _fig2_root(tmp_path)
  assert figures.discover_cells(root)[0] == {("shard2", "gas"): [1998, 2023],
                                             ("shard2", "gas_nogen"): [2023]}
  drawn = figures.plot_dissimilarity(root, str(tmp_path / "fig2a.png"))
  grid, mean, n = drawn["shard2"]["gas"]
  assert n == 2 and (grid[0], grid[-1]) == (1.0, 3.0)
  np.testing.assert_allclose(mean, grid + 1.0)   # mean of (i, i + 2)
  grid, mean, n = drawn["shard2"]["gas_nogen"]
  assert n == 1 and mean[-1] == pytest.approx(30.0)
  assert os.path.getsize(tmp_path / "fig2a.png") > 1000


def test_fig4_every_e_on_one_axis(tmp_path):
  """Times in minutes; rows without a test accuracy (evaluation cadence) are skipped."""
  for e, acc in ((10, 0.5), (20, 0.7)):
    root = tmp_path / f"E{e}"
    for m in ("gas", "ca2fl"):
      _cell(root, "shard2", m, 2023, [
          dict(simulated_time_s=60.0, test_accuracy=acc / 2),
          dict(simulated_time_s=90.0, test_accuracy=None),
          dict(simulated_time_s=120.0, test_accuracy=acc)])
  _cell(tmp_path / "E20", "dir0.1", "gas", 2023, [dict(simulated_time_s=30.0,
                                                       test_accuracy=0.1)])
  drawn = figures.plot_local_iters({10: str(tmp_path / "E10"), 20: str(tmp_path / "E20")},
                                   str(tmp_path / "fig4.png"), ["fedbuff", "ca2fl", "gas"])
  assert sorted(drawn) == ["dir0.1", "shard2"]
  assert sorted(drawn["shard2"]) == [("ca2fl", 10), ("ca2fl", 20), ("gas", 10), ("gas", 20)]
  grid, mean, n = drawn["shard2"]["gas", 20]
  assert n == 1 and (grid[0], grid[-1]) == (1.0, 2.0)
  assert (mean[0], mean[-1]) == pytest.approx((35.0, 70.0))
  assert os.path.getsize(tmp_path / "fig4.png") > 1000


def test_figures_command(tmp_path):
  root = _fig2_root(tmp_path)
  run = lambda *a: subprocess.run([sys.executable, "launch/figures.py", *a], cwd=ROOT,  # noqa
                                  capture_output=True, text=True, timeout=300)
  ok = run("fig2", f"--workdir={root}")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert ok.stdout.strip() == f"{root}/fig2a_dissimilarity.png"
  assert os.path.exists(ok.stdout.strip())
  empty = run("fig4", f"--workdir={tmp_path / 'nothing'}", "--local_iters=10")
  assert empty.returncode != 0 and "no finished runs" in empty.stderr
