"""gas_jax.report on fake workdirs: the Table 1 layout (mean ± std, bolding), the curves, and
launch/compare.py skipping finished cells."""
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from helpers import fake_cells
from helpers.cli_runs import ROOT
from gas_jax import cell_results, report

FINAL = {("shard2", "gas"): [0.90, 0.92], ("shard2", "fedavg"): [0.80, 0.86],
         ("dir0.1", "gas"): [0.70], ("dir0.1", "fedavg"): [0.75, 0.77]}


def _fake_run(wd, final, seed, lr=0.01):
  """A finished 3-iteration cell of configs/digits.py (config.json as compare.py's cell)."""
  fake_cells.fake_run(wd, final, seed, 3, lr)


def _results(root, methods, partitions, seeds):
  """The finished cells under `root` as the launchers pass them to the report."""
  out = {}
  for p in partitions:
    for m in methods:
      for s in seeds:
        wd = report.cell_dir(root, p, m, s)
        if os.path.exists(os.path.join(wd, "summary.json")):
          out[p, m, s] = cell_results.read_run_result(wd)
  return out


@pytest.fixture
def fake_root(tmp_path):
  for (p, m), finals in FINAL.items():
    for seed, acc in enumerate(finals):
      _fake_run(report.cell_dir(str(tmp_path), p, m, seed), acc, seed)
  os.makedirs(report.cell_dir(str(tmp_path), "shard2", "ca2fl", 0))   # no summary: unfinished
  return str(tmp_path)


def test_results_table(fake_root):
  args = (["gas", "fedavg", "ca2fl"], ["shard2", "dir0.1"], [0, 1])
  table = report.results_table(_results(fake_root, *args), *args)
  assert table.splitlines() == [
      "| method | shard2 | dir0.1 |",
      "|---|---|---|",
      "| gas | **91.00 ± 1.00** | 70.00 ± 0.00 (n=1) |",    # (90+92)/2, population std 1
      "| fedavg | 83.00 ± 3.00 | **76.00 ± 1.00** |",
      "| ca2fl | - | - |"]


def test_ties_are_all_bold(tmp_path):
  for m, accs in (("a", [0.5, 0.7]), ("b", [0.6, 0.6]), ("c", [0.1, 0.2])):
    for seed, acc in enumerate(accs):
      _fake_run(report.cell_dir(str(tmp_path), "iid", m, seed), acc, seed)
  args = (["a", "b", "c"], ["iid"], [0, 1])
  lines = report.results_table(_results(str(tmp_path), *args), *args).splitlines()
  assert lines[2:] == ["| a | **60.00 ± 10.00** |", "| b | **60.00 ± 0.00** |",
                       "| c | 15.00 ± 5.00 |"]


def test_mean_curve_interpolates_on_common_range():
  grid, mean, std = report.mean_curve([(np.array([0.0, 1.0, 2.0]), np.array([0.0, 10.0, 20.0])),
                                       (np.array([0.0, 2.0, 4.0]), np.array([0.0, 10.0, 20.0]))],
                                      points=3)
  np.testing.assert_allclose(grid, [0.0, 1.0, 2.0])
  np.testing.assert_allclose(mean, [0.0, 7.5, 15.0])
  np.testing.assert_allclose(std, [0.0, 2.5, 5.0])


def test_write_report_files(fake_root):
  args = (["gas", "fedavg", "ca2fl"], ["shard2", "dir0.1"], [0, 1])
  paths = report.write_report(fake_root, *args, _results(fake_root, *args))
  with open(paths["table"]) as f:
    text = f.read()
  assert "| gas | **91.00 ± 1.00** | 70.00 ± 0.00 (n=1) |" in text
  for key in ("time", "iteration"):
    with open(paths[key], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(paths[key])
    assert img.shape[1] > img.shape[0] > 100          # two side-by-side subplots


def test_partition_label():
  from configs import digits
  c = digits.get_config()
  assert report.partition_label(c) == "shard2"
  c.data.partition, c.data.alpha = "dirichlet", 0.1
  assert report.partition_label(c) == "dir0.1"


def test_compare_skips_finished_cells_and_writes_report(fake_root):
  """Every cell already has summary.json -> nothing runs; the three files are written."""
  for seed in (0, 1):
    _fake_run(report.cell_dir(fake_root, "dir0.1", "gas", seed), 0.7, seed)
  out = subprocess.run(
      [sys.executable, "launch/compare.py", "--config=configs/digits.py",
       "--methods=gas,fedavg", "--seeds=0,1", "--partitions=shard2,dir0.1",
       f"--workdir={fake_root}", "--config.num_global_iters=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "0 to run" in out.stderr
  for name in ("results.md", "accuracy_vs_time.png", "accuracy_vs_iteration.png"):
    assert os.path.exists(os.path.join(fake_root, name))
  assert "| gas | **91.00 ± 1.00** | 70.00 ± 0.00 |" in out.stdout


def test_compare_never_reuses_a_cell_of_other_overrides(fake_root):
  """A finished cell is keyed by its whole config: with another learning rate it is reported
  (and left as it is), not counted as done."""
  wd = report.cell_dir(fake_root, "shard2", "gas", 0)
  _fake_run(wd, 0.9, 0, lr=0.05)
  with open(os.path.join(wd, "summary.json")) as f:
    before = f.read()
  out = subprocess.run(
      [sys.executable, "launch/compare.py", "--config=configs/digits.py", "--methods=gas",
       "--seeds=0", "--partitions=shard2", f"--workdir={fake_root}",
       "--config.num_global_iters=3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "holds a run with another config (optimizer.lr: 0.05 -> 0.01" in out.stderr
  assert "0 already done, 0 to run" in out.stderr
  with open(os.path.join(wd, "summary.json")) as f:
    assert f.read() == before
  # Nor counted: with no other cell, there is no table at all (an empty one is an error).
  assert "error: no cell of this grid finished with this config" in out.stderr
  assert not os.path.exists(os.path.join(fake_root, "results.md"))
