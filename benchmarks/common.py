"""What the benchmarks share: their flags, a timed wrapper, the run context with synthetic inputs
when the dataset is absent, the generation cost per server update, and writing the JSON result.

Benchmarks see a runner only through its public API: `run_iteration()`, `state_dict()`,
`eval_params()`, `precompile_server()`, the `calls` record they instrument
(`gas_jax.runners.calls`) and the attributes `GasRunner`'s docstring lists as public.
"""
import contextlib
import json
import os
import sys
import time
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from gas_jax import context as context_lib
from gas_jax import stats as stats_lib
from gas_jax.algorithms import gas
from gas_jax.data import real, sources


def parse_flags(define: Callable[[flags.FlagValues, Sequence[str]], None],
                argv: Sequence[str], required: Iterable[str] = ()) -> flags.FlagValues:
  """A benchmark's flags, parsed from argv (argv[0]: the program name) into a fresh
  `FlagValues` that `define(flag_values, argv)` fills: no global flag state, so benchmarks can
  run one after another in one process (tests). --help prints the flags and exits."""
  fv = flags.FlagValues()
  define(fv, argv)
  if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
    print(fv.get_help())
    raise SystemExit(0)
  rest = fv(list(argv))
  if len(rest) > 1:
    raise flags.Error(f"{argv[0]}: unexpected arguments {rest[1:]}")
  missing = [name for name in required if fv[name].value is None]
  if missing:
    raise flags.Error(f"{argv[0]}: required flags missing: "
                      + ", ".join(f"--{n}" for n in missing))
  return fv


def define_config(fv: flags.FlagValues, argv: Sequence[str], default=None) -> None:
  """--config (an experiment config file; `--config.a.b=v` overrides read from argv)."""
  config_flags.DEFINE_config_file("config", default, "Experiment config.", flag_values=fv,
                                  sys_argv=list(argv))


def define_out(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "Output JSON file.", flag_values=fv)


def define_peak_size(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("peak_size", 0, "Side of the square matmuls that measure the fp32 peak "
                       "(0: 2048 on the CPU, 4096 elsewhere; smaller for a quick check).",
                       flag_values=fv)


class Timed:
  """Wraps a jitted callable: blocks on its result and accumulates wall time per call (`times`:
  each call's seconds). Other attributes (`lower`, ...) are the wrapped callable's."""

  def __init__(self, fn):
    self.fn, self.total, self.calls, self.times = fn, 0.0, 0, []

  def __call__(self, *args, **kwargs):
    t = time.perf_counter()
    out = jax.block_until_ready(self.fn(*args, **kwargs))
    dt = time.perf_counter() - t
    self.total += dt
    self.calls += 1
    self.times.append(dt)
    return out

  def __getattr__(self, name):     # only for names not set here (`lower`, ...)
    if name == "fn":
      raise AttributeError(name)
    return getattr(self.fn, name)


@contextlib.contextmanager
def synthetic_if_absent(config, synthetic_train: int = 5000):
  """Within: the config's dataset, or, when it is absent (not found or `data.dir` unset),
  synthetic inputs of its shapes (`sources.load_dataset` swapped, restored on exit). Yields
  whether the inputs are synthetic."""
  try:
    sources.load_dataset(config.data.name, config.data.dir or None)
    absent = False
  except (FileNotFoundError, ValueError):
    absent = True
  if not absent:
    yield False
    return
  spec = real.SPECS.get(config.data.name)
  shape, classes = (spec.shape, spec.num_classes) if spec else ((8, 8, 1), 10)
  ds = sources.synthetic_dataset(shape, classes, synthetic_train, 500, seed=0)
  orig = sources.load_dataset
  sources.load_dataset = lambda name, data_dir: ds
  try:
    yield True
  finally:
    sources.load_dataset = orig


def build(config, synthetic_train: int = 5000):
  """The config's run context; with the dataset absent, synthetic inputs of its shapes.

  Returns (context, synthetic)."""
  with synthetic_if_absent(config, synthetic_train) as synthetic:
    return context_lib.build_context(config), synthetic


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
  at least once however short the window.)

  At most `max_calls` calls (the timing ends after min(min_calls, max_calls) calls without a
  compression and 3 later compressions, or at max_calls)."""
  min_calls = min(min_calls, max_calls)
  algo, buf = runner.algo, runner.state.buffer
  compress = runner.calls.compress
  ss = jax.tree_util.tree_map(jnp.copy, runner.state.server)    # donated below: a copy
  rows = gas.plan_server_update(algo, ss, buf)[0]
  # As the runners do it: compressions first (`runner.calls.compress`, for the labels the host
  # finds full), then the merge and sampling with room made.
  fn = jax.jit(lambda st, buf, key, u: algo.generate(st, buf, key, u, rows, room_made=True),
               donate_argnums=0)

  def compressed(ss, todo):
    for y in todo:
      ss = compress(ss, np.int32(y))
    return ss

  ss = compressed(ss, gas.plan_server_update(algo, ss, buf)[1])
  ss = ss.replace(stats=jax.block_until_ready(
      fn(ss.stats, buf, jax.random.key(0), ss.server_updates)[0]))        # compile
  sqrt = isinstance(ss.stats, stats_lib.SqrtStats)
  plain, later, appended, after = [], [], {}, {}
  for calls in range(max_calls):
    st = ss.stats
    used, done = (np.asarray(st.used), np.asarray(st.compressed)) if sqrt else (None, None)
    todo = gas.plan_server_update(algo, ss, buf)[1]
    t = time.perf_counter()
    ss = compressed(ss, todo)
    st, *out = fn(ss.stats, buf, jax.random.key(calls + 1), ss.server_updates + calls)
    ss = ss.replace(stats=st)
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


def device_name() -> str:
  return f"{jax.default_backend()}:{jax.devices()[0].device_kind}"


def write_json(out: dict, path) -> dict:
  """Prints `out` and writes it to `path` (if any) through a temporary file, so that a crash
  never leaves a half-written result. Returns `out`."""
  text = json.dumps(out, indent=2)
  print(text)
  sys.stdout.flush()
  if path:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, path)
  return out
