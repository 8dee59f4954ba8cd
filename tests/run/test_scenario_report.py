"""launch/scenario_report.py: one table and one plot over the scenario comparisons, read from
each comparison's counted cells (cells.json), on hand-made cells."""
import json
import os
import subprocess
import sys

from helpers import fake_cells
from helpers.cli_runs import ROOT
from gas_jax import report


def _comparison(root, finals):
  """A comparison folder whose cells.json counts gas seeds 0 and 1 (T=3, finals given) and
  leaves out a seed-7 run lying beside them."""
  cells = []
  for seed, final in enumerate(finals):
    wd = report.cell_dir(root, "shard2", "gas", seed)
    fake_cells.fake_run(wd, final, seed)
    cells.append(dict(partition="shard2", method="gas", seed=seed,
                      source=os.path.relpath(os.path.join(wd, "summary.json"), root)))
  fake_cells.fake_run(report.cell_dir(root, "shard2", "gas", 7), 0.99, 7)   # not counted
  with open(os.path.join(root, report.COUNTED_FILE), "w") as f:
    json.dump(dict(cells=cells), f)


def test_table_and_plot_over_the_scenarios(tmp_path):
  _comparison(str(tmp_path / "always"), [0.6, 0.8])
  _comparison(str(tmp_path / "dropout20"), [0.5, 0.5])
  proc = subprocess.run(
      [sys.executable, "launch/scenario_report.py", f"--workdir={tmp_path}", "--methods=gas",
       "--scenarios=always,dropout20,markov30"], cwd=ROOT, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = (tmp_path / "scenarios.md").read_text()
  # fake_cells' rows: accuracy final * i / 3 at simulated time (1 + seed) * i.
  assert "| gas | always | 2 | 70.00 ± 10.00 |" in text        # 99 % of seed 7 left out
  assert "| gas | dropout20 | 2 | 50.00 ± 0.00 |" in text
  assert "No finished cells for: markov30." in text
  assert os.path.getsize(tmp_path / "scenarios.png") > 1000
  empty = subprocess.run(
      [sys.executable, "launch/scenario_report.py", f"--workdir={tmp_path}", "--methods=gas",
       "--scenarios=markov30"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert empty.returncode == 1 and "no scenario under" in empty.stderr
