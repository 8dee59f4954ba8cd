r"""Benchmark of a config's GAS run: wall time per global iteration against the necessary FLOPs
and this machine's measured fp32 matmul peak (one run, so the ratios are comparable).

    python launch/benchmark.py --config=configs/digits.py --out=/tmp/bench.json
    python launch/benchmark.py --config=configs/cifar10.py --out=/tmp/bench.json --iters=2

With the dataset absent it uses synthetic inputs of the dataset's shapes. Writes JSON with:
device, matmul_peak_gflops (the median of the fp32 matmul rates measured at the start and
before every timed iteration, or with --nopeak_each_iter at the start and after the timed
iterations; their range in matmul_peak_gflops_range: on a shared VM the rate
drifts by several per cent within minutes), flops_per_global_iter (necessary arithmetic counted from the model:
per client step the client forward and backward plus the server forward and its input-gradient
pass; per server update the server forward and backward over the real and generated rows),
wall_s_per_global_iter (after warm-up), server_update_peak_fraction (the server update call:
merge, sampling, forward/backward and optimiser; a factor compression is a call of its own,
counted in the generation), cohort_peak_fraction
(client steps), generation_fraction (share of wall time in statistics, factorisation and sampling:
the server update's `generate` timed alone, the factor's occasional compressions amortised over
their period, see `generation_seconds`; the wall time's short window usually holds none of them,
so this share is on the high side), generation_total_fraction (the server update with
generation minus without it, so also the forward/backward over the generated rows), stats_bytes.
"""
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gas_jax import config as config_lib  # noqa: E402
from gas_jax import stats as stats_lib  # noqa: E402
from gas_jax.registry import ALGORITHMS  # noqa: E402
from bench_run import Timed, build, generation_seconds, write_json  # noqa: E402  (launch/)
from timing import matmul_peak_gflops  # noqa: E402  (launch/timing.py)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.")
_OUT = flags.DEFINE_string("out", None, "Output JSON file.")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed global iterations (after one warm-up).")
_SYNTH_TRAIN = flags.DEFINE_integer("synthetic_train", 5000, "Synthetic train-set size.")
_PEAK_EACH = flags.DEFINE_bool(
    "peak_each_iter", True, "Measure the matmul peak again before every timed iteration (a "
    "shared CPU's rate drifts); off: at the start and after the timed iterations only (a "
    "second of full-power matmuls just before each iteration may perturb a GPU's timing).")
_NOGEN = flags.DEFINE_bool("nogen", True, "Also time the server update without generation "
                           "(generation_total_fraction; a second build and compilation).")


def measure(config, iters, peaks=None):
  """Runs the config: one warm-up iteration, `iters` timed ones (wall), then `iters` more with
  every device call blocked and timed. With a list `peaks`, the matmul peak is measured again
  before every timed iteration and appended to it (the machine's rate drifts; ratios are taken
  against the peaks measured alongside)."""
  ctx, synthetic = build(config, _SYNTH_TRAIN.value)
  runner = ALGORITHMS.get(config.algorithm)(ctx)
  if hasattr(runner, "precompile_server"):
    runner.precompile_server()                   # every packed size of generated rows
  runner.run_iteration()                         # warm-up: compilation
  infos, wall = [], 0.0
  for _ in range(iters):
    if peaks is not None and _PEAK_EACH.value:
      peaks.append(matmul_peak_gflops())
    t = time.perf_counter()
    infos.append(runner.run_iteration())
    jax.block_until_ready(runner.state)
    wall += (time.perf_counter() - t) / iters
  # Per-call times, blocking after each call (no overlap of host and device work).
  runner.client_run = client_run = Timed(runner.client_run)
  runner.cohort_run = cohort_run = Timed(runner.cohort_run)
  runner.server_run = server_run = Timed(runner.server_run)
  steps0 = runner.client_steps
  if peaks is not None and not _PEAK_EACH.value:
    peaks.append(matmul_peak_gflops())
  for _ in range(iters):
    if peaks is not None and _PEAK_EACH.value:
      peaks.append(matmul_peak_gflops())
    infos.append(runner.run_iteration())
  client_run.total += cohort_run.total
  client_run.calls = runner.client_steps - steps0      # client steps, whatever the grouping
  return ctx, synthetic, runner, infos, wall, client_run, server_run


def main(argv):
  del argv
  config = _CONFIG.value
  config_lib.validate(config)
  peaks = [matmul_peak_gflops()]
  ctx, synthetic, runner, infos, wall, crun, srun = measure(config, _ITERS.value, peaks)
  peak = float(np.median(peaks))
  m, b = ctx.model, config.clients.batch_size
  c_macs, s_macs = m.client_macs, m.server_macs
  client_step_flops = 2 * b * (3 * c_macs + 2 * s_macs)
  gen = float(np.mean([i["generated_per_update"] for i in infos]))
  real_rows = config.clients.participating * b
  server_update_flops = 2 * 3 * s_macs * (real_rows + gen)
  steps_per_iter = crun.calls / _ITERS.value
  updates_per_iter = srun.calls / _ITERS.value
  flops_iter = steps_per_iter * client_step_flops + updates_per_iter * server_update_flops
  t_server = srun.total / max(srun.calls, 1)
  t_client = crun.total / max(crun.calls, 1)
  # Generation cost: statistics + sampling alone; and, all included (also the forward/backward
  # over the generated rows), the server update with generation off (same schedule).
  gen_fraction = gen_total_fraction = None
  gen_parts = {}
  if config.generate and config.algorithm == "gas":
    gen_parts = generation_seconds(runner)
    gen_fraction = gen_parts["generation_s"] * updates_per_iter / wall
  if gen_parts and _NOGEN.value:
    nogen = config.copy_and_resolve_references()
    nogen.generate = False
    _, _, _, _, _, _, srun0 = measure(nogen, 1)
    t_server0 = srun0.total / max(srun0.calls, 1)
    gen_total_fraction = max(t_server - t_server0, 0.0) * updates_per_iter / wall
  stats = runner.state.server.stats
  out = dict(
      device=f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
      num_devices=jax.device_count(), config=config.data.name, model=f"{m.name}/{m.split}",
      synthetic_data=synthetic, matmul_peak_gflops=peak,
      matmul_peak_gflops_range=[float(min(peaks)), float(max(peaks))],
      flops_per_global_iter=flops_iter, wall_s_per_global_iter=wall,
      wall_over_flops_at_peak=wall / (flops_iter / (peak * 1e9)),
      client_steps_per_iter=steps_per_iter, server_updates_per_iter=updates_per_iter,
      client_step_s=t_client, server_update_s=t_server,
      cohort_size=config.execution.cohort_size, backend=jax.default_backend(),
      server_update_peak_fraction=server_update_flops / t_server / (peak * 1e9),
      cohort_peak_fraction=client_step_flops / t_client / (peak * 1e9),
      generation_fraction=gen_fraction, generation_total_fraction=gen_total_fraction,
      generated_per_update=gen, **gen_parts,
      stats_method=config.stats.method, stats_bytes=stats_lib.nbytes(stats),
      date=time.strftime("%Y-%m-%d"))
  write_json(out, _OUT.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
