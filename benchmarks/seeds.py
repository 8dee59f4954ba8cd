r"""Benchmark of the runs axis: S vmapped seeds against their separate runs, same machine.

    python -m benchmarks.run seeds --config=configs/cifar10.py --seeds=0,1,2 --iters=10 \
        --out=seeds.json

Runs `train_and_evaluate` (synthetic inputs of the dataset's shapes when the dataset is absent)
for each seed alone and for `--seeds` in one program (`execution.vmap_seeds=1`), each for
`--iters` global iterations, and writes JSON with the mean wall seconds per global iteration of
each (first iteration, which compiles, excluded): `single_wall_s_per_global_iter` (the first
seed's), `separate_wall_s_per_global_iter` (a list: each seed's separate run; the seeds'
schedules differ, so their runs cost different times), `seeds_wall_s_per_global_iter` and
`per_seed_speedup` = the separate runs' sum / the vmapped run (S = the speed-up over running
the seeds one after another). With `--iters=1` the one iteration's wall is reported, compilation
included.

With `--parts`, every device call of the runs (client steps or cohorts, server updates,
compressions) is blocked on and timed instead (the runners' `calls` wrapped in `Timed` once
built), and the JSON gives, per run, each kind's calls per global iteration and mean
milliseconds per call (its first call, which compiles where the runner did not compile ahead,
left out when there are more): where the seeds' time goes. The walls are then those of blocked
calls.
"""
import contextlib
import json
import os
import tempfile

import jax
from absl import flags

from benchmarks import common
from gas_jax import train
from gas_jax.runners import gas_runner, seeds_runner


def define_flags(fv, argv):
  """This benchmark's flags, in `fv` (`common.parse_flags`)."""
  common.define_config(fv, argv)
  common.define_out(fv)
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the vmapped run.", flag_values=fv)
  flags.DEFINE_integer("iters", 10, "Global iterations per run.", flag_values=fv)
  flags.DEFINE_integer("synthetic_train", 5000, "Synthetic train-set size.", flag_values=fv)
  flags.DEFINE_bool("parts", False, "Block on and time every device call (see above).",
                    flag_values=fv)


@contextlib.contextmanager
def timed_calls(timers: dict):
  """Within: every GAS runner built (`GasRunner`, `SeedsGasRunner`) gets its `calls` wrapped in
  `Timed` once its constructor (which compiles ahead of time) is done; `timers[name]` maps each
  call's name to its `Timed` (name: "seeds" for the runs axis, else "seed<s>")."""
  classes = (gas_runner.GasRunner, seeds_runner.SeedsGasRunner)
  originals = {cls: cls.__init__ for cls in classes}

  def hook(orig):
    def init(self, *args, **kwargs):
      orig(self, *args, **kwargs)
      if type(self) not in classes:
        return
      self.calls = self.calls.wrap(common.Timed)
      name = ("seeds" if isinstance(self, seeds_runner.SeedsGasRunner)
              else f"seed{self.cfg.seed}")
      timers[name] = {c: getattr(self.calls, c) for c in self.calls.names()}
    return init

  for cls, orig in originals.items():
    cls.__init__ = hook(orig)
  try:
    yield timers
  finally:
    for cls, orig in originals.items():
      cls.__init__ = orig


def _parts(timers: dict, iters: int) -> dict:
  def ms(t):
    times = t.times[1:] if len(t.times) > 1 else t.times
    return 1e3 * sum(times) / len(times) if times else None
  return {run: {c: dict(calls_per_iter=t.calls / iters, ms_per_call=ms(t))
                for c, t in calls.items()} for run, calls in timers.items()}


def _wall(summary: dict) -> float:
  """Wall seconds per global iteration, the first left out (with one iteration: that one,
  compilation included; summary.json's mean_iter_wall_s is then null)."""
  mean = summary["mean_iter_wall_s"]
  return summary["first_iter_wall_s"] if mean is None else mean


def _run(config, workdir):
  summary = train.train_and_evaluate(config, workdir)
  if "per_seed" in summary:
    walls = []
    for d in summary["per_seed"]:
      with open(os.path.join(d, "summary.json")) as f:
        walls.append(_wall(json.load(f)))
    return max(walls)     # the seeds share every tick; the longest is the program's
  return _wall(summary)


def main(argv) -> dict:
  fv = common.parse_flags(define_flags, argv, required=["config"])
  config = fv.config
  config.num_global_iters = fv.iters
  config.checkpoint_every = 10 ** 6
  seeds = tuple(int(s) for s in fv.seeds)
  timers = {}
  with contextlib.ExitStack() as stack:
    synthetic = stack.enter_context(common.synthetic_if_absent(config, fv.synthetic_train))
    if fv.parts:
      stack.enter_context(timed_calls(timers))
    tmp = stack.enter_context(tempfile.TemporaryDirectory())
    singles = []
    for s in seeds:
      config.seed = s
      singles.append(_run(config, os.path.join(tmp, f"single{s}")))
    config.seeds = seeds
    config.execution.vmap_seeds = 1
    multi = _run(config, os.path.join(tmp, "multi"))
  out = dict(device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
             config=config.data.name, model=f"{config.model.name}/{config.model.split}",
             synthetic_data=synthetic, iters=fv.iters, seeds=list(seeds),
             single_wall_s_per_global_iter=singles[0], separate_wall_s_per_global_iter=singles,
             seeds_wall_s_per_global_iter=multi, per_seed_speedup=sum(singles) / multi,
             blocked_calls=fv.parts)
  if timers:
    out["parts"] = _parts(timers, fv.iters)
  return common.write_json(out, fv.out)
