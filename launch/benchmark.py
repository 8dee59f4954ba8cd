r"""Benchmark of a config's GAS run: wall time per global iteration against the necessary FLOPs
and this machine's measured fp32 matmul peak (one run, so the ratios are comparable).

    python launch/benchmark.py --config=configs/digits.py --out=/tmp/bench.json
    python launch/benchmark.py --config=configs/cifar10.py --out=/tmp/bench.json --iters=2

With the dataset absent it uses synthetic inputs of the dataset's shapes. Writes JSON with:
device, matmul_peak_gflops, flops_per_global_iter (necessary arithmetic counted from the model:
per client step the client forward and backward plus the server forward and its input-gradient
pass; per server update the server forward and backward over the real and generated rows),
wall_s_per_global_iter (after warm-up), server_update_peak_fraction, cohort_peak_fraction
(client steps), generation_fraction (share of wall time in statistics, factorisation and sampling:
the server update's `generate` timed alone, the factor's occasional compressions amortised over
their period, see `generation_seconds`; the wall time's short window usually holds none of them,
so this share is on the high side), generation_total_fraction (the server update with
generation minus without it, so also the forward/backward over the generated rows), stats_bytes.
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gas_jax import config as config_lib  # noqa: E402
from gas_jax import engine  # noqa: E402
from gas_jax import stats as stats_lib  # noqa: E402
from gas_jax import train  # noqa: E402
from gas_jax.data import real, sources  # noqa: E402
from gas_jax.registry import ALGORITHMS  # noqa: E402
from timing import matmul_peak_gflops  # noqa: E402  (launch/timing.py)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.")
_OUT = flags.DEFINE_string("out", None, "Output JSON file.")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed global iterations (after one warm-up).")
_SYNTH_TRAIN = flags.DEFINE_integer("synthetic_train", 5000, "Synthetic train-set size.")


class Timed:
  """Wraps a jitted callable: blocks on its result and accumulates wall time per call."""

  def __init__(self, fn):
    self.fn, self.total, self.calls = fn, 0.0, 0

  def __call__(self, *args, **kwargs):
    t = time.perf_counter()
    out = jax.block_until_ready(self.fn(*args, **kwargs))
    self.total += time.perf_counter() - t
    self.calls += 1
    return out


def build(config):
  try:
    return train.build_context(config), False
  except (FileNotFoundError, ValueError):
    spec = real.SPECS.get(config.data.name)
    shape, classes = (spec.shape, spec.num_classes) if spec else ((8, 8, 1), 10)
    ds = sources.synthetic_dataset(shape, classes, _SYNTH_TRAIN.value, 500, seed=0)
    orig = sources.load_dataset
    sources.load_dataset = lambda name, data_dir: ds
    try:
      return train.build_context(config), True
    finally:
      sources.load_dataset = orig


def measure(config, iters):
  ctx, synthetic = build(config)
  runner = ALGORITHMS.get(config.algorithm)(ctx)
  if hasattr(runner, "precompile_server"):
    runner.precompile_server()                   # every packed size of generated rows
  runner.run_iteration()                         # warm-up: compilation
  t = time.perf_counter()
  infos = [runner.run_iteration() for _ in range(iters)]
  jax.block_until_ready(runner.state)
  wall = (time.perf_counter() - t) / iters
  # Per-call times, blocking after each call (no overlap of host and device work).
  runner.client_run = client_run = Timed(runner.client_run)
  runner.cohort_run = cohort_run = Timed(runner.cohort_run)
  runner.server_run = server_run = Timed(runner.server_run)
  steps0 = runner.client_steps
  infos += [runner.run_iteration() for _ in range(iters)]
  client_run.total += cohort_run.total
  client_run.calls = runner.client_steps - steps0      # client steps, whatever the grouping
  return ctx, synthetic, runner, infos, wall, client_run, server_run


def generation_seconds(runner, min_calls: int = 10, max_calls: int = 1000) -> dict:
  """Wall seconds per server update spent in statistics, factorisation and sampling: the
  algorithm's `generate` (merge, refresh, sample, packing) alone, on the run's state and its
  last buffer, merged again and again.

  With the square-root factor a call either only merges and samples (t_plain) or also
  compresses one label's factor (t_plain + t_compress). A label's first compression (a QR of
  its whole factor) happens once per run; every later one eliminates only the rows merged
  since (`linalg.tpqr_r`) and comes every floor((capacity - rows after a compression) / r_y)
  calls, r_y being the rows the buffer appends to label y per call. The steady-state cost per
  server update is therefore t_plain + t_compress * sum_y 1 / period_y, with t_plain the
  median call without a compression and t_compress the median extra time of a later
  compression, all measured here. (Averaging the calls of a window that ends when every label
  has been compressed once, as at stop 10, over-counts compressions: every label is counted
  at least once however short the window.)"""
  algo, ss, buf = runner.algo, runner.state.server, runner.state.buffer
  rows = engine.gen_rows(algo, ss, buf)
  fn = jax.jit(lambda st, buf, key, u: algo.generate(st, buf, key, u, rows), donate_argnums=0)
  st = jax.tree_util.tree_map(jnp.copy, ss.stats)
  st = jax.block_until_ready(fn(st, buf, jax.random.key(0), ss.server_updates)[0])  # compile
  sqrt = isinstance(st, stats_lib.SqrtStats)
  plain, later, appended, after = [], [], {}, {}
  for calls in range(max_calls):
    used, done = (np.asarray(st.used), np.asarray(st.compressed)) if sqrt else (None, None)
    t = time.perf_counter()
    st, *out = fn(st, buf, jax.random.key(calls + 1), ss.server_updates + calls)
    jax.block_until_ready((st, out))
    dt = time.perf_counter() - t
    if not sqrt:
      plain.append(dt)
      if len(plain) >= min_calls:
        return dict(generation_s=float(np.mean(plain)))
      continue
    new = np.asarray(st.used)
    shrunk = new < used
    for y in np.flatnonzero(new > used):
      appended[y] = int(new[y] - used[y])
    if not shrunk.any():
      plain.append(dt)
    elif shrunk.sum() == 1 and done[shrunk].all():
      later.append(dt)
      y = int(np.flatnonzero(shrunk)[0])
      after[y] = int(new[y]) - appended.get(y, 0)
    if len(plain) >= min_calls and len(later) >= 3 and appended:
      break
  t_plain = float(np.median(plain))
  if not later:                  # no compression within max_calls: none in this window either
    return dict(generation_s=t_plain, generation_plain_s=t_plain)
  t_compress = float(np.median(later)) - t_plain
  cap, floor_rows = st.rows.shape[1], (max(after.values()) if after else st.dim)
  rate = sum(1.0 / max((cap - floor_rows) // r, 1) for r in appended.values())
  return dict(generation_s=t_plain + t_compress * rate, generation_plain_s=t_plain,
              compression_s=t_compress, compressions_per_update=rate)


def main(argv):
  del argv
  config = _CONFIG.value
  config_lib.validate(config)
  peak = matmul_peak_gflops()
  ctx, synthetic, runner, infos, wall, crun, srun = measure(config, _ITERS.value)
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
  text = json.dumps(out, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
