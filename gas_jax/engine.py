"""Executes host-scheduled events on the device.

The host scheduler turns the simulated clock into a list of events (`system.scheduler.Event`);
`pack_events` turns them into fixed-length chunks of arrays (padding events are no-ops), and
`make_runner` compiles one `lax.scan` of the algorithm's pure `step` over a chunk. The chunk
length is static, so a run compiles the runner once, whatever the iteration lengths are.
"""
import functools
from typing import Dict, List, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np


def pack_events(events: Sequence, batches: Sequence, tags: Sequence[float],
                agg_weights: Sequence[float], first_event_id: int, chunk: int) -> List[Dict]:
  """Events -> list of dicts of numpy arrays with leading length `chunk` (last one padded)."""
  n = len(events)
  total = max(chunk, -(-n // chunk) * chunk)
  batch_size = len(batches[0][0])
  out = dict(
      valid=np.zeros(total, bool), event_id=np.zeros(total, np.int32),
      client=np.zeros(total, np.int32), slot=np.zeros(total, np.int32),
      idx=np.zeros((total, batch_size), np.int32), mask=np.zeros((total, batch_size), bool),
      tag=np.zeros(total, np.float32), buf_pos=np.zeros(total, np.int32),
      server_update=np.zeros(total, bool), upload=np.zeros(total, bool),
      aggregate=np.zeros(total, bool), agg_weight=np.zeros(total, np.float32))
  for i, (ev, (idx, mask)) in enumerate(zip(events, batches)):
    out["valid"][i] = True
    out["event_id"][i] = first_event_id + i
    out["client"][i] = ev.client
    out["slot"][i] = ev.slot
    out["idx"][i] = idx
    out["mask"][i] = mask
    out["tag"][i] = tags[i]
    out["buf_pos"][i] = ev.buf_pos
    out["server_update"][i] = ev.server_update
    out["upload"][i] = ev.upload
    out["aggregate"][i] = ev.aggregate
    out["agg_weight"][i] = agg_weights[i]
  return [{k: v[s:s + chunk] for k, v in out.items()} for s in range(0, total, chunk)]


def make_runner(step, max_traces: int = 2):
  """jit(scan(step)) over one chunk: (state, data, events, rng) -> (state, metrics per event).

  `data` holds the device-resident train set (x, y) and the per-client log-priors; each event
  gathers its minibatch by index, so only indices cross the host-device boundary.
  """

  @functools.partial(jax.jit, donate_argnums=0)
  @chex.assert_max_traces(n=max_traces)
  def run(state, data, events, rng):
    def body(state, ev):
      def real(state):
        batch = dict(ev)
        batch["x"] = data["x"][ev["idx"]]
        batch["y"] = data["y"][ev["idx"]]
        batch["log_prior"] = data["log_prior"][ev["client"]]
        return step(state, batch, jax.random.fold_in(rng, ev["event_id"]))

      shapes = jax.eval_shape(real, state)[1]
      zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      return jax.lax.cond(ev["valid"], real, lambda s: (s, zeros), state)

    return jax.lax.scan(body, state, events)

  return run
