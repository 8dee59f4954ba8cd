"""gas_jax.report on fake workdirs: the Table 1 layout (mean ± std, bolding), the curves, and
launch/compare.py skipping finished cells."""
import json
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
        elif os.path.exists(report.packed_path(wd)):
          packed = cell_results.read_packed_file(report.packed_path(wd))
          out[p, m, s] = packed["summary"], packed["metrics"]
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


def _write_run(wd, accs, times, summary, packed=False):
  """A finished run (or, `packed`, its packed file) with these per-row test accuracies (None:
  not evaluated) and simulated times."""
  rows = [dict(global_iteration=i, simulated_time_s=t, wall_time_s=0.1 * i, test_accuracy=a,
               test_loss=None if a is None else 1.0 - a)
          for i, (a, t) in enumerate(zip(accs, times), 1)]
  summary = dict(dict(global_iterations=len(rows), simulated_time_s=times[-1], wall_time_s=1.0),
                 **summary)
  if packed:
    os.makedirs(os.path.dirname(wd), exist_ok=True)
    with open(report.packed_path(wd), "w") as f:
      json.dump(dict(format=report.PACKED_FORMAT, config={}, summary=summary, metrics=rows), f)
    return
  os.makedirs(wd)
  with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(os.path.join(wd, "summary.json"), "w") as f:
    json.dump(summary, f)


def test_time_to_accuracy_table_from_summaries_and_packed_rows(tmp_path):
  root = str(tmp_path)
  hit = lambda it, t: dict(global_iteration=it, simulated_time_s=t)   # noqa: E731
  # gas: two run folders whose summaries hold the times (seed 1 never reaches 0.7).
  _write_run(report.cell_dir(root, "shard2", "gas", 0), [0.4, 0.65, 0.8], [10.0, 20.0, 30.0],
             dict(final_accuracy=0.8, final_accuracy_evals=3, eval_every=1,
                  time_to_accuracy={"0.6": hit(2, 20.0), "0.7": hit(3, 30.0)}))
  _write_run(report.cell_dir(root, "shard2", "gas", 1), [0.3, 0.61, 0.62], [12.0, 24.0, 36.0],
             dict(final_accuracy=0.62, final_accuracy_evals=3, eval_every=1,
                  time_to_accuracy={"0.6": hit(2, 24.0), "0.7": None}))
  # fedavg: one packed cell with eval_every=2 and no stored times: read from its rows. Row 3 was
  # the last of a shorter run (off the cadence): not counted, so 0.6 is reached at row 4.
  _write_run(report.cell_dir(root, "shard2", "fedavg", 0), [None, 0.5, 0.66, 0.7, 0.75],
             [5.0, 7.0, 9.0, 11.0, 13.0], dict(final_accuracy=0.65, final_accuracy_evals=3,
                                                 eval_every=2), packed=True)
  res = _results(root, ["gas", "fedavg", "ca2fl"], ["shard2"], [0, 1])
  table = report.time_to_accuracy_table(res, ["gas", "fedavg", "ca2fl"], ["shard2"], [0, 1],
                                        (0.6, 0.7))
  assert table.splitlines() == [
      "| method | shard2 60 % | shard2 70 % |",
      "|---|---|---|",
      "| gas | 22.0 ± 2.0 (2/2) | 30.0 ± 0.0 (1/2) |",
      "| fedavg | 11.0 ± 0.0 (1/1) | 11.0 ± 0.0 (1/1) |",
      "| ca2fl | - | - |"]
  assert report.stored_targets(res) == [0.6, 0.7]
  # The window says the true number of evaluations, per cell when they differ.
  assert report.window_note(res, ["gas", "fedavg"], ["shard2"], [0, 1]) == (
      "mean of the last 3 evaluations")
  paths = report.write_report(root, ["gas", "fedavg"], ["shard2"], [0, 1], res)
  with open(paths["table"]) as f:
    text = f.read()
  assert "`final_accuracy` (mean of the last 3 evaluations)" in text and "last 5" not in text
  assert "| gas | 22.0 ± 2.0 (2/2) | 30.0 ± 0.0 (1/2) |" in text
  x, y = report.accuracy_points(res["shard2", "fedavg", 0][1],
                                "global_iteration")      # the null rows are not plotted
  assert x.tolist() == [2, 3, 4, 5] and y.tolist() == pytest.approx([50, 66, 70, 75])


def test_window_differs_between_cells(fake_root):
  """fake_root's summaries predate final_accuracy_evals (T=3: every iteration, 3 evaluations);
  a T=1 cell beside them averaged one."""
  _write_run(report.cell_dir(fake_root, "iid", "gas", 0), [0.5], [1.0],
             dict(final_accuracy=0.5, final_accuracy_evals=1))
  both = _results(fake_root, ["gas", "fedavg"], ["shard2", "dir0.1", "iid"], [0, 1])
  assert report.window_note(both, ["gas"], ["shard2", "dir0.1"], [0, 1]) == (
      "mean of the last 3 evaluations")
  assert report.window_note(both, ["gas", "fedavg"], ["shard2", "iid"], [0, 1]) == (
      "mean of the last 1-3 evaluations; per cell: shard2/gas 3, shard2/fedavg 3, iid/gas 1")
