"""FedBuff's / CA2FL's event-driven dispatch clock (spec §2.2; `runners.fl_runner`), with clients
that come and go (`availability.ClientSystem`, docs/scenarios.md)."""
import numpy as np

from gas_jax.system import availability


class AsyncClock:
  """FedBuff / CA2FL dispatch clocks (spec §2.2): active slots, arrival times, replacements.

  Clients that come and go (`availability.ClientSystem`, docs/scenarios.md): only online
  clients are dispatched; a dispatched client whose work is cut (offline, dropout) never
  arrives: at the cut its slot is refilled like an arrived one ("lost"); a slot with no online
  client to take it stays empty until one comes online ("dispatched")."""

  def __init__(self, tm, num_clients: int, participating: int, local_iters: int,
               rng: np.random.Generator, system: availability.ClientSystem = None):
    self.tm, self.K, self.E, self.rng = tm, num_clients, local_iters, rng
    self.sys = system or availability.ClientSystem(tm, num_clients, 0)
    online = self.sys.online_clients(0.0)
    first = rng.choice(num_clients if self.sys.always else online,
                       min(participating, len(online)), replace=False)
    self.active = np.full(participating, -1, np.int64)    # -1: an empty slot
    self.active[:len(first)] = first
    self.tau = np.zeros(num_clients)
    self.cut = np.full(num_clients, np.inf)
    self.wait = np.full(participating, np.inf)
    self.t_now = 0.0
    for s, k in enumerate(self.active):
      if k >= 0:
        self._start(int(k))
      else:
        self._wait(s)

  def duration(self, k) -> float:
    tm = self.sys.tm_at(self.t_now)
    return tm.local_training_full(k, self.E) + tm.upload_full_model(k)

  def _start(self, k: int) -> None:
    d = self.duration(k)
    self.tau[k] = self.t_now + d
    self.cut[k] = self.sys.dispatch(k, self.t_now, d)

  def _wait(self, slot: int) -> None:
    self.active[slot] = -1
    self.wait[slot] = self.sys.next_online_any(
        self.t_now, np.setdiff1d(np.arange(self.K), self.active))

  def next(self):
    """(kind, slot, client) of the earliest thing, advancing t_now to it: "arrive" (the update
    arrives), "lost" (the work was cut; call `replace(slot)`), "dispatched" (an empty slot got
    a client)."""
    while True:
      act = self.active
      when = np.where(act >= 0, np.minimum(self.tau[act], self.cut[act]), self.wait)
      s = int(np.argmin(when))
      if when[s] == np.inf:
        availability.stop(f"asynchronous FL at simulated time {self.t_now:g} s")
      self.t_now = float(when[s])
      k = int(act[s])
      if k < 0:
        if self.replace(s) >= 0:
          return "dispatched", s, int(self.active[s])
        continue
      if self.cut[k] < self.tau[k]:
        self.sys.lost()
        return "lost", s, k
      return "arrive", s, k

  def next_arrival(self):
    """(slot, client) of the earliest arrival; advances t_now to it (losses refilled)."""
    while True:
      kind, s, k = self.next()
      if kind == "arrive":
        return s, k
      if kind == "lost":
        self.replace(s)

  def replace(self, slot: int) -> int:
    """A uniformly drawn online inactive client takes `slot`, dispatched at t_now; -1 if there
    is none (the slot waits)."""
    inactive = np.setdiff1d(self.sys.online_clients(self.t_now), self.active)
    if not len(inactive):
      self._wait(slot)
      return -1
    j = int(self.rng.choice(inactive))
    self.active[slot] = j
    self.wait[slot] = np.inf
    self._start(j)
    return j

  def state_dict(self) -> dict:
    return dict(rng=self.rng.bit_generator.state, active=self.active.copy(), tau=self.tau.copy(),
                t_now=self.t_now, cut=self.cut.copy(), wait=self.wait.copy(),
                **self.sys.state_dict())

  def load_state_dict(self, d: dict) -> None:
    self.rng.bit_generator.state = d["rng"]
    self.active, self.tau = np.array(d["active"]), np.array(d["tau"])
    self.t_now = float(d["t_now"])
    if "cut" in d:      # else a checkpoint from before issue #29: the default scenario
      self.cut, self.wait = np.array(d["cut"]), np.array(d["wait"])
    self.sys.load_state_dict(d)
