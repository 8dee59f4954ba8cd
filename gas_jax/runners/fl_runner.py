"""Host loops of the FL baselines "fedavg", "fedbuff", "ca2fl" (spec §2.0-2.3).

Each local SGD step is one jitted call (minibatch gathered on the device by index). Clocks:
- FedAvg (synchronous): every selected client starts at t_now; the round ends at
  t_now + max_k (E * 2 F_full / c_k + Mbits_full / r_k).
- FedBuff / CA2FL (event driven, `AsyncClock`): a client dispatched at t_now arrives at
  t_now + E * 2 F_full / c + Mbits_full / r; the earliest arrival (ties -> earlier slot) runs its E
  local steps at that moment; after C arrivals the buffer flushes (one global iteration, logged at
  that arrival's time); the arrived client's slot goes to a uniformly drawn inactive client,
  dispatched at t_now with the newest global model.
Client selection draws come from one numpy stream per seed, shared by all baselines.
REF CA2FL aliasing: every client dispatched after the initial C trains from the *live* global at
its arrival (`ca2fl.true_staleness=True` gives it its genuine stale copy instead).
"""
import functools
from typing import Any

import jax
import numpy as np
from flax import struct

from gas_jax import staleness
from gas_jax.algorithms import fl
from gas_jax.data import augment as augment_lib
from gas_jax.context import RunContext
from gas_jax.evaluation import finite_check
from gas_jax.registry import ALGORITHMS
from gas_jax.runners.calls import FLCalls
from gas_jax.system import availability
from gas_jax.system.clocks import AsyncClock  # noqa: F401  (fl_runner.AsyncClock, launch/ref_check)

SELECT_STREAM = 0x5E1EC7   # numpy stream id of the baselines' client selection
STEP_STREAM = 0xD0     # fold_in(key(seed), STEP_STREAM): the local steps' dropout keys


def selection_rng(seed: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, SELECT_STREAM]))


@functools.lru_cache(maxsize=16)
def compiled_step(model, hp: fl.FLHParams, augmenter=None, convs=("", "")):
  """(algorithm, jit(local step with on-device minibatch gather), jit(init_opt)), cached per
  (model, hparams, augmenter, convolutions) so runners built in one process share compilations
  (`convs`: the plan's convolution choices, traced into the step). The minibatch comes from
  `augment.train_batch`, as in every method."""
  algo = fl.build(model, hp)

  def step(params, opt, data, idx, mask, global_iter, key, aug_key, step_id):
    x, y = augment_lib.train_batch(data, idx, aug_key, step_id, augmenter)
    batch = dict(x=x, y=y, mask=mask, global_iter=global_iter)
    return algo.local_step(params, opt, batch, jax.random.fold_in(key, step_id))

  return algo, jax.jit(step), jax.jit(algo.init_opt)


@struct.dataclass
class FedAvgState:
  """FedAvg's device state: the global model and the (shared) client optimiser state."""
  glob: Any
  opt: Any


@struct.dataclass
class AsyncFLState:
  """FedBuff's / CA2FL's device state: also the C in-flight models and the buffer (FedBuff's
  sum of C uploads, or CA2FL's K cached updates)."""
  glob: Any
  opt: Any
  slots: Any     # list of C models: what each in-flight client started from
  acc: Any


class _FLBase:
  """Shared parts: the jitted local step, E-step local training, bookkeeping, state.

  `calls` is the public `FLCalls(step, init_opt)` record of the jitted functions the local
  training goes through (`gas_jax.runners.calls`): replace it to instrument them."""

  def __init__(self, ctx: RunContext):
    cfg = ctx.config
    self.ctx, self.cfg = ctx, cfg
    self.K, self.C, self.E = cfg.clients.num, cfg.clients.participating, cfg.clients.local_iters
    self.algo, step, init_opt = compiled_step(
        ctx.model, fl.hparams_from_config(cfg), augment_lib.from_config(cfg),
        (ctx.plan.conv_impl, ctx.plan.cohort_conv_impl))
    self.calls = FLCalls(step=step, init_opt=init_opt)
    self.aug_key = augment_lib.run_key(cfg.seed)
    glob, opt = self.algo.init(jax.random.fold_in(jax.random.key(cfg.seed), 0))
    self.state = FedAvgState(glob=glob, opt=opt)
    self.key = jax.random.fold_in(jax.random.key(cfg.seed), STEP_STREAM)  # dropout keys
    self.per_client = cfg.clients.momentum == "per_client"
    self.sizes = ctx.clients.sizes.astype(np.float64)
    self.rng = selection_rng(cfg.seed)
    self.system = availability.of(ctx)
    self.global_iters = self.client_steps = 0
    self.t_now = 0.0
    self._losses, self._finite = [], []

  def local_training(self, k: int, params):
    """Client k's E local SGD steps from `params` (shared or fresh momentum)."""
    opt = self.calls.init_opt(params) if self.per_client else self.state.opt
    it = np.int32(self.global_iters)
    for _ in range(self.E):
      idx, mask = self.ctx.clients.next_batch(k)
      params, opt, out = self.calls.step(params, opt, self.ctx.data, idx, mask, it, self.key,
                                         self.aug_key, np.int32(self.client_steps))
      self._losses.append(out["loss"])
      self._finite.append(out["grad_finite"])
      self.client_steps += 1
    self.state = self.state.replace(opt=opt)
    return params

  def _row(self, model_staleness) -> dict:
    """The row fields; `model_staleness`: per aggregated model (`gas_jax.staleness`)."""
    losses, fin = jax.device_get((self._losses, self._finite))
    self._losses, self._finite = [], []
    finite_check(self.global_iters, client_loss=np.array(losses), client_gradient=fin or [True])
    return dict(server_updates=self.global_iters, client_steps=self.client_steps,
                simulated_time_s=self.t_now,
                client_loss=float(np.mean(losses)) if losses else None,
                server_loss=None, generated_per_update=0.0, stats_fallbacks=0,
                **staleness.columns(model_staleness), **self.system.take_row(self.t_now))

  def eval_params(self):
    return self.state.glob

  def _host(self) -> dict:
    return dict(rng=self.rng.bit_generator.state, global_iters=self.global_iters,
                client_steps=self.client_steps, t_now=self.t_now,
                clients=self.ctx.clients.state_dict(), **self.system.state_dict())

  def _load_host(self, d: dict) -> None:
    self.rng.bit_generator.state = d["rng"]
    self.global_iters, self.client_steps = int(d["global_iters"]), int(d["client_steps"])
    self.t_now = float(d["t_now"])
    self.ctx.clients.load_state_dict(d["clients"])
    self.system.load_state_dict(d)


# Buffers and caches are donated (updated in place; CA2FL's caches hold K model-sized updates).
_FEDBUFF_REF_ADD = jax.jit(fl.fedbuff_ref_add, static_argnums=2, donate_argnums=0)
_FEDBUFF_PAPER_ADD = jax.jit(fl.fedbuff_paper_add, static_argnums=4, donate_argnums=0)
_FEDBUFF_PAPER_FLUSH = jax.jit(fl.fedbuff_paper_flush, static_argnums=2)
_CA2FL_ARRIVE = jax.jit(lambda st, k, start, end: fl.ca2fl_arrive(
    st, k, jax.tree_util.tree_map(lambda a, b: a - b, end, start)), donate_argnums=0)
_CA2FL_REF_FLUSH = jax.jit(fl.ca2fl_ref_flush, donate_argnums=1)
_CA2FL_PAPER_FLUSH = jax.jit(fl.ca2fl_paper_flush, donate_argnums=1)
FEDAVG_AGGREGATE = jax.jit(fl.fedavg_aggregate)


class FedAvgRunner(_FLBase):
  """FedAvg (spec §2.1): C clients per round, trained one after another, data-weighted average."""

  def __init__(self, ctx: RunContext):
    super().__init__(ctx)
    self._aggregate = FEDAVG_AGGREGATE

  def run_iteration(self) -> dict:
    """One round (docs/scenarios.md): online clients only; the clients that return are
    averaged; with none, the global model stays."""
    sys = self.system
    t0, selected = sys.select(self.rng, self.t_now, self.C, "FedAvg")
    tm = sys.tm_at(t0)
    ends = np.array([t0 + tm.local_training_full(k, self.E) + tm.upload_full_model(k)
                     for k in selected])
    cuts = np.array([sys.dispatch(k, t0, e - t0) for k, e in zip(selected, ends)])
    self.t_now, back = sys.sync_round(t0, ends, cuts)
    selected = selected[back]
    models = [self.local_training(int(k), self.state.glob) for k in selected]
    if len(models):
      self.state = self.state.replace(glob=self._aggregate(models, self.sizes[selected]))
    self.global_iters += 1
    return self._row(staleness.synchronous_model(len(selected)))

  def state_dict(self) -> dict:
    return dict(device=self.state, host=self._host())

  def load_state_dict(self, d: dict) -> None:
    self.state = d["device"]
    self._load_host(d["host"])


class AsyncFLRunner(_FLBase):
  """FedBuff and CA2FL (spec §2.2-2.3): event-driven arrivals, buffer of C, REF or paper rule."""

  def __init__(self, ctx: RunContext, method: str):
    super().__init__(ctx)
    cfg = ctx.config
    self.method = method
    self.rule = cfg[method].rule
    self.server_lr = float(cfg[method].server_lr)
    self.alias = method == "ca2fl" and not cfg.ca2fl.true_staleness
    self.clock = AsyncClock(ctx.time_model, self.K, self.C, self.E, self.rng, self.system)
    # In-flight models: the initial C slots hold w0 by value.
    glob = self.state.glob
    self.state = AsyncFLState(glob=glob, opt=self.state.opt, slots=[glob] * self.C,
                              acc=(fl.zeros_like(glob) if method == "fedbuff"
                                   else fl.ca2fl_init(glob, self.K)))
    self.live = np.zeros(self.C, bool)         # REF CA2FL aliasing: train from the live global
    self.dispatch_version = np.zeros(self.C, np.int64)
    self.count = 0
    self.staleness = cfg.fedbuff.staleness if method == "fedbuff" else "none"
    self.data_weights = self.sizes / self.sizes.sum()    # CA2FL REF: P_k over all K clients

  def arrive(self, s: int, k: int, start, end) -> None:
    """Client k (slot s) uploads; its update enters the buffer / the caches."""
    acc = self.state.acc
    if self.method == "ca2fl":
      acc = _CA2FL_ARRIVE(acc, np.int32(k), start, end)
    elif self.rule == "ref":
      acc = _FEDBUFF_REF_ADD(acc, end, self.C)
    else:
      tau = np.float32(self.global_iters - self.dispatch_version[s])
      acc = _FEDBUFF_PAPER_ADD(acc, start, end, tau, self.staleness)
    self.state = self.state.replace(acc=acc)

  def flush(self) -> None:
    glob, acc = self.state.glob, self.state.acc
    if self.method == "fedbuff":
      glob = (acc if self.rule == "ref" else
              _FEDBUFF_PAPER_FLUSH(glob, acc, self.C, np.float32(self.server_lr)))
      acc = fl.zeros_like(glob)
    elif self.rule == "ref":
      glob, acc = _CA2FL_REF_FLUSH(glob, acc, self.data_weights)
    else:
      glob, acc = _CA2FL_PAPER_FLUSH(glob, acc, np.float32(self.server_lr))
    self.state = self.state.replace(glob=glob, acc=acc)

  def model_staleness(self, s: int) -> int:
    """Global versions between the dispatch of the model slot s's client trains from and the
    flush that will include its update (the same until then: one flush per C arrivals); REF
    CA2FL's aliased slots train from the live global (spec §2.3): 0."""
    return 0 if self.live[s] else int(self.global_iters - self.dispatch_version[s])

  def run_iteration(self) -> dict:
    stale = []
    while True:
      kind, s, k = self.clock.next()
      self.t_now = self.clock.t_now
      flushed = False
      if kind == "arrive":
        stale.append(self.model_staleness(s))
        start = self.state.glob if self.live[s] else self.state.slots[s]
        self.arrive(s, k, start, self.local_training(k, start))
        self.count += 1
        flushed = self.count == self.C
        if flushed:
          self.flush()
          self.count = 0
          self.global_iters += 1
      if kind != "dispatched":          # arrived or lost: the slot is refilled (or waits)
        self.clock.replace(s)
      slots = list(self.state.slots)
      slots[s] = self.state.glob
      self.state = self.state.replace(slots=slots)
      self.live[s] = self.alias
      self.dispatch_version[s] = self.global_iters
      if flushed:
        return self._row(stale)

  def state_dict(self) -> dict:
    return dict(device=self.state,
                host=dict(self._host(), clock=self.clock.state_dict(), live=self.live.copy(),
                          dispatch_version=self.dispatch_version.copy(), count=self.count))

  def load_state_dict(self, d: dict) -> None:
    self.state = d["device"].replace(slots=list(d["device"].slots))
    host = d["host"]
    self._load_host(host)
    self.clock.load_state_dict(host["clock"])
    self.live = np.array(host["live"], bool)
    self.dispatch_version = np.array(host["dispatch_version"], np.int64)
    self.count = int(host["count"])


@ALGORITHMS.register("fedavg")
def make_fedavg(ctx: RunContext) -> FedAvgRunner:
  """FedAvg on the unsplit model (no logit adjustment)."""
  return FedAvgRunner(ctx)


@ALGORITHMS.register("fedbuff")
def make_fedbuff(ctx: RunContext) -> AsyncFLRunner:
  """FedBuff: REF model averaging by default; `fedbuff.rule="paper"` for the published rule."""
  return AsyncFLRunner(ctx, "fedbuff")


@ALGORITHMS.register("ca2fl")
def make_ca2fl(ctx: RunContext) -> AsyncFLRunner:
  """CA2FL: REF cache rule and aliasing by default; `ca2fl.rule="paper"`, `ca2fl.true_staleness`."""
  return AsyncFLRunner(ctx, "ca2fl")
