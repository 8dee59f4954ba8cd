"""Clients that come and go (issue #29; rules: docs/scenarios.md): the one shared piece through
which every method (GAS, its ablation, the FL and SFL baselines) learns which clients are online,
how fast they are, and whether a dispatched client's work is lost.

- Speeds (`system.speed`): "uniform" (REF, spec §1.9: U(compute_min, compute_max)), "lognormal"
  (median sqrt(compute_min * compute_max), log-sd `system.sigma`) or "fixed" (every client the
  mean of the range). `system.redraw_s = R`: every client's speed is redrawn every R simulated
  seconds (period p >= 1 from its own stream); a duration takes the speeds of the period in which
  it starts (`tm_at`).
- Availability (`system.availability`): "always" (REF), "markov" (per client an on/off process
  with exponential online / offline durations, means `system.mean_online_s` /
  `system.mean_offline_s`, started in its stationary state) or "trace" (online intervals
  [start, end) read from `system.trace`, `read_trace`; after its last interval a client stays
  offline).
- Dropout (`system.dropout = p`): each dispatch of client k fails with probability p at a
  uniformly drawn point of its local work. The n-th dispatch of client k draws from
  SeedSequence([seed, DROP_STREAM, k, n]), so every method sees the same failures per client.

`dispatch(k, t, duration)` returns the time at which the work started at t is cut (the client
goes offline or drops out), inf if never; the callers (schedulers, clocks) compare it with their
own arrival times. Everything derives from the run seed; the Markov intervals are regenerated
identically on resume (each client's own stream, extended in order), so the state is only the
per-client dispatch counts and the counters (`state_dict`).
"""
import bisect
import csv
import dataclasses
import json
import math
import os
from typing import Dict, List, Tuple

import numpy as np

from gas_jax.errors import ConfigError, RunError
from gas_jax.system.timing import TimeModel

SPEED_STREAM = 0x5BEED
AVAIL_STREAM = 0xA7A1
DROP_STREAM = 0xD809
INF = math.inf


def draw_speeds(kind: str, sigma: float, compute_range, n: int,
                rng: np.random.Generator) -> np.ndarray:
  """Compute speeds (FLOP/s) of n clients for `system.speed` = kind."""
  lo, hi = compute_range
  if kind == "uniform":
    return rng.uniform(lo, hi, size=n)
  if kind == "lognormal":
    return math.sqrt(lo * hi) * np.exp(sigma * rng.standard_normal(n))
  return np.full(n, 0.5 * (lo + hi))


def speed_rng(seed: int, period: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, SPEED_STREAM, period]))


def apply_speed(config, profiles):
  """The profiles of `timing.draw_profiles` with `system.speed`'s compute speeds (uniform: the
  REF draw, unchanged)."""
  sysc = config.system
  if sysc.speed == "uniform":
    return profiles
  compute = draw_speeds(sysc.speed, float(sysc.sigma),
                        (config.time.compute_min, config.time.compute_max),
                        len(profiles.compute), speed_rng(config.seed, 0))
  return dataclasses.replace(profiles, compute=compute)


def read_trace(path: str, num_clients: int) -> List[List[Tuple[float, float]]]:
  """Per-client sorted online intervals [start, end) from a JSON or CSV trace (format:
  docs/scenarios.md). Raises a one-line ConfigError naming the file (and line) on bad input."""
  def bad(where, why):
    raise ConfigError(f"system.trace={path!r} is invalid: {where}{why}")
  if not path or not os.path.isfile(path):
    bad("", "no such file (give a JSON or CSV trace, docs/scenarios.md)")
  with open(path) as f:
    text = f.read()
  if not text.strip():
    bad("", "the file is empty")
  rows = []   # (where, client, start, end)
  if path.endswith(".json"):
    try:
      data = json.loads(text)
    except ValueError as e:
      bad(f"line {e.lineno}: " if hasattr(e, "lineno") else "", f"not JSON ({e.msg})"
          if hasattr(e, "msg") else "not JSON")
    clients = data.get("clients") if isinstance(data, dict) else None
    if not isinstance(clients, dict):
      bad("", 'expected {"clients": {"<client>": [[start, end], ...], ...}}')
    for key, ivs in clients.items():
      if not isinstance(ivs, list):
        bad(f"client {key!r}: ", "expected a list of [start, end] pairs")
      for i, iv in enumerate(ivs):
        if not (isinstance(iv, list) and len(iv) == 2):
          bad(f"client {key!r} interval {i}: ", "expected [start, end]")
        rows.append((f"client {key!r} interval {i}: ", key, iv[0], iv[1]))
  else:
    lines = text.splitlines()
    if [c.strip() for c in lines[0].split(",")] != ["client", "start", "end"]:
      bad("line 1: ", "the header must be client,start,end")
    for n, rec in enumerate(csv.reader(lines[1:]), start=2):
      if not rec or not "".join(rec).strip():
        continue
      if len(rec) != 3:
        bad(f"line {n}: ", "expected client,start,end")
      rows.append((f"line {n}: ", rec[0].strip(), rec[1], rec[2]))
  out = [[] for _ in range(num_clients)]
  for where, key, start, end in rows:
    try:
      k = int(key)
      start, end = float(start), float(end)
    except (TypeError, ValueError):
      bad(where, f"client {key!r}, start {start!r}, end {end!r} must be numbers")
    if str(k) != str(key).strip() or not 0 <= k < num_clients:
      bad(where, f"unknown client {key!r} (clients are 0..{num_clients - 1}, clients.num)")
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
      bad(where, f"interval [{start:g}, {end:g}) must have 0 <= start < end (finite)")
    out[k].append((start, end, where))
  for k, ivs in enumerate(out):
    ivs.sort()
    for (s0, e0, _), (s1, _, where) in zip(ivs, ivs[1:]):
      if s1 < e0:
        bad(where, f"client {k}'s interval starting at {s1:g} overlaps [{s0:g}, {e0:g})")
    out[k] = [(s, e) for s, e, _ in ivs]
  if not any(out):
    bad("", "no client is ever available (no online interval)")
  return out


class ClientSystem:
  """Speeds, availability and dropout of one seed's clients (module docstring)."""

  def __init__(self, time_model: TimeModel, num_clients: int, seed: int, speed="uniform",
               sigma=1.0, compute_range=(1e9, 1e10), redraw_s=None, availability="always",
               mean_online_s=1.0, mean_offline_s=1.0, intervals=None, dropout=0.0,
               round_deadline_s=None):
    self.tm, self.K, self.seed = time_model, num_clients, seed
    self.speed, self.sigma, self.compute_range = speed, float(sigma), compute_range
    self.redraw_s = None if redraw_s is None else float(redraw_s)
    self.availability = availability
    self.mean_on, self.mean_off = float(mean_online_s), float(mean_offline_s)
    self.dropout = float(dropout)
    self.deadline = None if round_deadline_s is None else float(round_deadline_s)
    self._tms: Dict[int, TimeModel] = {0: time_model}
    self._starts = [[] for _ in range(num_clients)]
    self._ends = [[] for _ in range(num_clients)]
    if availability == "trace":
      for k, ivs in enumerate(intervals):
        self._starts[k] = [s for s, _ in ivs]
        self._ends[k] = [e for _, e in ivs]
    elif availability == "markov":
      self._gen = [np.random.default_rng(np.random.SeedSequence([seed, AVAIL_STREAM, k]))
                   for k in range(num_clients)]
      pi = self.mean_on / (self.mean_on + self.mean_off)
      self._next_on = [bool(g.random() < pi) for g in self._gen]
      self._horizon = [0.0] * num_clients
    self.dispatches = np.zeros(num_clients, np.int64)   # per client: its dispatch count
    self.totals = dict(clients_dispatched=0, updates_lost=0)
    self.row = dict(clients_dispatched=0, updates_lost=0)

  @property
  def always(self) -> bool:
    return self.availability == "always"

  # --- speeds ---
  def tm_at(self, t: float) -> TimeModel:
    """The time model whose speeds hold at simulated time t (`system.redraw_s` periods)."""
    if self.redraw_s is None:
      return self.tm
    p = int(t // self.redraw_s)
    if p not in self._tms:
      if len(self._tms) > 64:
        self._tms = {0: self.tm}
      compute = draw_speeds(self.speed, self.sigma, self.compute_range, self.K,
                            speed_rng(self.seed, p))
      self._tms[p] = dataclasses.replace(
          self.tm, profiles=dataclasses.replace(self.tm.profiles, compute=compute))
    return self._tms[p]

  # --- availability ---
  def _extend(self, k: int, t: float) -> None:
    """Markov: generates client k's intervals past time t (its own stream, in order)."""
    g = self._gen[k]
    while self._horizon[k] <= t:
      h = self._horizon[k]
      if self._next_on[k]:
        d = g.exponential(self.mean_on)
        self._starts[k].append(h)
        self._ends[k].append(h + d)
      else:
        d = g.exponential(self.mean_off)
      self._horizon[k] = h + d
      self._next_on[k] = not self._next_on[k]

  def _interval(self, k: int, t: float) -> int:
    if self.availability == "markov":
      self._extend(k, t)
    return bisect.bisect_right(self._starts[k], t) - 1

  def online(self, k: int, t: float) -> bool:
    if self.always:
      return True
    i = self._interval(k, t)
    return i >= 0 and t < self._ends[k][i]

  def online_clients(self, t: float) -> np.ndarray:
    if self.always:
      return np.arange(self.K)
    return np.array([k for k in range(self.K) if self.online(k, t)], np.int64)

  def next_online(self, k: int, t: float) -> float:
    """The earliest time >= t at which client k is online (inf: never again)."""
    if self.online(k, t):
      return t
    i = self._interval(k, t) + 1
    if self.availability == "markov":
      while i >= len(self._starts[k]):
        self._extend(k, self._horizon[k])
    return self._starts[k][i] if i < len(self._starts[k]) else INF

  def next_online_any(self, t: float, candidates) -> float:
    return min((self.next_online(int(k), t) for k in candidates), default=INF)

  def offline_at(self, k: int, t: float) -> float:
    """When client k, online at t, goes offline (inf: never)."""
    if self.always:
      return INF
    return self._ends[k][self._interval(k, t)]

  # --- dispatch and loss ---
  def dispatch(self, k: int, t: float, duration: float) -> float:
    """Client k starts work of `duration` s at t: the time the work is cut (offline or
    dropout), inf if never. Counts the dispatch."""
    k = int(k)
    self.row["clients_dispatched"] += 1
    self.totals["clients_dispatched"] += 1
    cut = self.offline_at(k, t)
    if self.dropout > 0:
      g = np.random.default_rng(np.random.SeedSequence(
          [self.seed, DROP_STREAM, k, int(self.dispatches[k])]))
      if g.random() < self.dropout:
        cut = min(cut, t + g.random() * duration)
    self.dispatches[k] += 1
    return cut

  def lost(self, n: int = 1) -> None:
    self.row["updates_lost"] += n
    self.totals["updates_lost"] += n

  def sync_round(self, t_start: float, ends: np.ndarray, cuts: np.ndarray):
    """A synchronous round from t_start (docs/scenarios.md): client i's model arrives at
    ends[i] unless its work is cut first (cuts[i] < ends[i]) or it arrives after the deadline
    t_start + round_deadline_s. Returns (round end, returned mask); counts the lost ones. The
    round ends when every client has returned or been cut, or at the deadline."""
    returned = ends <= cuts
    t_end = float(np.max(np.where(returned, ends, cuts)))
    if self.deadline is not None:
      limit = t_start + self.deadline
      returned &= ends <= limit
      t_end = min(t_end, limit)
    self.lost(int(np.sum(~returned)))
    return t_end, returned

  def select(self, rng: np.random.Generator, t: float, count: int, what: str):
    """A synchronous round's clients: `count` drawn uniformly from the clients online at the
    first time >= t that any is. Returns (round start, selected ids)."""
    if self.always:
      return t, rng.choice(self.K, count, replace=False)
    t = self.next_online_any(t, range(self.K))
    if t == INF:
      stop(what)
    online = self.online_clients(t)
    return t, rng.choice(online, min(count, len(online)), replace=False)

  def take_row(self, t: float) -> dict:
    """This row's counters (clients online at t, dispatched, lost), then reset."""
    out = dict(clients_online=int(len(self.online_clients(t))), **self.row)
    self.row = dict(clients_dispatched=0, updates_lost=0)
    return out

  def state_dict(self) -> dict:
    """Flat entries (prefixed "system_") to merge into the owner's state dict."""
    return dict(system_dispatches=self.dispatches.copy(),
                **{f"system_{k}": int(v) for k, v in self.totals.items()},
                **{f"system_row_{k}": int(v) for k, v in self.row.items()})

  def load_state_dict(self, d: dict) -> None:
    """From the owner's state dict; without the entries (a checkpoint from before issue #29:
    the default scenario) nothing changes."""
    if "system_dispatches" not in d:
      return
    self.dispatches = np.array(d["system_dispatches"], np.int64)
    self.totals = {k: int(d[f"system_{k}"]) for k in self.totals}
    self.row = {k: int(d[f"system_row_{k}"]) for k in self.row}


def stop(what: str):
  raise RunError(f"no client can ever come online again ({what}): the run stops here; "
                 "the trace (system.trace) has no later online interval")


def from_config(config, time_model: TimeModel) -> ClientSystem:
  """The ClientSystem of `config.system` (defaults when the config has no such section)."""
  s = config.get("system")
  if s is None:
    return ClientSystem(time_model, config.clients.num, config.seed)
  intervals = (read_trace(s.trace, config.clients.num) if s.availability == "trace" else None)
  return ClientSystem(
      time_model, config.clients.num, config.seed, speed=s.speed, sigma=s.sigma,
      compute_range=(config.time.compute_min, config.time.compute_max), redraw_s=s.redraw_s,
      availability=s.availability, mean_online_s=s.mean_online_s,
      mean_offline_s=s.mean_offline_s, intervals=intervals, dropout=s.dropout,
      round_deadline_s=s.round_deadline_s)


def is_default(config) -> bool:
  """Whether `config.system` is the default scenario (REF: every client always there)."""
  s = config.get("system")
  return s is None or (s.speed == "uniform" and s.redraw_s is None and s.availability == "always"
                       and s.dropout == 0 and s.round_deadline_s is None)


def of(ctx) -> ClientSystem:
  """The run context's ClientSystem (built from its config if a caller made the context
  without one)."""
  if getattr(ctx, "system", None) is None:
    ctx.system = from_config(ctx.config, ctx.time_model)
  return ctx.system
