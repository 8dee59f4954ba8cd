"""What the benchmark scripts share: a timed wrapper, the run context with synthetic inputs when
the dataset is absent, the generation cost per server update, and writing the JSON result."""
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gas_jax import engine
from gas_jax import stats as stats_lib
from gas_jax import train
from gas_jax.data import real, sources


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


def build(config, synthetic_train: int = 5000):
  """The config's run context; with the dataset absent, synthetic inputs of its shapes.

  Returns (context, synthetic)."""
  try:
    return train.build_context(config), False
  except (FileNotFoundError, ValueError):
    spec = real.SPECS.get(config.data.name)
    shape, classes = (spec.shape, spec.num_classes) if spec else ((8, 8, 1), 10)
    ds = sources.synthetic_dataset(shape, classes, synthetic_train, 500, seed=0)
    orig = sources.load_dataset
    sources.load_dataset = lambda name, data_dir: ds
    try:
      return train.build_context(config), True
    finally:
      sources.load_dataset = orig


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
  algo, buf = runner.algo, runner.state.buffer
  ss = jax.tree_util.tree_map(jnp.copy, runner.state.server)    # donated below: a copy
  rows = engine.plan_server_update(algo, ss, buf)[0]
  # As the runners do it: compressions first (`runner.compress_run`, for the labels the host
  # finds full), then the merge and sampling with room made.
  fn = jax.jit(lambda st, buf, key, u: algo.generate(st, buf, key, u, rows, room_made=True),
               donate_argnums=0)

  def compressed(ss, todo):
    for y in todo:
      ss = runner.compress_run(ss, np.int32(y))
    return ss

  ss = compressed(ss, engine.plan_server_update(algo, ss, buf)[1])
  ss = ss.replace(stats=jax.block_until_ready(
      fn(ss.stats, buf, jax.random.key(0), ss.server_updates)[0]))        # compile
  sqrt = isinstance(ss.stats, stats_lib.SqrtStats)
  plain, later, appended, after = [], [], {}, {}
  for calls in range(max_calls):
    st = ss.stats
    used, done = (np.asarray(st.used), np.asarray(st.compressed)) if sqrt else (None, None)
    todo = engine.plan_server_update(algo, ss, buf)[1]
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


def write_json(out: dict, path) -> None:
  """Prints `out` and writes it to `path` (if any) through a temporary file, so that a crash
  never leaves a half-written result."""
  text = json.dumps(out, indent=2)
  print(text)
  if path:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, path)
