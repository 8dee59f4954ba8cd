"""The GAS host loop: replays the scheduler's events through the jitted GAS steps (spec §1.3).

Per global iteration: the scheduler lists the events up to the next aggregation; each client step
is one jitted call (minibatch gathered on the device by index); after every Q_s-th step (REF: C)
the server update runs (statistics merge, generation, server SGD step).
"""
import dataclasses
import functools

import jax
import numpy as np

from gas_jax import dissimilarity, engine, staleness, weighting
from gas_jax import stats as stats_lib
from gas_jax.algorithms import gas
from gas_jax.data import augment as augment_lib
from gas_jax.context import RunContext
from gas_jax.evaluation import finite_check
from gas_jax.privacy import regularisers
from gas_jax.registry import ALGORITHMS
from gas_jax.runners.calls import GasCalls
from gas_jax.system import availability
from gas_jax.system import scheduler as scheduler_lib


def take_server(server_state, out):
  """REF (BatchNorm in the server part): the client steps' forwards updated phi's running
  statistics; `out["server"]` (popped) becomes the server model."""
  if "server" in out:
    return server_state.replace(server=out.pop("server"))
  return server_state


def step_groups(events, cohort_size: int):
  """The events' client steps grouped as the engine runs them (segments, or cohorts), with
  each `SlotReset` in its place between the groups."""
  part = []
  for ev in events + [None]:
    if ev is None or isinstance(ev, scheduler_lib.SlotReset):
      yield from (engine.segments(part) if cohort_size == 1
                  else engine.cohorts(part, cohort_size))
      if ev is not None:
        yield ev
      part = []
    else:
      part.append(ev)


def device_mesh(n: int):
  """A 1-D mesh over the first n devices (axis "clients"), or None for one device."""
  if n <= 1:
    return None
  return jax.make_mesh((n,), ("clients",), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def cohort_limit(participating: int, hp) -> int:
  """The most events a cohort can hold: distinct slots (C) before a server update (Q_s)."""
  return min(participating, gas.buffer_size(hp))


def build_algorithm(ctx: RunContext, generate: bool) -> gas.Algorithm:
  """GAS built for the context's model, config and execution plan (and `privacy`: the
  regulariser of eq. 44, with the image range of `ctx.dataset`)."""
  hp = gas.hparams_from_config(ctx.config, ctx.dataset.num_classes, generate, ctx.plan)
  privacy = regularisers.from_config(ctx.config, ctx.dataset)
  if privacy is not None:
    hp = dataclasses.replace(hp, privacy=privacy)
  return gas.build(ctx.model, hp)


@dataclasses.dataclass
class SeedSetup:
  """Where one seed's GAS run starts (shared by `GasRunner` and the runs axis)."""
  scheduler: scheduler_lib.GasScheduler
  state: gas.GasState        # initial device state: algo.init(fold_in(key(seed), 0))
  step_key: jax.Array        # fold_in(key(seed), 1): client steps and augmentation
  server_key: jax.Array      # fold_in(key(seed), 2): server updates (generation)
  agg_w: np.ndarray          # aggregation weight per client: 1 (REF) or |D_k| (eq. 10)


def seed_setup(ctx: RunContext, algo: gas.Algorithm, init=None) -> SeedSetup:
  """The scheduler, initial state, keys and aggregation weights of `ctx`'s seed (`init`: the
  state initialiser, default `algo.init`)."""
  cfg = ctx.config
  key = jax.random.key(cfg.seed)
  return SeedSetup(
      scheduler=scheduler_lib.GasScheduler(
          ctx.time_model, cfg.clients.num, cfg.clients.participating, cfg.clients.local_iters,
          cfg.seed, activation_buffer=cfg.clients.get("activation_buffer", 0),
          model_buffer=cfg.clients.get("model_buffer", 0), system=availability.of(ctx)),
      state=(init or algo.init)(jax.random.fold_in(key, 0)),
      step_key=augment_lib.run_key(cfg.seed), server_key=jax.random.fold_in(key, 2),
      agg_w=(np.ones(ctx.clients.num_clients) if cfg.clients.aggregation == "uniform"
             else ctx.clients.sizes.astype(np.float64)))


def event_staleness(events) -> dict:
  """The staleness columns (`gas_jax.staleness`) of one global iteration's scheduler events:
  the models of its uploads (all aggregated at its end) and the activations merged by its
  server updates."""
  events = [ev for ev in events if isinstance(ev, scheduler_lib.Event)]   # (no SlotReset)
  return staleness.columns(
      [ev.model_staleness for ev in events if ev.upload],
      [v for ev in events if ev.server_update for v in ev.merged_activation_staleness])


class GasRunner:
  """Host loop of GAS; `generate=False` gives "GAS without generation".

  Public, beside `run_iteration`, `eval_params`, `state_dict` and the precompile methods (for
  benchmarks and tests; everything else is internal):
    calls: `GasCalls(client, cohort, server, compress)`, the jitted functions every step goes
      through (`gas_jax.runners.calls`); replace the record to instrument them, e.g.
      `runner.calls = runner.calls.wrap(Timed)`.
    state: the device state, `gas.GasState(client, server, buffer)`; the calls donate it, so a
      caller that runs them itself threads the results back into `state`.
    algo: the built algorithm (`algo.hparams`, `algo.generate`, ...); mesh: the device mesh of
      the cohort axis, or None; cohort_size: `ctx.plan.cohort_size` (1: event by event).
    step_key, server_key: the keys the client/cohort and server calls take.
    client_steps: client steps run so far; ctx: the `RunContext` (`ctx.data`: the train set).
  """

  def __init__(self, ctx: RunContext, generate: bool):
    cfg = ctx.config
    self.ctx, self.cfg = ctx, cfg
    self.algo = build_algorithm(ctx, generate)
    setup = seed_setup(ctx, self.algo)
    self.scheduler, self.state, self.agg_w = setup.scheduler, setup.state, setup.agg_w
    self.step_key, self.server_key = setup.step_key, setup.server_key
    self.cohort_size = ctx.plan.cohort_size
    # The mesh shards the cohort axis; event-by-event steps would only be replicated on it.
    self.mesh = device_mesh(ctx.plan.devices) if self.cohort_size != 1 else None
    if self.mesh is not None:
      replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
      self.state = jax.device_put(self.state, replicated)
      ctx.data = jax.device_put(ctx.data, replicated)
    aug = augment_lib.from_config(cfg)
    self.calls = GasCalls(client=engine.make_client_runner(self.algo, augment=aug),
                          cohort=engine.make_cohort_runner(self.algo, self.mesh, augment=aug),
                          server=engine.make_server_runner(self.algo),
                          compress=engine.make_compress_runner(self.algo))
    if self.cohort_size != 1:
      self.precompile()
    self.client_steps = 0
    self._restart = jax.jit(self.algo.restart_slot)
    if cfg.grad_dissimilarity.enabled:
      self._dissimilarity = jax.jit(
          functools.partial(dissimilarity.gradient_dissimilarity, ctx.model))

  def precompile(self) -> None:
    """Compiles every cohort size the schedule can produce (cohorts hold distinct slots and end
    at a server update, so at most min(C, Q_s) events) by running padding-only cohorts, which change nothing, and, where there are
    several, the server update's packed sizes (`precompile_server`; one size, as in chunks on
    the CPU, compiles at the first update): no compilation happens later, inside the timed
    global iterations."""
    c = cohort_limit(self.cfg.clients.participating, self.algo.hparams)
    n_dev = 1 if self.mesh is None else self.mesh.size
    limit = c if self.cohort_size == 0 else min(c, self.cohort_size)
    sizes = sorted({engine.bucket(n, n_dev) for n in range(1, limit + 1)})
    cs, buf = self.state.client, self.state.buffer
    for size in sizes:
      cs, buf, _ = self.calls.cohort(cs, buf, self.state.server.server, self.ctx.data,
                                     engine.padding_events(self.cfg.clients.batch_size, size),
                                     self.step_key)
    self.state = self.state.replace(client=cs, buffer=buf)
    self.precompile_server(gas.server_sizes_to_precompile(self.algo.hparams))

  def precompile_server(self, sizes=None) -> None:
    """Compiles the compression and the server update for the packed sizes of generated rows
    `sizes` (default: every one, `gas.generated_row_sizes`: one when the server runs in chunks,
    at most 6 in one pass) ahead of time, without running it; the runner otherwise compiles
    each size the first time it occurs."""
    if not self.algo.hparams.generate:
      return
    gas.precompile_compress(self.algo, self.calls.compress, self.state.server)
    for rows in gas.generated_row_sizes(self.algo.hparams) if sizes is None else sizes:
      self.calls.server.lower(self.state.server, self.state.buffer, np.int32(0),
                              self.server_key, gen_rows=rows, room_made=True).compile()

  def run_iteration(self) -> dict:
    sched, clients = self.scheduler, self.ctx.clients
    iteration = sched.global_iters
    events = sched.next_iteration()
    cs, ss, buf = self.state.client, self.state.server, self.state.buffer
    client_out, server_out = [], []
    for group in step_groups(events, self.cohort_size):
      if isinstance(group, scheduler_lib.SlotReset):   # a lost model's slot refilled (#29)
        cs = self._restart(cs, np.int32(group.slot))
        continue
      arrays = []
      for ev in group:
        idx, mask = clients.next_batch(ev.client)
        arrays.append(engine.event_arrays(ev, idx, mask, weighting.tag(self.cfg, ev),
                                          self.agg_w[ev.client], self.client_steps))
        self.client_steps += 1
      if self.cohort_size == 1:          # event by event
        for a in arrays:
          cs, buf, out = self.calls.client(cs, buf, ss.server, self.ctx.data, a,
                                           self.step_key)
          ss = take_server(ss, out)
          client_out.append((None, out))
      else:
        n_dev = 1 if self.mesh is None else self.mesh.size
        stacked = engine.stack_events(arrays, engine.bucket(len(arrays), n_dev))
        cs, buf, out = self.calls.cohort(cs, buf, ss.server, self.ctx.data, stacked,
                                         self.step_key)
        ss = take_server(ss, out)
        client_out.append((len(arrays), out))
      if group[-1].server_update:
        ss, sm = gas.run_server_update(self.algo, self.calls.server, self.calls.compress,
                                       ss, buf, np.int32(iteration), self.server_key)
        server_out.append(sm)
    self.state = gas.GasState(client=cs, server=ss, buffer=buf)
    client_out, server_out = jax.device_get((client_out, server_out))

    def per_event(key):   # host side: cohort outputs are [L] arrays padded past n events
      return np.concatenate([np.atleast_1d(o[key])[:n] if n else np.atleast_1d(o[key])
                             for n, o in client_out])

    client_loss = per_event("client_loss")
    extra = {}
    if "privacy_score" in client_out[0][1]:   # R of eq. 44: the decoder's SSIM, or DCOR
      extra["privacy_score"] = float(np.mean(per_event("privacy_score")))
    server_loss = np.array([o["server_loss"] for o in server_out])
    # Fallbacks are reported (warning) before a non-finite check can stop the run.
    fallbacks = stats_lib.report_fallbacks(sched.global_iters, server_out)
    finite_check(sched.global_iters, client_loss=client_loss,
                 client_gradient=per_event("grad_finite"),
                 server_loss=server_loss,
                 server_gradient=[o["grad_finite"] for o in server_out] or [True])
    gas.check_gen_rows(server_out)
    generated = [float(o["generated"]) for o in server_out]
    if self.cfg.grad_dissimilarity.enabled:
      extra["grad_dissimilarity"] = self.dissimilarity(sched.global_iters)
    return dict(**extra, server_updates=sched.server_updates, client_steps=self.client_steps,
                simulated_time_s=events[-1].iteration_time,
                client_loss=float(np.mean(client_loss)),
                server_loss=float(np.mean(server_loss)) if len(server_loss) else None,
                generated_per_update=float(np.mean(generated)) if generated else 0.0,
                stats_fallbacks=fallbacks, **event_staleness(events),
                **availability.of(self.ctx).take_row(events[-1].iteration_time))

  def dissimilarity(self, iteration: int) -> float:
    """Gradient dissimilarity after an aggregation, on test minibatches drawn from the seed."""
    gd, ds = self.cfg.grad_dissimilarity, self.ctx.dataset
    rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 0xD155, iteration]))
    idx = rng.choice(len(ds.y_test), size=(gd.batches, min(gd.batch_size, len(ds.y_test))))
    v = self._dissimilarity(self.state.server.server, self.state.client.global_client,
                            self.state.server.last_batch, ds.x_test[idx], ds.y_test[idx])
    return float(v)

  def eval_params(self):
    return self.state.client.global_client, self.state.server.server

  def state_dict(self) -> dict:
    return dict(device=self.state, scheduler=self.scheduler.state_dict(),
                clients=self.ctx.clients.state_dict(), client_steps=self.client_steps)

  def load_state_dict(self, d: dict) -> None:
    self.state = d["device"]
    self.scheduler.load_state_dict(d["scheduler"])
    self.ctx.clients.load_state_dict(d["clients"])
    self.client_steps = int(d["client_steps"])


@ALGORITHMS.register("gas")
def make_gas(ctx: RunContext) -> GasRunner:
  """GAS; `config.generate=False` is the "GAS without generation" ablation."""
  return GasRunner(ctx, bool(ctx.config.generate))


@ALGORITHMS.register("gas_nogen")
def make_gas_nogen(ctx: RunContext) -> GasRunner:
  """GAS without generative activations (same as algorithm=gas, generate=False)."""
  return GasRunner(ctx, False)
