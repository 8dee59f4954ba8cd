"""Never lose or mix a run, end to end with `python -m gas_jax.main` processes: a changed config
is refused with the old files intact, a raised T continues exactly, two processes on one workdir
give one refusal and one correct run, a multi-seed run killed during its finish completes."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import cli_runs

# Processes of `python -m gas_jax.main` (~6 min on 2 shared cores in all): slow. The default suite
# keeps the in-process versions: tests/run/test_bad_inputs.py (a changed config refused with the
# old files intact, a raised T resumed like the longer run) and tests/run/test_workdir.py (the
# lock refuses a second holder).
pytestmark = pytest.mark.slow

ROOT = cli_runs.ROOT
ARGS = ["--config=configs/digits.py", "--config.clients.local_iters=2",
        "--config.checkpoint_every=1"]


def _cmd(workdir, *extra):
  return cli_runs.main_cmd(workdir, ARGS, *extra)


def _run(workdir, *extra):
  return cli_runs.run_main(workdir, ARGS, *extra)


_rows = cli_runs.rows


_digest = cli_runs.digest


def _last_line(proc):
  return [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A run with T=2 and an uninterrupted one with T=3."""
  root = tmp_path_factory.mktemp("runs")
  out = {}
  for name, t in (("t2", 2), ("t3", 3)):
    out[name] = str(root / name)
    proc = _run(out[name], f"--config.num_global_iters={t}")
    assert proc.returncode == 0, proc.stderr[-2000:]
  return out


@pytest.mark.parametrize("extra, text", [
    (["--config.clients.participating=5"], "clients.participating: 10 -> 5"),
    (["--config.num_global_iters=6", "--config.optimizer.lr=0.05"], "optimizer.lr: 0.01 -> 0.05"),
])
def test_changed_config_refused_with_old_files_intact(runs, tmp_path, extra, text):
  workdir = str(tmp_path / "run")
  shutil.copytree(runs["t2"], workdir)
  before = _digest(workdir)
  proc = _run(workdir, "--config.num_global_iters=2", *extra)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert _last_line(proc).startswith("error: ") and text in _last_line(proc), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert _digest(workdir) == before


def test_raised_T_continues_like_the_longer_run(runs, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(runs["t2"], workdir)
  proc = _run(workdir, "--config.num_global_iters=3")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "resuming from the checkpoint at global iteration 2" in proc.stderr
  assert _rows(workdir) == _rows(runs["t3"])
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_global_iters"] == 3


def test_two_processes_on_one_workdir(runs, tmp_path):
  workdir = str(tmp_path / "run")
  lock = os.path.join(workdir, ".lock")

  def start():
    return subprocess.Popen(_cmd(workdir, "--config.num_global_iters=3"), cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)

  first = start()
  deadline = time.time() + 600      # the second starts once the first holds the lock
  while time.time() < deadline and first.poll() is None and not (
      os.path.exists(lock) and os.path.getsize(lock)):
    time.sleep(0.05)
  procs = [first, start()]
  results = [(p.communicate(timeout=900)[1], p.returncode) for p in procs]
  results = [(code, err) for err, code in results]
  assert [code for code, _ in results] == [0, 1], [err[-1500:] for _, err in results]
  refused = results[1][1]
  last = [ln for ln in refused.splitlines() if ln.strip()][-1]
  assert last.startswith("error: ") and "is in use by process" in last, last
  assert _rows(workdir) == _rows(runs["t3"])


_KILL_DURING_FINISH = """
import os, signal, sys
from gas_jax import checkpoint
save = checkpoint.Checkpointer.save
def save_or_die(self, step, *args, **kwargs):
  if os.path.basename(os.path.dirname(self.directory)) == "seed1":
    os.kill(os.getpid(), signal.SIGKILL)   # after seed0's final checkpoint, before seed1's
  return save(self, step, *args, **kwargs)
checkpoint.Checkpointer.save = save_or_die
from absl import app
from gas_jax import main
sys.argv = ["gas_jax.main"] + sys.argv[1:]
app.run(main.main, flags_parser=main.parse_flags)
"""


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_multiseed_killed_during_finish_then_completes(tmp_path):
  seeds = ["--config.seeds=0,1", "--config.num_global_iters=2"]
  killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
  proc = subprocess.run([sys.executable, "-c", _KILL_DURING_FINISH, f"--workdir={killed}",
                         *ARGS, *seeds], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == -9, proc.stderr[-2000:]
  assert os.path.isdir(os.path.join(killed, "seed0", "checkpoints", "2"))
  assert not os.path.exists(os.path.join(killed, "summary.json"))
  for workdir in (killed, whole):
    done = _run(workdir, *seeds)
    assert done.returncode == 0, done.stderr[-2000:]
  again = _run(killed, *seeds)      # a finished run: a no-op that says so
  assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr[-2000:]
  for s in ("seed0", "seed1"):
    assert _rows(os.path.join(killed, s)) == _rows(os.path.join(whole, s))
  with open(os.path.join(killed, "summary.json")) as f, \
      open(os.path.join(whole, "summary.json")) as g:
    a, b = json.load(f), json.load(g)
  assert a["final_accuracy"] == b["final_accuracy"]
