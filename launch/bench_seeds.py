r"""Benchmark of the runs axis: S vmapped seeds against their separate runs, same machine.

    python launch/bench_seeds.py --config=configs/cifar10.py --seeds=0,1,2 --iters=10 \
        --out=seeds.json

Runs `train_and_evaluate` (synthetic inputs of the dataset's shapes when the dataset is absent)
for each seed alone and for `--seeds` in one program (`execution.vmap_seeds=1`), each for
`--iters` global iterations, and writes JSON with the mean wall seconds per global iteration of
each (first iteration, which compiles, excluded): `single_wall_s_per_global_iter` (the first
seed's), `separate_wall_s_per_global_iter` (a list: each seed's separate run; the seeds'
schedules differ, so their runs cost different times), `seeds_wall_s_per_global_iter` and
`per_seed_speedup` = the separate runs' sum / the vmapped run (S = the speed-up over running
the seeds one after another).

With `--parts`, every device call of the two runs (cohorts or client steps, server updates,
compressions) is blocked on and timed instead, and the JSON gives, per run, each kind's calls
per global iteration and mean milliseconds per call: where the seeds' time goes. The walls
are then those of blocked calls.
"""
import json
import os
import sys
import tempfile

import jax
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gas_jax import train  # noqa: E402
from gas_jax.data import sources  # noqa: E402
from gas_jax.data import real  # noqa: E402
from gas_jax.runners import gas_runner, seeds_runner  # noqa: E402
from bench_run import Timed  # noqa: E402  (launch/)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the vmapped run.")
_ITERS = flags.DEFINE_integer("iters", 10, "Global iterations per run.")
_OUT = flags.DEFINE_string("out", None, "Output JSON file.")
_SYNTH_TRAIN = flags.DEFINE_integer("synthetic_train", 5000, "Synthetic train-set size.")
_PARTS = flags.DEFINE_bool("parts", False, "Block on and time every device call (see above).")

CALLS = ("client_run", "cohort_run", "server_run", "compress_run")


def _time_calls(timers: dict):
  """Wraps the runners' jitted calls in `Timed` once they are compiled (after `precompile`,
  which the runners call when they run cohorts); `timers` collects them per runner class."""
  for cls in (gas_runner.GasRunner, seeds_runner.SeedsGasRunner):
    orig = cls.precompile

    def precompile(self, orig=orig):
      orig(self)
      for call in CALLS:
        if hasattr(self, call):
          setattr(self, call, Timed(getattr(self, call)))
      name = ("seeds" if isinstance(self, seeds_runner.SeedsGasRunner)
              else f"seed{self.cfg.seed}")
      timers[name] = {c: getattr(self, c) for c in CALLS if hasattr(self, c)}

    cls.precompile = precompile


def _parts(timers: dict, iters: int) -> dict:
  return {run: {c: dict(calls_per_iter=t.calls / iters,
                        ms_per_call=1e3 * t.total / t.calls if t.calls else None)
                for c, t in calls.items()} for run, calls in timers.items()}


def _run(config, workdir):
  summary = train.train_and_evaluate(config, workdir)
  if "per_seed" in summary:
    walls = [json.load(open(os.path.join(d, "summary.json")))["mean_iter_wall_s"]
             for d in summary["per_seed"]]
    return max(walls)     # the seeds share every tick; the longest is the program's
  return summary["mean_iter_wall_s"]


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    sources.load_dataset(config.data.name, config.data.dir or None)
    synthetic = False
  except (FileNotFoundError, ValueError):
    spec = real.SPECS.get(config.data.name)
    shape, classes = (spec.shape, spec.num_classes) if spec else ((8, 8, 1), 10)
    ds = sources.synthetic_dataset(shape, classes, _SYNTH_TRAIN.value, 500, seed=0)
    sources.load_dataset = lambda name, data_dir: ds
    synthetic = True
  config.num_global_iters = _ITERS.value
  config.checkpoint_every = 10 ** 6
  seeds = tuple(int(s) for s in _SEEDS.value)
  timers = {}
  if _PARTS.value:
    _time_calls(timers)
  with tempfile.TemporaryDirectory() as tmp:
    singles = []
    for s in seeds:
      config.seed = s
      singles.append(_run(config, os.path.join(tmp, f"single{s}")))
    config.seeds = seeds
    config.execution.vmap_seeds = 1
    multi = _run(config, os.path.join(tmp, "multi"))
  out = dict(device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
             config=config.data.name, model=f"{config.model.name}/{config.model.split}",
             synthetic_data=synthetic, iters=_ITERS.value, seeds=list(seeds),
             single_wall_s_per_global_iter=singles[0], separate_wall_s_per_global_iter=singles,
             seeds_wall_s_per_global_iter=multi, per_seed_speedup=sum(singles) / multi,
             blocked_calls=_PARTS.value)
  if timers:
    out["parts"] = _parts(timers, _ITERS.value)
  text = json.dumps(out, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
