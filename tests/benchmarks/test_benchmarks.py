"""benchmarks/: every benchmark runs (`python -m benchmarks.run NAME`), briefly, and writes its JSON.

Each runs in this process (`benchmarks.run.main`, one iteration of a shrunken digits config,
the smallest sizes its flags allow; a shared compilation cache, as the GAS benchmarks compile
the same steps), one through the command line; the JSON must hold the expected keys with
positive, finite timings. These check that the benchmarks work against the runners' public API
(`calls`, `state`, ...), not the figures. The seeds benchmark trains three runs, so it is in
the slow set (`-m slow`); the default suite checks how it instruments the runners.
"""
import importlib
import json
import math
import os
import shlex
import subprocess
import sys

import pytest

from benchmarks import common, run, seeds
from configs import digits
from gas_jax.registry import ALGORITHMS
from helpers.cli_runs import ROOT

pytestmark = pytest.mark.usefixtures("compile_cache")

DIGITS = os.path.join(ROOT, "configs", "digits.py")
# 4 clients, 2 concurrent, 1 local step of 8 rows: a global iteration is 2 client steps and one
# server update.
TINY = [f"--config={DIGITS}", "--config.data.partition=iid", "--config.clients.num=4",
        "--config.clients.participating=2", "--config.clients.local_iters=1",
        "--config.clients.batch_size=8"]
PEAK = ["--peak_size=64"]


def _run(tmp_path, name, *flags):
  out = tmp_path / f"{name}.json"
  returned = run.main(["benchmarks.run", name, *flags, f"--out={out}"])
  written = json.loads(out.read_text())
  assert written == json.loads(json.dumps(returned))
  return written


def _positive(d, *keys):
  for k in keys:
    assert isinstance(d[k], (int, float)) and math.isfinite(d[k]) and d[k] > 0, (k, d[k])


def test_matmul_peak_from_the_command_line(tmp_path):
  out = tmp_path / "peak.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "matmul_peak", *PEAK,
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  d = json.loads(out.read_text())
  assert d["matmul_size"] == 64
  _positive(d, "matmul_peak_gflops", "matmul_default_precision_gflops",
            "matmul_bf16_peak_gflops")


def test_unknown_benchmark_is_refused():
  with pytest.raises(SystemExit, match="unknown benchmark 'nope'"):
    run.main(["benchmarks.run", "nope"])


def test_conv(tmp_path):
  d = _run(tmp_path, "conv", "--small", "--reps=1", *PEAK)
  _positive(d, "matmul_peak_gflops")
  (row,) = d["layers"]
  _positive(row, "gflop", "xla_ms", "im2col_ms", "xla_peak_fraction", "im2col_peak_fraction")


def test_qr(tmp_path):
  d = _run(tmp_path, "qr", f"--config={DIGITS}", "--small", "--reps=1", *PEAK)
  assert d["dim"] == 64 and d["capacity"] > d["dim"]
  _positive(d, "qr_s", "tpqr_s", "qr_gflops", "tpqr_gflops", "tpqr_over_qr",
            "matmul_peak_gflops")


def test_iteration(tmp_path):
  d = _run(tmp_path, "iteration", *TINY, "--iters=1", "--nonogen", "--gen_calls=12", *PEAK,
           "--config.execution.precision=bf16")
  assert d["config"] == "digits" and not d["synthetic_data"] and d["precision"] == "bf16"
  _positive(d, "matmul_bf16_peak_gflops")
  assert d["client_steps_per_iter"] == 2 and d["server_updates_per_iter"] == 1
  _positive(d, "wall_s_per_global_iter", "client_step_s", "server_update_s",
            "flops_per_global_iter", "matmul_peak_gflops", "generation_s", "generation_fraction",
            "cohort_peak_fraction", "server_update_peak_fraction", "stats_bytes")
  assert d["generation_total_fraction"] is None          # --nonogen


def test_parts(tmp_path):
  d = _run(tmp_path, "parts", *TINY, "--iters=1", "--warmup=1", "--reps=1", "--gen_calls=12",
           *PEAK)
  assert d["client_steps_per_iter"] == 2 and d["server_updates_per_iter"] == 1
  _positive(d, "wall_s_per_global_iter", "device_s_per_global_iter", "server_update_s",
            "server_update_nogen_s", "generation_s", "merge_s", "sample_s",
            "matmul_peak_gflops", "matmul_default_precision_gflops")
  assert math.isfinite(d["host_s_per_global_iter"])
  if d["cohort_size"] == 1:                               # event by event (the CPU's default)
    _positive(d, "client_step_s")
  else:
    assert d["cohort_s"] and all(v > 0 for v in d["cohort_s"].values())


def test_seeds_instruments_the_runners_it_builds():
  """`seeds.timed_calls`: runners built within get their `calls` wrapped in `Timed` (the
  `seeds --parts` instrumentation, quick: nothing trains); the ones built after, not."""
  config = digits.get_config()
  config.clients.num, config.clients.participating = 4, 2
  config.data.partition = "iid"
  ctx, _ = common.build(config)
  with seeds.timed_calls({}) as timers:
    runner = ALGORITHMS.get("gas")(ctx)
  assert set(timers) == {"seed0"} and set(timers["seed0"]) == set(runner.calls.names())
  assert all(isinstance(getattr(runner.calls, c), common.Timed) for c in runner.calls.names())
  after = ALGORITHMS.get("gas")(ctx)
  assert not any(isinstance(getattr(after.calls, c), common.Timed) for c in after.calls.names())


@pytest.mark.slow   # three training runs (~35-50 s on 2 shared cores)
def test_seeds_with_parts(tmp_path):
  d = _run(tmp_path, "seeds", *TINY, "--iters=1", "--seeds=0,1", "--parts")
  assert d["seeds"] == [0, 1] and len(d["separate_wall_s_per_global_iter"]) == 2
  _positive(d, "single_wall_s_per_global_iter", "seeds_wall_s_per_global_iter",
            "per_seed_speedup")
  assert set(d["parts"]) == {"seed0", "seed1", "seeds"}   # the separate runs, the runs axis
  for calls in d["parts"].values():
    assert calls["server"]["calls_per_iter"] == 1
    _positive(calls["server"], "ms_per_call")
    steps = calls["client"] if calls["client"]["calls_per_iter"] else calls["cohort"]
    _positive(steps, "calls_per_iter", "ms_per_call")


def test_gpu_bench_script_runs_known_benchmarks_with_valid_flags(tmp_path):
  """benchmarks/gpu_bench.sh, with a stand-in python that records its arguments: every call is
  `-m benchmarks.run NAME` with a registered NAME whose flags parse, from the repository root."""
  log, shim = tmp_path / "calls.txt", tmp_path / "python"
  shim.write_text(f'#!/usr/bin/env bash\necho "$PWD" >> {log}\nprintf "%q " "$@" >> {log}\n'
                  f'echo >> {log}\n')
  shim.chmod(0o755)
  env = dict(os.environ, PYTHON=str(shim), PATH=f"{tmp_path}:{os.environ['PATH']}")
  subprocess.run(["bash", "benchmarks/gpu_bench.sh", str(tmp_path / "out"), "configs/digits.py",
                  "600"], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True)
  lines = log.read_text().splitlines()
  calls = [(cwd, shlex.split(argv)) for cwd, argv in zip(lines[::2], lines[1::2])]
  calls = [(cwd, argv) for cwd, argv in calls if argv[:2] == ["-m", "benchmarks.run"]]
  assert [argv[2] for _, argv in calls] == ["iteration", "seeds", "seeds", "parts"]
  for cwd, argv in calls:
    assert os.path.samefile(cwd, ROOT)
    module = importlib.import_module(f"benchmarks.{run.BENCHMARKS[argv[2]]}")
    fv = common.parse_flags(module.define_flags, ["benchmarks.run " + argv[2], *argv[3:]])
    assert fv.config.data.name == "digits" and fv.out.startswith(str(tmp_path / "out"))
