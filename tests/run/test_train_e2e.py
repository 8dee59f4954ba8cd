"""End-to-end tests: train.train_and_evaluate on configs/digits.py and the command line.

Runs are kept short (2 global iterations of E=2 local steps). Every run builds new jitted
functions, so the module turns on JAX's persistent compilation cache (in a temporary directory)
to compile each program once: later runs, in-process or through the command line, reuse it. The
command-line error cases run as subprocesses started together when the module's first test
starts, overlapping with the first in-process run; they must fail during validation, before
anything is written.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import digits
from helpers.cli_runs import ROOT
from gas_jax import metrics as metrics_lib
from gas_jax import train
from gas_jax.execution import ExecutionPlan

REPO = pathlib.Path(ROOT)
ROW_KEYS = ("global_iteration", "server_updates", "client_steps", "simulated_time_s",
            "wall_time_s", "test_accuracy", "test_loss")
CLI_TIMEOUT_S = 120


def _config(seed=0, iters=2):
  c = digits.get_config()
  c.seed = seed
  c.num_global_iters = iters
  c.clients.local_iters = 2
  return c


def _run(config, workdir):
  summary = train.train_and_evaluate(config, str(workdir))
  return summary, metrics_lib.read_rows(str(workdir))


# (case id, extra flags, config field the error must name)
CLI_ERRORS = [
    ("participating_gt_num", ["--config.clients.participating=30"], "clients.participating"),
    # shards * K must be divisible by the 10 classes: 3 * 15 = 45 is not (3 * 20 = 60 is).
    ("shards_indivisible", ["--config.clients.num=15", "--config.data.shards=3"],
     "data.shards"),
    ("dirichlet_alpha_zero", ["--config.data.partition=dirichlet", "--config.data.alpha=0"],
     "data.alpha"),
    ("unknown_dataset", ["--config.data.name=nope"], "data.name"),
    ("unknown_model", ["--config.model.name=nope"], "model.name"),
    ("unknown_split", ["--config.model.split=L9"], "model.split"),
    ("unknown_algorithm", ["--config.algorithm=nope"], "algorithm"),
    ("zero_iterations", ["--config.num_global_iters=0"], "num_global_iters"),
    ("negative_lr", ["--config.optimizer.lr=-1"], "optimizer.lr"),
]
CLI_OK = ("generate_false", ["--config.generate=False", "--config.num_global_iters=1",
                             "--config.clients.local_iters=2"])


def _cli(workdir, flags):
  return [sys.executable, "-m", "gas_jax.main", "--config=configs/digits.py",
          f"--workdir={workdir}"] + list(flags)


def _start(root, name, flags, env=None):
  out, err = open(root / f"{name}.out", "w+"), open(root / f"{name}.err", "w+")
  p = subprocess.Popen(_cli(root / name, flags), cwd=REPO, stdout=out, stderr=err, env=env)
  return p, out, err, root / name, time.time()


def _finish(started):
  """(returncode or a timeout message, stdout, stderr, seconds, workdir) of a started case."""
  p, out, err, wd, t0 = started
  try:
    rc = p.wait(timeout=max(1.0, CLI_TIMEOUT_S - (time.time() - t0)))
  except subprocess.TimeoutExpired:
    p.kill()
    rc = f"timed out after {CLI_TIMEOUT_S} s (rc {p.wait()})"
  elapsed = time.time() - t0
  out.seek(0)
  err.seek(0)
  result = (rc, out.read(), err.read(), elapsed, wd)
  out.close()
  err.close()
  return result


@pytest.fixture(scope="module")
def cli_error_procs(tmp_path_factory):
  """Starts every command-line error case at once."""
  root = tmp_path_factory.mktemp("cli")
  procs = {name: _start(root, name, flags) for name, flags, _ in CLI_ERRORS}
  yield procs
  for p, out, err, _, _ in procs.values():
    if p.poll() is None:
      p.kill()
      p.wait()
    out.close()
    err.close()


@pytest.fixture(scope="module")
def cli_errors(cli_error_procs):
  return {name: _finish(started) for name, started in cli_error_procs.items()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, compile_cache, cli_error_procs):
  del compile_cache, cli_error_procs   # the error cases start first, to overlap with this run
  wd = tmp_path_factory.mktemp("seed0")
  summary, rows = _run(_config(seed=0), wd)
  return wd, summary, rows


def test_run_writes_config_metrics_and_summary(first_run):
  wd, summary, rows = first_run
  config = _config(seed=0)
  c, k = config.clients.participating, config.clients.local_iters
  with open(wd / "config.json") as f:
    stored = json.load(f)
  # config.json: the config, plus the execution plan the run resolved on this machine
  plan = stored.pop("execution_plan")
  assert stored == json.loads(json.dumps(config.to_dict()))
  assert plan == ExecutionPlan.resolve(config).to_dict()
  assert plan["backend"] == jax.default_backend() and plan["cohort_size"] in (0, 1)

  assert len(rows) == 2
  lines = (wd / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == rows
  for row in rows:
    assert set(ROW_KEYS) <= set(row)
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert np.isfinite(row["test_loss"]) and row["test_loss"] > 0
    # Server updates happen after every C-th client step (counters are cumulative).
    assert row["server_updates"] == row["client_steps"] // c
  assert [r["global_iteration"] for r in rows] == [1, 2]
  for key in ("server_updates", "client_steps", "simulated_time_s", "wall_time_s"):
    assert rows[0][key] > 0 and rows[1][key] > rows[0][key], key
  # t aggregations need C uploads each, every upload closing E distinct client steps.
  for t, row in enumerate(rows, start=1):
    assert row["client_steps"] >= t * c * k
  # Generation starts once all labels are seen (it happens in iteration 2 for seed 0).
  assert rows[0]["generated_per_update"] == 0.0
  assert rows[1]["generated_per_update"] > 0

  with open(wd / "summary.json") as f:
    saved = json.load(f)
  assert saved == summary
  accs = [r["test_accuracy"] for r in rows]
  np.testing.assert_allclose(saved["final_accuracy"], np.mean(accs), rtol=1e-12)
  assert saved["best_accuracy"] == max(accs)
  assert saved["global_iterations"] == 2
  assert saved["simulated_time_s"] == rows[-1]["simulated_time_s"]
  assert saved["seed"] == 0 and saved["algorithm"] == "gas" and saved["generate"] is True


def _columns(rows):
  keys = ("test_accuracy", "test_loss", "client_steps", "client_loss", "server_loss",
          "simulated_time_s")
  return {k: [r[k] for r in rows] for k in keys}


def test_same_seed_reproducible_other_seed_differs(first_run, tmp_path):
  # Several runs in one process, as a seed sweep would do it.
  results = {}
  for name, seed in (("again", 0), ("other", 1)):
    _, results[name] = _run(_config(seed=seed), tmp_path / name)
  _, _, rows = first_run
  assert _columns(results["again"]) == _columns(rows)
  other = _columns(results["other"])
  assert len(results["other"]) == 2
  assert other["test_loss"] != _columns(rows)["test_loss"]
  assert other["simulated_time_s"] != _columns(rows)["simulated_time_s"]


@pytest.mark.parametrize("name, field", [(n, f) for n, _, f in CLI_ERRORS],
                         ids=[n for n, _, _ in CLI_ERRORS])
def test_cli_rejects_invalid_config(cli_errors, name, field):
  rc, _, stderr, elapsed, wd = cli_errors[name]
  assert isinstance(rc, int) and rc != 0, (rc, stderr[-2000:])
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), last
  assert f"{field}=" in last, last
  # Validation happens before anything is written (or trained).
  assert not (wd / "metrics.jsonl").exists()
  assert not (wd / "config.json").exists()
  assert elapsed < 60, f"{name} took {elapsed:.1f} s to fail"


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_cli_runs_without_generation(first_run, compile_cache, tmp_path):
  del first_run     # run after it, to reuse its compiled programs through the cache
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=compile_cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  rc, _, stderr, _, wd = _finish(_start(tmp_path, CLI_OK[0], CLI_OK[1], env))
  assert rc == 0, stderr[-3000:]
  with open(wd / "summary.json") as f:
    summary = json.load(f)
  assert summary["global_iterations"] == 1 and summary["generate"] is False
  rows = metrics_lib.read_rows(str(wd))
  assert len(rows) == 1 and rows[0]["generated_per_update"] == 0.0
  assert summary["final_accuracy"] == rows[0]["test_accuracy"]
  assert os.path.exists(wd / "config.json")


def test_compilation_cache_dir_is_used(tmp_path):
  """execution.compilation_cache_dir turns on XLA's persistent cache for every program (in a
  fresh process: the cache is process-wide): compiling a small one writes an entry there."""
  code = ("import sys, jax; from configs import digits; from gas_jax import train; "
          "c = digits.get_config(); c.execution.compilation_cache_dir = sys.argv[1]; "
          "train.use_compilation_cache(c); print(jax.jit(lambda x: x * 3 + 1)(2.0))")
  root = pathlib.Path(ROOT)
  env = dict(os.environ, PYTHONPATH=str(root), JAX_COMPILATION_CACHE_DIR="")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "xla")], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().endswith("7.0")
  assert list((tmp_path / "xla").glob("jit_*"))
