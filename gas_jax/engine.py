"""Executes host-scheduled events on the device.

The host scheduler turns the simulated clock into events (`system.scheduler.Event`). Server
updates happen after every C-th client step, so the event stream splits into *segments*: runs of
at most C consecutive client steps that all see the same server model, each ending at a server
update or at an aggregation (where the driver evaluates). Each client step is one jitted call of
the algorithm's pure `client_step` whose activation lands in the activation buffer at the
position the scheduler assigned; the server update is a second jitted call, so the large
server-side state (Gaussian statistics) never travels through client steps.
"""
from typing import Dict, List, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gas_jax.data import augment as augment_lib
from gas_jax.models import layers


def segments(events: Sequence) -> List[List]:
  """Splits events after every server-update or aggregation event."""
  out, cur = [], []
  for ev in events:
    cur.append(ev)
    if ev.server_update or ev.aggregate:
      out.append(cur)
      cur = []
  if cur:
    out.append(cur)
  return out


def opens_cohort(ev, slots, size: int, max_size: int) -> bool:
  """Whether `ev` must start a new cohort after one of `size` events on `slots`: its slot is
  already there (its step depends on the previous one), or the cohort is full."""
  return ev.slot in slots or bool(max_size and size == max_size)


def closes_cohort(ev) -> bool:
  """Whether a cohort ends with `ev`: a server update or an aggregation follows it."""
  return ev.server_update or ev.aggregate


def cohorts(events: Sequence, max_size: int) -> List[List]:
  """Groups consecutive independent events: distinct slots, no server update or aggregation
  before the last one (so all see the same phi), at most `max_size` (0 = unbounded). The same
  rules cut the runs axis' cohorts (`SeedsGasRunner`)."""
  out, cur, slots = [], [], set()
  for ev in events:
    if opens_cohort(ev, slots, len(cur), max_size):
      out.append(cur)
      cur, slots = [], set()
    cur.append(ev)
    slots.add(ev.slot)
    if closes_cohort(ev):
      out.append(cur)
      cur, slots = [], set()
  if cur:
    out.append(cur)
  return out


def bucket(n: int, multiple: int = 1) -> int:
  """Padded cohort length: the next power of two >= n, rounded up to a multiple (devices)."""
  size = 1
  while size < n:
    size *= 2
  return -(-size // multiple) * multiple


def stack_events(arrays: Sequence[Dict], length: int) -> Dict:
  """Per-event dicts -> one dict of [length, ...] arrays plus "valid"; padding is inert."""
  out = {k: np.zeros((length,) + np.shape(v), np.asarray(v).dtype) for k, v in arrays[0].items()}
  for i, a in enumerate(arrays):
    for k, v in a.items():
      out[k][i] = v
  out["valid"] = np.arange(length) < len(arrays)
  return out


def _maybe_count_traces(fn, max_traces):
  """Tests pass max_traces to check that a runner compiles only once (static shapes)."""
  return chex.assert_max_traces(fn, n=max_traces) if max_traces else fn


def client_event(algo, augment=None):
  """The unjitted body of one client event (jitted by `make_client_runner`, vmapped over seeds
  by `gas_jax.runners.seeds`).

  (client_state, buffer, server_params, data, event, rng) -> (client_state, buffer, metrics).
  `data` holds the device-resident train set (x, y) and the per-client log-priors; the event
  gathers its minibatch by index (`augment.train_batch`, shared by every method), so only
  indices cross the host-device boundary. With BatchNorm in the server part (REF), metrics
  hold "server": phi with the running statistics this step's forward updated.
  """

  def run(cstate, buffer, server_params, data, ev, rng):
    batch = dict(ev)
    batch["x"], batch["y"] = augment_lib.train_batch(data, ev["idx"], rng, ev["event_id"],
                                                     augment)
    batch["log_prior"] = data["log_prior"][ev["client"]]
    batch["server"] = server_params
    cstate, out = algo.client_step(cstate, batch, jax.random.fold_in(rng, ev["event_id"]))
    return cstate, _write(buffer, ev["buf_pos"], out.pop("act"), batch["y"], ev), out

  return run


def _write(buffer, pos, act, y, ev, mode=None):
  """Client step(s) -> activation buffer position(s) `pos`: activation, labels, mask, tag (and
  the tag's reference shift with relative tags, `weighting`)."""
  new = dict(acts=buffer.acts.at[pos].set(act, mode=mode),
             labels=buffer.labels.at[pos].set(y, mode=mode),
             row_mask=buffer.row_mask.at[pos].set(ev["mask"], mode=mode),
             tags=buffer.tags.at[pos].set(ev["tag"], mode=mode))
  if buffer.tag_shift is not None:
    new["tag_shift"] = buffer.tag_shift.at[pos].set(ev["tag_shift"], mode=mode)
  return buffer.replace(**new)


def make_client_runner(algo, max_traces: Optional[int] = None, augment=None):
  """jit(client_event): one event per call, writing its activation into the buffer.

  Events run one jitted call each from a host loop: XLA's CPU backend runs convolutions inside
  `while`/`conditional` ops (lax.scan, lax.cond) about 15x slower than at the top level of a
  program (measured: 10 cnn_small steps 750 ms scanned vs 50 ms as separate calls).
  """
  return jax.jit(_maybe_count_traces(client_event(algo, augment), max_traces),
                 donate_argnums=(0, 1))


def cohort_event(algo, mesh=None, augment=None):
  """The unjitted body of a cohort: cohort_step over a padded cohort [L] of independent events
  (jitted by `make_cohort_runner`, vmapped over seeds by `gas_jax.runners.seeds_runner`).

  With a `mesh` (axis "clients"), the cohort axis of the inputs is sharded across its devices
  and everything else (parameters, buffers) is replicated; XLA partitions the vmapped work.
  """

  def run(cstate, buffer, server_params, data, ev, rng):
    with layers.conv_scope(layers.cohort_conv_impl()):
      return body(cstate, buffer, server_params, data, ev, rng)

  def body(cstate, buffer, server_params, data, ev, rng):
    batch = dict(ev)
    batch["x"], batch["y"] = jax.vmap(
        lambda i, n: augment_lib.train_batch(data, i, rng, n, augment))(ev["idx"], ev["event_id"])
    batch["log_prior"] = data["log_prior"][ev["client"]]
    if mesh is not None:
      shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("clients"))
      batch = jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, shard),
                                     batch)
    batch["server"] = server_params
    cstate, out = algo.cohort_step(cstate, batch, rng)
    c = buffer.tags.shape[0]
    pos = jnp.where(ev["valid"], ev["buf_pos"], c)      # padding events are dropped
    buffer = _write(buffer, pos, out.pop("act"), batch["y"], ev, mode="drop")
    if mesh is not None:    # results replicated: every process can read them (multi-host)
      rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      cstate, buffer, out = jax.tree_util.tree_map(
          lambda a: jax.lax.with_sharding_constraint(a, rep), (cstate, buffer, out))
    return cstate, buffer, out

  return run


def make_cohort_runner(algo, mesh=None, max_traces: Optional[int] = None, augment=None):
  """jit(cohort_event)."""
  return jax.jit(_maybe_count_traces(cohort_event(algo, mesh, augment), max_traces),
                 donate_argnums=(0, 1))


def event_arrays(ev, idx, mask, tag, agg_weight: float, event_id: int) -> Dict:
  """One scheduler event as the dict of arrays the client runner takes. tag: the weight tag, or
  (tag, shift) from `weighting.tag`."""
  tag, shift = tag if isinstance(tag, tuple) else (tag, 0.0)
  return dict(event_id=np.int32(event_id), client=np.int32(ev.client), slot=np.int32(ev.slot),
              idx=np.asarray(idx, np.int32), mask=np.asarray(mask, bool),
              tag=np.float32(tag), tag_shift=np.float32(shift), buf_pos=np.int32(ev.buf_pos),
              upload=np.bool_(ev.upload),
              aggregate=np.bool_(ev.aggregate), agg_weight=np.float32(agg_weight))


def server_event(algo):
  """The unjitted server update: (server_state, buffer, global_iter, rng, gen_rows=None,
  room_made=False) -> (state, metrics); gen_rows (static) packs the generated activations
  (`gas.plan_server_update`), room_made (static): the statistics' compressions ran beforehand."""

  def run(sstate, buffer, global_iter, rng, gen_rows=None, room_made=False):
    batch = dict(buffer=buffer, global_iter=global_iter)
    if gen_rows is not None:
      batch["gen_rows"] = gen_rows
    if room_made:
      batch["room_made"] = True
    return algo.server_step(sstate, batch, rng)

  return run


def padding_events(batch_size: int, length: int) -> Dict:
  """A cohort of `length` padding events (valid all False): running it changes no state, so
  it compiles that cohort size ahead of time (`GasRunner.precompile`)."""
  one = dict(event_id=np.int32(0), client=np.int32(0), slot=np.int32(0),
             idx=np.zeros(batch_size, np.int32), mask=np.zeros(batch_size, bool),
             tag=np.float32(0), tag_shift=np.float32(0), buf_pos=np.int32(0),
             upload=np.bool_(False),
             aggregate=np.bool_(False), agg_weight=np.float32(0))
  out = stack_events([one], length)
  out["valid"][:] = False
  return out


def make_server_runner(algo, max_traces: Optional[int] = None):
  """jit(server_event)."""
  return jax.jit(_maybe_count_traces(server_event(algo), max_traces), donate_argnums=(0,),
                 static_argnames=("gen_rows", "room_made"))


def make_compress_runner(algo):
  """jit(algo.compress), the server state donated (the factor is updated in place)."""
  return jax.jit(algo.compress, donate_argnums=(0,))
