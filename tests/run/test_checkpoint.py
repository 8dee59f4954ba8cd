"""Resume exactly: SIGKILL + restart equals an uninterrupted run; corrupted newest checkpoint."""
import json
import os
import random
import shutil
import signal
import subprocess
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from gas_jax import checkpoint

from helpers import cli_runs

ROOT = cli_runs.ROOT
T = 5
ARGS = ["--config=configs/digits.py", "--config.clients.local_iters=2",
        "--config.checkpoint_every=1", "--config.checkpoints_to_keep=2",
        f"--config.num_global_iters={T}"]


def _cmd(workdir, *extra):
  return cli_runs.main_cmd(workdir, ARGS, *extra)


def _run(workdir, *extra):
  return cli_runs.run_main(workdir, ARGS, *extra, timeout=600)


_rows = cli_runs.rows


def _final_params(workdir):
  path = os.path.join(workdir, "checkpoints", str(T), "state")
  tree = ocp.StandardCheckpointer().restore(path)
  return [np.asarray(x) for x in __import__("jax").tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  proc = _run(workdir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return workdir


def test_json_round_trip():
  state = dict(a=np.arange(6, dtype=np.int64).reshape(2, 3), b=[np.float32(1.5), 2**100],
               c=dict(d=np.zeros((0,), np.uint32), e="PCG64"))
  out = checkpoint.from_json(json.loads(json.dumps(checkpoint.to_json(state))))
  np.testing.assert_array_equal(out["a"], state["a"])
  assert out["a"].dtype == np.int64 and out["c"]["d"].dtype == np.uint32
  assert out["b"] == [1.5, 2**100] and out["c"]["e"] == "PCG64"


@pytest.mark.slow   # 3 processes (~5-7 min on 2 shared cores); the default suite keeps
# tests/run/test_bad_inputs.py::test_raised_T_resumes_like_the_longer_run (in-process)
def test_sigkill_then_resume_equals_uninterrupted(reference, tmp_path):
  workdir = str(tmp_path / "killed")
  proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckdir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckdir) and any(d.isdigit() for d in os.listdir(ckdir)):
      break
    time.sleep(0.05)
  time.sleep(random.Random().uniform(0.0, 1.0))   # a random moment after the first checkpoint
  killed = proc.poll() is None
  proc.send_signal(signal.SIGKILL) if killed else None
  proc.wait()
  restart = _run(workdir)
  assert restart.returncode == 0, restart.stderr[-2000:]
  if killed and len(_rows_or_empty(workdir)) == T:
    assert "resuming from the checkpoint" in restart.stderr or "resuming" in restart.stdout
  assert _rows(workdir) == _rows(reference)
  for a, b in zip(_final_params(workdir), _final_params(reference)):
    np.testing.assert_array_equal(a, b)


def _rows_or_empty(workdir):
  try:
    return _rows(workdir)
  except FileNotFoundError:
    return []


@pytest.mark.slow   # ~30 s; keeps the default suite near 9 minutes
def test_corrupted_newest_checkpoint_falls_back(reference, tmp_path):
  workdir = str(tmp_path / "corrupt")
  first = _run(workdir, "--config.num_global_iters=3")
  assert first.returncode == 0, first.stderr[-2000:]
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert steps == [2, 3]
  newest = os.path.join(workdir, "checkpoints", "3", "state")
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  resumed = _run(workdir)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resuming from the checkpoint at global iteration 2" in resumed.stderr
  assert _rows(workdir) == _rows(reference)


@pytest.mark.slow   # ~27 s; keeps the default suite near 10 minutes (SIGKILL + resume stays)
def test_sigterm_checkpoints_and_exits(reference, tmp_path):
  workdir = str(tmp_path / "term")
  proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  mpath = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not os.path.exists(mpath):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  if proc.returncode != 0:          # stopped early: a checkpoint holds the last finished iteration
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
    assert max(steps) == len(_rows(workdir))
  resumed = _run(workdir)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert _rows(workdir) == _rows(reference)
  shutil.rmtree(workdir)


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
  """lr=1e6 blows up: the run stops naming the iteration and quantity; checkpoints stay good."""
  workdir = str(tmp_path / "diverge")
  proc = _run(workdir, "--config.optimizer.lr=1e6", "--config.num_global_iters=8")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: non-finite") and "at global iteration" in last, last
  bad_iter = int(last.rsplit(" ", 1)[-1])
  rows = _rows_or_empty(workdir)
  assert len(rows) == bad_iter - 1           # no row for the iteration that diverged
  ckdir = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(ckdir) if d.isdigit()] if os.path.isdir(ckdir) else []
  assert all(s < bad_iter for s in steps)
