"""Host-side planning of the GAS server update (spec §1.5; paper Algorithm 1 lines 8-10).

Before each server update the runners read a little from the device and decide two static
things: how many generated rows to pack (`gas.generated_rows`: the server step then compiles
for one of a few sizes) and which labels' square-root factors must be compressed first
(`stats.overflowing`), each by a jitted call of its own (`algo.compress`), so that the server
update itself holds no loop over the factor and runs with `room_made`. `check_gen_rows` raises
when the device disagreed (it would have dropped rows).
"""
from typing import List, Optional, Tuple

import jax
import numpy as np

from gas_jax import stats as stats_lib
from gas_jax.algorithms.gas import generation


def plan_server_update(algo, sstate, buffer) -> Tuple[Optional[int], List[int]]:
  """Host side, before a server update: (gen_rows, labels to compress). gen_rows is the static
  packed size of its generated rows (None without generation); the labels are those whose
  square-root factor has no room for the update's merge (`stats.overflowing`), to be
  compressed by `algo.compress` first. One small device read (labels, masks, tags, and the
  statistics' seen flags and rows in use)."""
  hp = algo.hparams
  if not getattr(hp, "generate", False):
    return None, []
  st = sstate.stats
  bounded = stats_lib.compressible(st)
  host = jax.device_get((buffer.labels, buffer.row_mask, buffer.tags, st.seen,
                         st.used if bounded else None))
  return plan_from_host(hp, *host, st.rows.shape[-2] if bounded else 0)


def plan_from_host(hp, labels, mask, tags, seen, used, capacity: int):
  """`plan_server_update` from host copies of the buffer's labels [C, B], row_mask [C, B],
  tags [C] and the statistics' seen [M] and rows in use [M] (None: no square-root factor,
  whose rows per label are `capacity`)."""
  rows = generation.generated_rows(hp, labels, mask, seen)
  if used is None:
    return rows, []
  w = np.where(mask, np.asarray(tags)[:, None], 0.0).reshape(-1)
  full = stats_lib.overflowing(np.asarray(used), np.asarray(seen), np.asarray(labels).reshape(-1),
                               w, hp.stats_block, capacity, xp=np)
  return rows, [int(y) for y in np.flatnonzero(full)]


def server_sizes_to_precompile(hp) -> List[int]:
  """The packed server-update sizes the runners compile before training
  (`gas.generated_row_sizes`): all of them where there are several (one pass), none where
  there is one (in chunks: it compiles at the first update, inside the first iteration) or no
  generation."""
  if not getattr(hp, "generate", False):
    return []
  sizes = generation.generated_row_sizes(hp)
  return sizes if len(sizes) > 1 else []


def make_room(algo, compress_run, sstate, buffer) -> Tuple[object, Optional[int]]:
  """`plan_server_update`, then `compress_run` (jitted `algo.compress`) for each full label.
  Returns (server_state, gen_rows) for a `server_run(..., gen_rows=gen_rows, room_made=True)`."""
  rows, full = plan_server_update(algo, sstate, buffer)
  for y in full:
    sstate = compress_run(sstate, np.int32(y))
  return sstate, rows


def run_server_update(algo, server_run, compress_run, sstate, buffer, *args):
  """A server update as the runners run it: `make_room`, then `server_run(sstate, buffer,
  *args)` with the packed size and room_made. Returns (server_state, metrics)."""
  sstate, rows = make_room(algo, compress_run, sstate, buffer)
  return server_run(sstate, buffer, *args, gen_rows=rows, room_made=True)


def check_gen_rows(server_outputs) -> None:
  """Raises if a server update needed more generated rows than `plan_server_update` packed, or
  a label's factor had no room for its merge (host/device disagreements that would drop rows)."""
  for o in server_outputs:
    if o is None:
      continue
    if bool(o.get("gen_overflow", False)):
      raise RuntimeError("a server update needed more generated activations than gen_rows "
                         "packed")
    if bool(o.get("stats_overflow", False)):
      raise RuntimeError("a server update's merge found a label's statistics factor full: "
                         "gas.plan_server_update and the device disagree")


def precompile_compress(algo, compress_run, sstate) -> None:
  """Compiles `compress_run` ahead of time when the run has a square-root factor to compress
  (else it would compile at the first compression, inside a timed global iteration)."""
  if getattr(algo.hparams, "generate", False) and stats_lib.compressible(sstate.stats):
    compress_run.lower(sstate, np.int32(0)).compile()
