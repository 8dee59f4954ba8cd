r"""Benchmark of a config's GAS run: wall time per global iteration against the necessary FLOPs
and this machine's measured fp32 matmul peak (one run, so the ratios are comparable).

    python -m benchmarks.run iteration --config=configs/digits.py --out=/tmp/bench.json
    python -m benchmarks.run iteration --config=configs/cifar10.py --out=/tmp/bench.json --iters=2

With the dataset absent it uses synthetic inputs of the dataset's shapes. Writes JSON with:
device, precision (`execution.precision`), matmul_bf16_peak_gflops (the bfloat16 matmul rate
beside the fp32 one: the ceiling of precision=bf16), matmul_peak_gflops (the median of the
fp32 matmul rates measured at the start and before every timed iteration, or with --nopeak_each_iter at the start and after the timed
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
import dataclasses
import time

import jax
import numpy as np
from absl import flags

from benchmarks import common
from benchmarks.timing import bf16_matmul_peak_gflops, matmul_peak_gflops
from gas_jax import config as config_lib
from gas_jax import runners  # noqa: F401  (fills ALGORITHMS)
from gas_jax import stats as stats_lib
from gas_jax.registry import ALGORITHMS

GAS = ("gas", "gas_nogen")     # the runners it instruments (`GasRunner`)


def define_flags(fv, argv):
  """This benchmark's flags, in `fv` (`common.parse_flags`)."""
  common.define_config(fv, argv)
  common.define_out(fv)
  common.define_peak_size(fv)
  flags.DEFINE_integer("iters", 3, "Timed global iterations (after one warm-up).", flag_values=fv)
  flags.DEFINE_integer("synthetic_train", 5000, "Synthetic train-set size.", flag_values=fv)
  flags.DEFINE_integer("gen_calls", 1000, "At most this many `generate` calls to time the "
                       "generation (`common.generation_seconds`; fewer: a quicker, rougher "
                       "figure, the factor's compressions possibly left out).", flag_values=fv)
  flags.DEFINE_bool(
      "peak_each_iter", True, "Measure the matmul peak again before every timed iteration (a "
      "shared CPU's rate drifts); off: at the start and after the timed iterations only (a "
      "second of full-power matmuls just before each iteration may perturb a GPU's timing).",
      flag_values=fv)
  flags.DEFINE_bool("nogen", True, "Also time the server update without generation "
                    "(generation_total_fraction; a second build and compilation).",
                    flag_values=fv)


def measure(fv, config, iters, peaks=None):
  """Runs the config: one warm-up iteration, `iters` timed ones (wall), then `iters` more with
  every device call blocked and timed. With a list `peaks`, the matmul peak is measured again
  before every timed iteration and appended to it (the machine's rate drifts; ratios are taken
  against the peaks measured alongside).

  Returns (ctx, synthetic, runner, infos, wall, client steps (calls, seconds), server updates
  (calls, seconds))."""
  ctx, synthetic = common.build(config, fv.synthetic_train)
  with ctx.plan.active():
    runner = ALGORITHMS.get(config.algorithm)(ctx)
    runner.precompile_server()                     # every packed size of generated rows
    runner.run_iteration()                         # warm-up: compilation
    infos, wall = [], 0.0
    for _ in range(iters):
      if peaks is not None and fv.peak_each_iter:
        peaks.append(matmul_peak_gflops(fv.peak_size))
      t = time.perf_counter()
      infos.append(runner.run_iteration())
      jax.block_until_ready(runner.state)
      wall += (time.perf_counter() - t) / iters
    # Per-call times, blocking after each call (no overlap of host and device work).
    calls = runner.calls
    timed = dataclasses.replace(calls, client=common.Timed(calls.client),
                                cohort=common.Timed(calls.cohort),
                                server=common.Timed(calls.server))
    runner.calls = timed
    steps0 = runner.client_steps
    if peaks is not None and not fv.peak_each_iter:
      peaks.append(matmul_peak_gflops(fv.peak_size))
    for _ in range(iters):
      if peaks is not None and fv.peak_each_iter:
        peaks.append(matmul_peak_gflops(fv.peak_size))
      infos.append(runner.run_iteration())
    runner.calls = calls
  client = (runner.client_steps - steps0,          # client steps, whatever the grouping
            timed.client.total + timed.cohort.total)
  return ctx, synthetic, runner, infos, wall, client, (timed.server.calls, timed.server.total)


def main(argv) -> dict:
  fv = common.parse_flags(define_flags, argv, required=["config"])
  config = fv.config
  config_lib.validate(config)
  if config.algorithm not in GAS:
    raise flags.Error(f"--config: algorithm={config.algorithm}; this benchmark times GAS "
                      f"({', '.join(GAS)})")
  iters = fv.iters
  peaks = [matmul_peak_gflops(fv.peak_size)]
  ctx, synthetic, runner, infos, wall, (c_calls, c_total), (s_calls, s_total) = measure(
      fv, config, iters, peaks)
  peak = float(np.median(peaks))
  m, b = ctx.model, config.clients.batch_size
  c_macs, s_macs = m.client_macs, m.server_macs
  client_step_flops = 2 * b * (3 * c_macs + 2 * s_macs)
  gen = float(np.mean([i["generated_per_update"] for i in infos]))
  real_rows = config.clients.participating * b
  server_update_flops = 2 * 3 * s_macs * (real_rows + gen)
  steps_per_iter = c_calls / iters
  updates_per_iter = s_calls / iters
  flops_iter = steps_per_iter * client_step_flops + updates_per_iter * server_update_flops
  t_server = s_total / max(s_calls, 1)
  t_client = c_total / max(c_calls, 1)
  # Generation cost: statistics + sampling alone; and, all included (also the forward/backward
  # over the generated rows), the server update with generation off (same schedule).
  gen_fraction = gen_total_fraction = None
  gen_parts = {}
  if config.generate and config.algorithm == "gas":
    with ctx.plan.active():
      gen_parts = common.generation_seconds(runner, max_calls=fv.gen_calls)
    gen_fraction = gen_parts["generation_s"] * updates_per_iter / wall
  if gen_parts and fv.nogen:
    nogen = config.copy_and_resolve_references()
    nogen.generate = False
    *_, (s_calls0, s_total0) = measure(fv, nogen, 1)
    t_server0 = s_total0 / max(s_calls0, 1)
    gen_total_fraction = max(t_server - t_server0, 0.0) * updates_per_iter / wall
  stats = runner.state.server.stats
  out = dict(
      device=common.device_name(),
      num_devices=jax.device_count(), config=config.data.name, model=f"{m.name}/{m.split}",
      synthetic_data=synthetic, matmul_peak_gflops=peak,
      matmul_bf16_peak_gflops=bf16_matmul_peak_gflops(fv.peak_size),
      precision=ctx.plan.precision,
      matmul_peak_gflops_range=[float(min(peaks)), float(max(peaks))],
      flops_per_global_iter=flops_iter, wall_s_per_global_iter=wall,
      wall_over_flops_at_peak=wall / (flops_iter / (peak * 1e9)),
      client_steps_per_iter=steps_per_iter, server_updates_per_iter=updates_per_iter,
      client_step_s=t_client, server_update_s=t_server,
      cohort_size=ctx.plan.cohort_size, backend=jax.default_backend(),
      server_update_peak_fraction=server_update_flops / t_server / (peak * 1e9),
      cohort_peak_fraction=client_step_flops / t_client / (peak * 1e9),
      generation_fraction=gen_fraction, generation_total_fraction=gen_total_fraction,
      generated_per_update=gen, **gen_parts,
      stats_method=config.stats.method, stats_bytes=stats_lib.nbytes(stats),
      date=time.strftime("%Y-%m-%d"))
  return common.write_json(out, fv.out)
