r"""Where a GAS global iteration's time goes on this machine, part by part, in one run.

    python -m benchmarks.run parts --config=configs/cifar10.py --out=/tmp/parts.json \
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
  see `benchmarks.common.generation_seconds`);
- `device_s_per_global_iter`: the sum of those parts weighted by how often they occur, so
  `wall - device` is what the host adds (scheduling, batches, dispatch, synchronisation);
- both matmul peaks: fp32 (`HIGHEST`) and the backend's default precision (TF32 on recent
  NVIDIA GPUs), which is what the models' convolutions and matmuls use.
With `--trace`, one more global iteration runs under `jax.profiler.trace` (a Perfetto trace,
for a kernel-level breakdown).
"""
import collections
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from benchmarks import common
from benchmarks.timing import best_seconds, default_precision_peak_gflops, matmul_peak_gflops
from gas_jax import config as config_lib
from gas_jax import engine
from gas_jax import runners  # noqa: F401  (fills ALGORITHMS)
from gas_jax import stats as stats_lib
from gas_jax.algorithms import gas
from gas_jax.data import augment as augment_lib
from gas_jax.models import layers
from gas_jax.registry import ALGORITHMS

GAS = ("gas", "gas_nogen")     # the runners it instruments (`GasRunner`)


def define_flags(fv, argv):
  """This benchmark's flags, in `fv` (`common.parse_flags`)."""
  common.define_config(fv, argv)
  common.define_out(fv)
  common.define_peak_size(fv)
  flags.DEFINE_integer("iters", 5, "Timed global iterations.", flag_values=fv)
  flags.DEFINE_integer("warmup", 2, "Global iterations before timing.", flag_values=fv)
  flags.DEFINE_integer("reps", 7, "Repetitions of each part (the median is kept).",
                       flag_values=fv)
  flags.DEFINE_string("trace", None, "Folder for a profiler trace of one iteration.",
                      flag_values=fv)
  flags.DEFINE_integer("synthetic_train", 5000, "Synthetic train-set size.", flag_values=fv)
  flags.DEFINE_integer("gen_calls", 1000, "At most this many `generate` calls to time the "
                       "generation (`common.generation_seconds`; fewer: a quicker, rougher "
                       "figure, the factor's compressions possibly left out).", flag_values=fv)


def median_threaded(fn, state, reps):
  """Median seconds of state = fn(state) (the state is donated, so it is threaded through)."""
  state = jax.block_until_ready(fn(state))                   # compilation
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    state = jax.block_until_ready(fn(state))
    times.append(time.perf_counter() - t)
  return float(np.median(times)), state


class Counted:
  """Counts the calls of a runner's jitted function by size (no blocking, so the wall time is
  untouched): the cohort length of a client/cohort call, the packed generated rows of a server
  update."""

  def __init__(self, fn):
    self.fn, self.sizes = fn, collections.Counter()

  def __call__(self, *args, **kwargs):
    ev = args[4] if len(args) > 4 else None
    self.sizes[len(ev["valid"]) if isinstance(ev, dict) and "valid" in ev
               else kwargs.get("gen_rows", 0)] += 1
    return self.fn(*args, **kwargs)

  def __getattr__(self, name):     # only for names not set here (`lower`, ...)
    if name == "fn":
      raise AttributeError(name)
    return getattr(self.fn, name)


def cohort_times(runner, cohort, b, sizes, reps):
  """Median seconds of `cohort` (a cohort call of the runner's signature) per padded size, on
  the runner's state (threaded through and put back)."""
  out = {}
  for size in sizes:
    pad = engine.padding_events(b, size)

    def step(carry, pad=pad):
      cs, buf = carry
      cs, buf, _ = cohort(cs, buf, runner.state.server.server, runner.ctx.data, pad,
                          runner.step_key)
      return cs, buf

    out[size], (cs, buf) = median_threaded(step, (runner.state.client, runner.state.buffer),
                                           reps)
    runner.state = runner.state.replace(client=cs, buffer=buf)
  return out


def main(argv) -> dict:
  fv = common.parse_flags(define_flags, argv, required=["config"])
  config = fv.config
  config_lib.validate(config)
  if config.algorithm not in GAS:
    raise flags.Error(f"--config: algorithm={config.algorithm}; this benchmark times GAS "
                      f"({', '.join(GAS)})")
  peak = matmul_peak_gflops(fv.peak_size)
  peak_default = default_precision_peak_gflops(fv.peak_size)
  ctx, synthetic = common.build(config, fv.synthetic_train)
  with ctx.plan.active():
    out = _measure(fv, config, ctx)
  out = dict(device=common.device_name(), config=config.data.name,
             model=f"{ctx.model.name}/{ctx.model.split}", synthetic_data=synthetic,
             cohort_size=out.pop("cohort_size"), cohort_conv_impl=out.pop("cohort_conv_impl"),
             stats_block=out.pop("stats_block"), matmul_peak_gflops=peak,
             matmul_default_precision_gflops=peak_default, **out,
             date=time.strftime("%Y-%m-%d"))
  return common.write_json(out, fv.out)


def _measure(fv, config, ctx) -> dict:
  """The parts (see the module docstring), within the run's execution plan."""
  runner = ALGORITHMS.get(config.algorithm)(ctx)
  runner.precompile_server()
  for _ in range(fv.warmup):
    runner.run_iteration()
  calls = runner.calls
  counted = calls.wrap(Counted)
  runner.calls = counted
  steps0 = runner.client_steps
  jax.block_until_ready(runner.state)
  t = time.perf_counter()
  for _ in range(fv.iters):
    runner.run_iteration()
  jax.block_until_ready(runner.state)
  iters = fv.iters
  wall = (time.perf_counter() - t) / iters
  runner.calls = calls
  it = np.int32(fv.warmup + iters)         # the global iteration the next update belongs to
  reps, b = fv.reps, config.clients.batch_size
  cohort_run, client_run, server_run = counted.cohort, counted.client, counted.server
  parts = dict(cohort_calls_per_iter=sum(cohort_run.sizes.values()) / iters,
               event_calls_per_iter=sum(client_run.sizes.values()) / iters,
               client_steps_per_iter=(runner.client_steps - steps0) / iters,
               server_updates_per_iter=sum(server_run.sizes.values()) / iters,
               cohort_sizes={str(k): v / iters for k, v in sorted(cohort_run.sizes.items())},
               server_gen_rows={str(k): v / iters for k, v in sorted(server_run.sizes.items())})
  device = 0.0
  if cohort_run.sizes:
    times = cohort_times(runner, calls.cohort, b, sorted(cohort_run.sizes), reps)
    device += sum(times[s] * n / iters for s, n in cohort_run.sizes.items())
    parts["cohort_s"] = {str(k): v for k, v in times.items()}
    other = "im2col" if layers.cohort_conv_impl() != "im2col" else "xla"
    # A second cohort call, traced (at its first call) with the other cohort convolution.
    with layers.conv_defaults(layers.conv_impl(), other):
      alt_cohort = engine.make_cohort_runner(runner.algo, runner.mesh,
                                             augment=augment_lib.from_config(config))
      alt = cohort_times(runner, alt_cohort, b, sorted(cohort_run.sizes), reps)
    parts[f"cohort_s_{other}"] = {str(k): v for k, v in alt.items()}
  if client_run.sizes:
    one = {k: v[0] for k, v in engine.padding_events(b, 1).items() if k != "valid"}

    def event(carry):
      cs, buf = carry
      cs, buf, _ = calls.client(cs, buf, runner.state.server.server, ctx.data, one,
                                runner.step_key)
      return cs, buf

    parts["client_step_s"], (cs, buf) = median_threaded(
        event, (runner.state.client, runner.state.buffer), reps)
    runner.state = runner.state.replace(client=cs, buffer=buf)
    device += parts["client_step_s"] * sum(client_run.sizes.values()) / iters
  # Server update on the run's last buffer, with and without generation.
  ss, buf = runner.state.server, runner.state.buffer

  def server(ss):
    return gas.run_server_update(runner.algo, calls.server, calls.compress, ss, buf, it,
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
    # Merge + sampling + packing, compressions amortised (`common.generation_seconds`).
    parts.update(common.generation_seconds(runner, max_calls=fv.gen_calls))
    ss = runner.state.server
    rows_, labels = buf.acts.reshape(-1, buf.acts.shape[-1]), buf.labels.reshape(-1)
    w = jnp.where(buf.row_mask.reshape(-1), jnp.repeat(buf.tags, b), 0.0)
    merge = jax.jit(lambda s: s.replace(stats=stats_lib.merge(
        s.stats, rows_, labels, w, jitter=hp.stats_jitter, block=hp.stats_block,
        room_made=True)), donate_argnums=0)

    def merge_with_room(ss):     # the factor fills up over the repetitions
      return merge(gas.make_room(runner.algo, calls.compress, ss, buf)[0])

    parts["merge_s"], ss = median_threaded(merge_with_room, ss, reps)
    sample = jax.jit(lambda s: stats_lib.sample(s, jax.random.key(2), b))
    parts["sample_s"] = best_seconds(sample, ss.stats, reps=reps)
  runner.state = runner.state.replace(server=ss)
  if fv.trace:
    with jax.profiler.trace(fv.trace, create_perfetto_trace=True):
      runner.run_iteration()
      jax.block_until_ready(runner.state)
  return dict(cohort_size=runner.cohort_size, cohort_conv_impl=layers.cohort_conv_impl(),
              stats_block=hp.stats_block, wall_s_per_global_iter=wall,
              device_s_per_global_iter=device, host_s_per_global_iter=wall - device, **parts)
