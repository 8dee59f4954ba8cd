"""Two local processes through jax.distributed (CPU gloo collectives) give the 1-process numbers.

`python -m gas_jax.main --distributed --coordinator_address=localhost:PORT --num_processes=2
--process_id=i` for i = 0, 1 on the same workdir, one CPU device each: the cohort axis is sharded
over the 2-device global mesh (execution.cohort_size=0), so every cohort step runs on both
processes with collectives between them. Digits with generation on, 3 global iterations:
identical test_accuracy columns and parameters within 1e-5 relative of a single-process run
with the same execution; only process 0 writes the run's files.
"""
import os
import socket
import subprocess
import sys

import pytest

from helpers import same_run as eq

ARGS = ["--config=configs/digits.py", f"--config.num_global_iters={eq.T}",
        "--config.clients.local_iters=4", f"--config.checkpoint_every={eq.T}",
        "--config.execution.cohort_size=0"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_PLATFORMS", None)
  return env


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_two_processes_equal_one(tmp_path):
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  proc = subprocess.run([sys.executable, "-m", "gas_jax.main", f"--workdir={single}", *ARGS],
                        cwd=eq.ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "gas_jax.main", f"--workdir={multi}", *ARGS, "--distributed",
       f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=eq.ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  logs = [p.communicate(timeout=900)[1] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  assert "process 0 of 2, 2 global devices" in logs[0]
  assert "process 1: run outputs are written by process 0" in logs[1]
  eq.assert_same_run(single, multi)
