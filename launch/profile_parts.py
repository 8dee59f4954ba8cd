r"""Where a GAS global iteration's time goes on this machine, part by part, in one run.

    python launch/profile_parts.py --config=configs/cifar10.py --out=/tmp/parts.json \
        [--trace=/tmp/trace]

Builds the config's run (synthetic inputs of the dataset's shapes when it is absent), compiles
every cohort size and packed server size, runs `--warmup` global iterations, then measures:
- `wall_s_per_global_iter` over `--iters` iterations, with the numbers of cohort calls, client
  steps and server updates per iteration;
- each device call alone (its state threaded through, blocking after each call; the median of
  `--reps`): a cohort of every bucketed size, with the cohorts' convolution
  (`layers.cohort_conv_impl`) and with the other one (im2col or XLA's); the server update with
  and without generation on the run's last buffer; the statistics' merge, the sampling (all B
  rows of every label: the server update's own sampling computes only the rows it uses), and
  `generate` as a whole (merge + sampling + packing, compressions amortised: `generation_s`,
  see `bench_run.generation_seconds`);
- `device_s_per_global_iter`: the sum of those parts weighted by how often they occur, so
  `wall - device` is what the host adds (scheduling, batches, dispatch, synchronisation);
- both matmul peaks: fp32 (`HIGHEST`) and the backend's default precision (TF32 on recent
  NVIDIA GPUs), which is what the models' convolutions and matmuls use.
With `--trace`, one more global iteration runs under `jax.profiler.trace` (a Perfetto trace,
for a kernel-level breakdown).
"""
import collections
import dataclasses
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
from gas_jax.algorithms import gas  # noqa: E402
from gas_jax.data import augment as augment_lib  # noqa: E402
from gas_jax.models import layers  # noqa: E402
from gas_jax.registry import ALGORITHMS  # noqa: E402
from gas_jax.runners import gas_runner  # noqa: E402
from bench_run import build, generation_seconds, write_json  # noqa: E402  (launch/)
from timing import best_seconds, matmul_peak_gflops  # noqa: E402  (launch/timing.py)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.")
_OUT = flags.DEFINE_string("out", None, "Output JSON file.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed global iterations.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Global iterations before timing.")
_REPS = flags.DEFINE_integer("reps", 7, "Repetitions of each part (the median is kept).")
_TRACE = flags.DEFINE_string("trace", None, "Folder for a profiler trace of one iteration.")
_SYNTH_TRAIN = flags.DEFINE_integer("synthetic_train", 5000, "Synthetic train-set size.")


def median_threaded(fn, state, reps):
  """Median seconds of state = fn(state) (the state is donated, so it is threaded through)."""
  state = jax.block_until_ready(fn(state))                   # compilation
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    state = jax.block_until_ready(fn(state))
    times.append(time.perf_counter() - t)
  return float(np.median(times)), state


def default_precision_peak_gflops() -> float:
  n = 4096 if jax.default_backend() != "cpu" else 2048
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  return 2 * n ** 3 / best_seconds(jax.jit(jnp.matmul), a, a) / 1e9


class Counted:
  """Counts the calls of a runner function (no blocking, so the wall time is untouched)."""

  def __init__(self, fn):
    self.fn, self.sizes = fn, collections.Counter()

  def __call__(self, *args, **kwargs):
    ev = args[4] if len(args) > 4 else None
    self.sizes[len(ev["valid"]) if isinstance(ev, dict) and "valid" in ev
               else kwargs.get("gen_rows", 0)] += 1
    return self.fn(*args, **kwargs)


def cohort_times(runner, b, sizes, reps):
  out = {}
  for size in sizes:
    pad = engine.padding_events(b, size)

    def step(carry, pad=pad):
      cs, buf = carry
      cs, buf, _ = runner.cohort_run(cs, buf, runner.state.server.server, runner.ctx.data,
                                     pad, runner.step_key)
      return cs, buf

    out[size], (cs, buf) = median_threaded(step, (runner.state.client, runner.state.buffer),
                                           reps)
    runner.state = runner.state.replace(client=cs, buffer=buf)
  return out


def main(argv):
  del argv
  config = _CONFIG.value
  config_lib.validate(config)
  peak, peak_default = matmul_peak_gflops(), default_precision_peak_gflops()
  ctx, synthetic = build(config, _SYNTH_TRAIN.value)
  runner = ALGORITHMS.get(config.algorithm)(ctx)
  runner.precompile_server()
  for _ in range(_WARMUP.value):
    runner.run_iteration()
  cohort_run, server_run, client_run = (Counted(runner.cohort_run), Counted(runner.server_run),
                                        Counted(runner.client_run))
  runner.cohort_run, runner.server_run, runner.client_run = cohort_run, server_run, client_run
  steps0 = runner.client_steps
  jax.block_until_ready(runner.state)
  t = time.perf_counter()
  for _ in range(_ITERS.value):
    runner.run_iteration()
  jax.block_until_ready(runner.state)
  iters = _ITERS.value
  wall = (time.perf_counter() - t) / iters
  runner.cohort_run, runner.server_run, runner.client_run = (cohort_run.fn, server_run.fn,
                                                             client_run.fn)
  reps, b = _REPS.value, config.clients.batch_size
  parts = dict(cohort_calls_per_iter=sum(cohort_run.sizes.values()) / iters,
               event_calls_per_iter=sum(client_run.sizes.values()) / iters,
               client_steps_per_iter=(runner.client_steps - steps0) / iters,
               server_updates_per_iter=sum(server_run.sizes.values()) / iters,
               cohort_sizes={str(k): v / iters for k, v in sorted(cohort_run.sizes.items())},
               server_gen_rows={str(k): v / iters for k, v in sorted(server_run.sizes.items())})
  device = 0.0
  if cohort_run.sizes:
    times = cohort_times(runner, b, sorted(cohort_run.sizes), reps)
    device += sum(times[s] * n / iters for s, n in cohort_run.sizes.items())
    parts["cohort_s"] = {str(k): v for k, v in times.items()}
    other = "im2col" if layers.cohort_conv_impl() != "im2col" else "xla"
    orig = layers.cohort_conv_impl
    layers.cohort_conv_impl = lambda: other        # read while the cohort step is traced
    try:
      runner.cohort_run = engine.make_cohort_runner(runner.algo, runner.mesh,
                                                    augment=augment_lib.from_config(config))
      alt = cohort_times(runner, b, sorted(cohort_run.sizes), reps)
      parts[f"cohort_s_{other}"] = {str(k): v for k, v in alt.items()}
      runner.cohort_run = cohort_run.fn
    finally:
      layers.cohort_conv_impl = orig
  if client_run.sizes:
    one = {k: v[0] for k, v in engine.padding_events(b, 1).items() if k != "valid"}

    def event(carry):
      cs, buf = carry
      cs, buf, _ = client_run.fn(cs, buf, runner.state.server.server, ctx.data, one,
                                 runner.step_key)
      return cs, buf

    parts["client_step_s"], (cs, buf) = median_threaded(
        event, (runner.state.client, runner.state.buffer), reps)
    runner.state = runner.state.replace(client=cs, buffer=buf)
    device += parts["client_step_s"] * sum(client_run.sizes.values()) / iters
  # Server update on the run's last buffer, with and without generation.
  ss, buf = runner.state.server, runner.state.buffer
  it = np.int32(runner.scheduler.global_iters)

  def server(ss, fn=server_run.fn):
    return engine.run_server_update(runner.algo, fn, runner.compress_run, ss, buf, it,
                                    runner.server_key)[0]

  parts["server_update_s"], ss = median_threaded(server, ss, reps)
  device += parts["server_update_s"] * parts["server_updates_per_iter"]
  hp = runner.algo.hparams
  if hp.generate:
    nogen = gas.build(ctx.model, dataclasses.replace(hp, generate=False))
    run0 = engine.make_server_runner(nogen)
    parts["server_update_nogen_s"], ss = median_threaded(
        lambda s: run0(s, buf, it, runner.server_key)[0], ss, reps)
    runner.state = runner.state.replace(server=ss)
    # Merge + sampling + packing, compressions amortised (`bench_run.generation_seconds`).
    parts.update(generation_seconds(runner))
    ss = runner.state.server
    rows_, labels = buf.acts.reshape(-1, buf.acts.shape[-1]), buf.labels.reshape(-1)
    w = jnp.where(buf.row_mask.reshape(-1), jnp.repeat(buf.tags, b), 0.0)
    merge = jax.jit(lambda s: s.replace(stats=stats_lib.merge(
        s.stats, rows_, labels, w, jitter=hp.stats_jitter, block=hp.stats_block,
        room_made=True)), donate_argnums=0)

    def merge_with_room(ss):     # the factor fills up over the repetitions
      return merge(engine.make_room(runner.algo, runner.compress_run, ss, buf)[0])

    parts["merge_s"], ss = median_threaded(merge_with_room, ss, reps)
    sample = jax.jit(lambda s: stats_lib.sample(s, jax.random.key(2), b))
    parts["sample_s"] = best_seconds(sample, ss.stats, reps=reps)
  runner.state = runner.state.replace(server=ss)
  if _TRACE.value:
    with jax.profiler.trace(_TRACE.value, create_perfetto_trace=True):
      runner.run_iteration()
      jax.block_until_ready(runner.state)
  out = dict(device=f"{jax.default_backend()}:{jax.devices()[0].device_kind}",
             config=config.data.name, model=f"{ctx.model.name}/{ctx.model.split}",
             synthetic_data=synthetic, cohort_size=runner.cohort_size,
             cohort_conv_impl=layers.cohort_conv_impl(), stats_block=hp.stats_block,
             matmul_peak_gflops=peak, matmul_default_precision_gflops=peak_default,
             wall_s_per_global_iter=wall, device_s_per_global_iter=device,
             host_s_per_global_iter=wall - device, **parts, date=time.strftime("%Y-%m-%d"))
  write_json(out, _OUT.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
