"""Host-side replay of GAS's asynchronous arrival order (spec §1.2-1.4).

The order in which clients act depends only on the simulated clock (compute speeds, uplink rates,
FLOPs and bits per split) and on the replacement draws, never on the training itself, so the host
computes it ahead and the device just executes the resulting events. One event = one client local
step: the client with the smallest clock acts (ties -> earlier slot), its activation goes to
activation-buffer position `buf_pos`; when the buffer holds Q_s minibatches the server updates; a
client that finished E steps uploads its model into the model buffer, which is aggregated when
it holds Q_c models, and a uniformly drawn inactive client takes its slot at the departing
client's clock, starting from the newest aggregate. REF: Q_s = Q_c = C (spec §6.6); the paper
(Algorithm 1) sets them separately. Events also carry the staleness of uploaded models and
merged activations (`gas_jax.staleness`).

Clients that come and go (`availability.ClientSystem`, docs/scenarios.md): only online clients
are dispatched; a client whose work is cut (offline, dropout) loses the activations that had not
arrived and its model upload; its slot is refilled at the cut like a finished one. A slot with
no online client to take it waits for the first one; a refill that is not an upload event comes
as a `SlotReset` in the event list (the runner restarts the slot from the newest global model).
"""
import dataclasses
from typing import List, Tuple

import numpy as np
from absl import logging

from gas_jax.errors import RunError
from gas_jax.system import availability
from gas_jax.system.timing import TimeModel

INF = float("inf")


@dataclasses.dataclass(frozen=True)
class Event:
  client: int
  slot: int
  counter_tag: int     # REF weight tag: the client's weight counter wc_k (spec §1.6)
  progress: int        # paper's n = tE + e (spec §1.6): t = aggregations before the client's
                       # model was dispatched, e = 1..E its local step
  buf_pos: int         # position in the activation buffer
  server_update: bool  # the buffer is full after this step -> server update
  upload: bool         # the client's E-th step -> model upload and replacement
  aggregate: bool      # the model buffer is full after this upload -> new global model
  time: float          # the client's clock when this step's backward ended
  iteration_time: float = 0.0   # for aggregate events: max upload time of the flushed models
  max_progress: int = 0        # largest progress of any step so far, this one included
  prev_max_progress: int = 0   # the same before this step (relative weight tags, `weighting`)
  # Staleness (`gas_jax.staleness`): upload events: global versions between the client's model
  # dispatch and the aggregation that includes this upload (-1 on other events); server-update
  # events: per activation minibatch merged by this update (buffer order), the server updates
  # between its client model's dispatch and this update.
  model_staleness: int = -1
  merged_activation_staleness: Tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class SlotReset:
  """Not a client step: `slot` restarts from the newest global model for `client`, dispatched
  at `time` after a loss or a wait (the upload event does this otherwise)."""
  client: int
  slot: int
  time: float
  server_update: bool = False
  upload: bool = False
  aggregate: bool = False


class GasScheduler:
  """Simulated clocks, active set, replacement and weight counters of REF's GAS loop."""

  def __init__(self, time_model: TimeModel, num_clients: int, participating: int,
               local_iters: int, seed: int, activation_buffer: int = 0, model_buffer: int = 0,
               system: availability.ClientSystem = None):
    self.tm = time_model
    self.sys = system or availability.ClientSystem(time_model, num_clients, seed)
    self.K, self.C, self.E = num_clients, participating, local_iters
    self.Q_s = activation_buffer or participating    # minibatches per server update
    self.Q_c = model_buffer or participating         # models per aggregation
    self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C4E]))
    online = self.sys.online_clients(0.0)
    first = self.rng.permutation(self.K if self.sys.always else online)[: self.C]
    self.active = np.full(self.C, -1, np.int64)     # -1: an empty slot, waiting
    self.active[:len(first)] = first
    self.wait = np.full(self.C, INF)                 # an empty slot's next refill try
    self.tau = np.zeros(self.K)
    self.cut = np.full(self.K, INF)                  # when the client's current work is cut
    self.wc = np.ones(self.K, np.int64)
    self.count = np.zeros(self.K, np.int64)
    self.joined = np.zeros(self.K, np.int64)   # t of each client's starting model (paper's n)
    self.dispatch_updates = np.zeros(self.K, np.int64)  # U when each client's model was dispatched
    self.pending: List[int] = []   # activation staleness of the minibatches in the buffer
    self.max_progress = 0
    self.total_weight = 1        # REF "total_weight_count" (TW)
    self.server_updates = 0      # U
    self.q_s = 0
    self.q_c = 0
    self.global_iters = 0
    self.round_times: List[float] = []
    for s in range(self.C):
      if self.active[s] >= 0:
        self._start(int(self.active[s]), 0.0)
      else:
        self._wait(s, 0.0)

  def _start(self, j: int, t: float) -> None:
    """Client j starts its E steps at t: first activation arrival, cut time."""
    tm = self.sys.tm_at(t)
    self.tau[j] = t + tm.compute(j) + tm.upload_activation(j)
    work = self.E * (2 * tm.compute(j) + tm.upload_activation(j)) + tm.upload_model(j)
    self.cut[j] = self.sys.dispatch(j, t, work)

  def _wait(self, s: int, t: float) -> None:
    """Slot s is empty from t: it tries again when a client outside the slots is online."""
    self.active[s] = -1
    outside = np.setdiff1d(np.arange(self.K), self.active)
    for e in np.flatnonzero((self.active < 0) & ((self.wait == INF) | (np.arange(self.C) == s))):
      self.wait[e] = self.sys.next_online_any(t, outside)

  def _refill(self, s: int, t: float) -> bool:
    """A uniformly drawn online client outside the slots takes slot s at t (REF's replacement);
    False if there is none (the slot waits)."""
    inactive = np.setdiff1d(self.sys.online_clients(t), self.active)
    if not len(inactive):
      self._wait(s, t)
      return False
    j = int(self.rng.choice(inactive))
    self.active[s] = j
    self.wc[j] = self.total_weight
    self.joined[j] = self.global_iters
    self.dispatch_updates[j] = self.server_updates
    self.count[j] = 0
    self.wait[s] = INF
    self._start(j, t)
    return True

  def next_event(self):
    """The next client step (`Event`), or a `SlotReset` where a slot is refilled apart from an
    upload. Lost work is skipped (counted in the `ClientSystem`)."""
    while True:
      act = self.active
      when = np.where(act >= 0, np.minimum(self.tau[act], self.cut[act]), self.wait)
      s = int(np.argmin(when))
      k = int(act[s])
      if when[s] == INF:
        availability.stop(f"GAS at iteration {self.global_iters}")
      if k < 0:                                      # an empty slot's refill try
        t = float(self.wait[s])
        if self._refill(s, t):
          return SlotReset(client=int(self.active[s]), slot=s, time=t)
        continue
      if self.cut[k] < self.tau[k]:                 # cut before its next arrival: lost
        t = float(self.cut[k])
        self.sys.lost()              # k, still in the slot, is no candidate for its refill
        if self._refill(s, t):
          return SlotReset(client=int(self.active[s]), slot=s, time=t)
        continue
      return self._step(s, k)

  def _step(self, s: int, k: int) -> Event:
    tag = int(self.wc[k])
    self.wc[k] += 1
    progress = int(self.joined[k] * self.E + self.count[k] + 1)
    prev_max = self.max_progress
    self.max_progress = max(prev_max, progress)
    buf_pos = self.q_s
    self.q_s += 1
    tm = self.sys.tm_at(self.tau[k])
    self.tau[k] += tm.compute(k)          # backward
    # merged by update U + 1: U - U_dispatch updates lie between its dispatch and its merge
    self.pending.append(int(self.server_updates - self.dispatch_updates[k]))
    server_update = self.q_s == self.Q_s
    merged = ()
    if server_update:
      self.server_updates += 1
      self.q_s = 0
      merged, self.pending = tuple(self.pending), []
    self.count[k] += 1
    upload = bool(self.count[k] == self.E)
    aggregate, iteration_time, model_staleness = False, 0.0, -1
    time = float(self.tau[k])
    if upload and self.tau[k] + tm.upload_model(k) > self.cut[k]:
      upload = False                 # the model upload is cut: the slot waits for the cut
      self.count[k] = 0
      self.tau[k] = INF
    elif upload:
      model_staleness = int(self.global_iters - self.joined[k])   # aggregated at version t+1
      self.count[k] = 0
      self.q_c += 1
      self.tau[k] += tm.upload_model(k)
      self.round_times.append(float(self.tau[k]))
      if self.q_c == self.Q_c:
        self.total_weight += self.server_updates
        self.q_c = 0
        self.global_iters += 1
        aggregate, iteration_time = True, max(self.round_times)
        self.round_times = []
      self._refill(s, float(self.tau[k]))
    else:
      self.tau[k] += tm.compute(k) + tm.upload_activation(k)
    return Event(client=k, slot=s, counter_tag=tag, progress=progress, buf_pos=buf_pos,
                 server_update=server_update, upload=upload, aggregate=aggregate,
                 time=time, iteration_time=iteration_time, max_progress=self.max_progress,
                 prev_max_progress=prev_max, model_staleness=model_staleness,
                 merged_activation_staleness=merged)

  def next_iteration(self) -> List[Event]:
    """Events up to and including the next aggregation (one global iteration), with the
    `SlotReset`s between them."""
    events = []
    while True:
      ev = self.next_event()
      events.append(ev)
      if ev.aggregate:
        return events

  def state_dict(self) -> dict:
    return dict(rng=self.rng.bit_generator.state, active=self.active.copy(),
                tau=self.tau.copy(), wc=self.wc.copy(), count=self.count.copy(),
                joined=self.joined.copy(), max_progress=self.max_progress,
                total_weight=self.total_weight, server_updates=self.server_updates,
                q_s=self.q_s, q_c=self.q_c, global_iters=self.global_iters,
                round_times=list(self.round_times), wait=self.wait.copy(), cut=self.cut.copy(),
                dispatch_updates=self.dispatch_updates.copy(), pending=list(self.pending),
                **self.sys.state_dict())

  def load_state_dict(self, d: dict) -> None:
    if "joined" not in d:
      raise RunError("this checkpoint was written by an older gas-jax (before the paper's weight "
                       "tag progress n = tE + e was tracked); it cannot be resumed by this version: "
                       "start the run in a new workdir")
    self.rng.bit_generator.state = d["rng"]
    for name in ("active", "tau", "wc", "count", "joined"):
      setattr(self, name, np.array(d[name]))
    for name in ("total_weight", "server_updates", "q_s", "q_c", "global_iters", "max_progress"):
      setattr(self, name, int(d[name]))
    self.round_times = [float(x) for x in d["round_times"]]
    if "dispatch_updates" in d:
      self.dispatch_updates = np.array(d["dispatch_updates"], np.int64)
      self.pending = [int(x) for x in d["pending"]]
    else:   # a checkpoint from before the staleness columns: those are approximate from here
      logging.warning("checkpoint without the activation-staleness state (older gas-jax): "
                      "activation_staleness_* are approximate for the in-flight clients")
      self.dispatch_updates = np.zeros(self.K, np.int64)
      self.pending = [0] * self.q_s
    if "cut" in d:     # else a checkpoint from before issue #29: the default scenario
      self.wait, self.cut = np.array(d["wait"], np.float64), np.array(d["cut"], np.float64)
    self.sys.load_state_dict(d)
