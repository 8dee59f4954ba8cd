"""launch/campaign.py: an ordered plan run within a time budget, each finished cell packed into
one file, finished cells skipped, and compare.py's report read from the packed files."""
import json
import os
import subprocess
import sys

import pytest

from gas_jax import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config.num_global_iters=1", "--config.clients.num=5",
        "--config.clients.participating=2", "--config.clients.local_iters=2"]


def _campaign(plan_path, out, *args):
  proc = subprocess.run(
      [sys.executable, "launch/campaign.py", f"--plan={plan_path}", f"--out={out}", *TINY,
       *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  return proc, (json.loads(lines[-1]) if lines else None)


def _plan(tmp_path, lines):
  path = tmp_path / "plan.txt"
  path.write_text("# a comment line\n\n" + "\n".join(lines) + "\n")
  return str(path)


CELLS = ["configs/digits.py gas shard2 0", "configs/digits.py fedavg shard2 0  # trailing",
         "configs/digits.py gas dir0.1 1 --config.optimizer.lr=0.02"]
NAMES = ["digits/shard2/gas/seed0", "digits/shard2/fedavg/seed0", "digits/dir0.1/gas/seed1"]


@pytest.mark.slow   # ~4 min on 2 shared cores (3 cells); test_budget_... packs a cell fast
def test_runs_the_plan_packs_each_cell_and_skips_finished_ones(tmp_path):
  plan, out = _plan(tmp_path, CELLS), tmp_path / "out"
  proc, res = _campaign(plan, out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert res["finished"] == sorted(NAMES) and res["deferred"] == [] and res["already_done"] == 0
  for name in NAMES:
    _check_packed(out, name)
  label, p, m, s = NAMES[-1].split("/")
  with open(report.packed_path(report.cell_dir(str(out / "results" / label), p, m,
                                               int(s[4:])))) as f:
    packed = json.load(f)
  # The line's own override reached its cell, and only it.
  assert packed["config"]["optimizer"]["lr"] == 0.02
  # Again: everything is done, nothing starts (no new log lines in any cell).
  logs = {n: os.path.getsize(os.path.join(out, "runs", *n.split("/"), "log.txt")) for n in NAMES}
  proc, res = _campaign(plan, out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert res == dict(finished=[], deferred=[], failed=[], already_done=3)
  assert logs == {n: os.path.getsize(os.path.join(out, "runs", *n.split("/"), "log.txt"))
                  for n in NAMES}
  # The packed results alone (run folders gone, e.g. copied back from a GPU machine) are
  # found done too, and compare.py's report reads them.
  moved = tmp_path / "copied"
  os.makedirs(moved)
  os.rename(out / "results", moved / "results")
  proc, res = _campaign(plan, moved)
  assert proc.returncode == 0 and res["already_done"] == 3, proc.stderr[-3000:]
  rep = subprocess.run(
      [sys.executable, "launch/compare.py", "--config=configs/digits.py", "--methods=gas,fedavg",
       "--seeds=0", "--partitions=shard2", f"--workdir={moved / 'results' / 'digits'}",
       "--report_only", *TINY], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert rep.returncode == 0, rep.stderr[-3000:]
  with open(report.packed_path(report.cell_dir(str(moved / "results" / "digits"), "shard2",
                                               "gas", 0))) as f:
    acc = json.load(f)["summary"]["final_accuracy"]
  assert f"| gas | {100 * acc:.2f} ± 0.00 |" in rep.stdout.replace("**", "")


def _check_packed(out, name):
  """The cell's packed file holds its config, summary and metrics rows and its wall time."""
  label, p, m, s = name.split("/")
  with open(report.packed_path(report.cell_dir(str(out / "results" / label), p, m,
                                               int(s[4:])))) as f:
    packed = json.load(f)
  run = report.cell_dir(str(out / "runs" / label), p, m, int(s[4:]))
  with open(os.path.join(run, "summary.json")) as f:
    assert packed["summary"] == json.load(f)
  with open(os.path.join(run, "metrics.jsonl")) as f:
    assert packed["metrics"] == [json.loads(l) for l in f]
  assert packed["config"]["algorithm"] == m and packed["config"]["seed"] == int(s[4:])
  assert packed["cell_wall_s"] > 0


def _first_cell_alone(tmp_path):
  """No measurement yet: the first cell runs alone; its time then says the rest do not fit."""
  plan, out = _plan(tmp_path, CELLS), tmp_path / "out"
  proc, res = _campaign(plan, out, "--budget_s=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert res["finished"] == [NAMES[0]] and res["deferred"] == NAMES[1:]
  assert not os.path.exists(os.path.join(out, "runs", *NAMES[1].split("/")))
  _check_packed(out, NAMES[0])
  return plan, out


def test_budget_starts_no_cell_it_cannot_finish(tmp_path):
  """One cell runs (and is packed); a second call with the same tiny budget starts nothing."""
  plan, out = _first_cell_alone(tmp_path)
  # Next call, same tiny budget: the packed cell's measured time already says no.
  proc, res = _campaign(plan, out, "--budget_s=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert res == dict(finished=[], deferred=NAMES[1:], failed=[], already_done=1)


@pytest.mark.slow   # two more cells (~2 min on 2 shared cores)
def test_a_budget_that_fits_goes_on_in_the_plans_order(tmp_path):
  plan, out = _first_cell_alone(tmp_path)
  proc, res = _campaign(plan, out, "--budget_s=3600")
  assert proc.returncode == 0 and res["finished"] == sorted(NAMES[1:]), proc.stderr[-3000:]


# Each case is a process (~9 s on 2 shared cores): the default suite keeps one per kind
# (the line's shape, the line's own fields); the others are slow.
@pytest.mark.parametrize("line,message", [
    ("configs/digits.py gas shard2", "is not 'CONFIG METHOD PARTITION SEED"),
    pytest.param("configs/digits.py gas shard2 x", "seed 'x' must be an integer", marks=pytest.mark.slow),
    ("configs/digits.py gas shard2 0 --config.seed=3", "--config.seed=3 is set by the line's"),
    pytest.param("configs/digits.py gas shard2 0 lr=3", "is not 'CONFIG METHOD PARTITION SEED", marks=pytest.mark.slow),
    pytest.param("configs/digits.py nope shard2 0", "plan.txt:4: algorithm='nope'", marks=pytest.mark.slow),
    pytest.param("configs/digits.py gas shard0 0", "plan.txt:4: partition 'shard0' is invalid", marks=pytest.mark.slow),
])
def test_a_bad_plan_line_is_refused_before_anything_runs(tmp_path, line, message):
  plan, out = _plan(tmp_path, [CELLS[0], line]), tmp_path / "out"
  proc, _ = _campaign(plan, out)
  assert proc.returncode == 1
  assert message in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(out / "runs")
