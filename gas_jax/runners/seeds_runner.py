"""The runs axis: several seeds of one GAS experiment in one program (`config.seeds`).

    python -m gas_jax.main --config=configs/digits.py --config.seeds=0,1,2 --workdir=runs/s

Each seed is the run `--config.seed=s` would make - its own partition, client speeds, schedule,
minibatches, initialisation and sampling keys - and writes the same files to `WORKDIR/seed<s>/`;
`WORKDIR/summary.json` adds the mean and standard deviation over the seeds.

Why this works: in GAS every client step adds one minibatch to the activation buffer and the
server updates after every Q_s-th step (spec §1.5; REF Q_s = C), whatever the schedule. So tick j
of the program runs the j-th client event of every seed (vmapped over seeds: each seed's own
client, slot, minibatch and key) and, when j is a multiple of Q_s, the server updates of all seeds in
one vmapped call (`seeds_steps`; the statistics' occasional compressions run from
the host, one seed's label at a time). With cohorts (`execution.cohort_size` != 1, the
accelerator default) a tick runs one segment of every seed instead: its cohorts up to its next
server update or aggregation, the j-th cohorts of all seeds in one call (padded to a common
length), so that the seeds' server updates again fall together. The seeds only differ in when
they aggregate (the host knows from each seed's scheduler): a seed's global iteration ends at
its own tick, where its models are evaluated and its row written; a seed that has finished its
T iterations rides along masked. On accelerators vmapped seeds cost less than separate runs
but more than one (figures: docs/benchmarks.md); on the CPU vmapped convolutions are slower
than separate calls, so there the seeds run in a host loop (`ExecutionPlan.vmap_seeds`).

`execution.vmap_seeds` picks vmapped (the default on accelerators) or a host loop over the
seeds' own states (the CPU default). The whole multi-seed state is checkpointed in
WORKDIR/checkpoints whenever a seed completes a multiple of `checkpoint_every` iterations (and
on SIGTERM/SIGINT); a restarted run resumes from it with the same numbers, also with a larger
`num_global_iters`. At the end the final state of each seed is checkpointed in its own folder
in the single-run layout, so `--config.seed=s --workdir=WORKDIR/seed<s>` continues one seed.

Not (yet) supported with `seeds`: gradient dissimilarity and the FL/SFL baselines (run those
per seed, e.g. with launch/compare.py).
"""
import dataclasses
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from gas_jax import engine, staleness, weighting
from gas_jax import stats as stats_lib
from gas_jax.algorithms import gas
from gas_jax.data import augment as augment_lib
from gas_jax.context import RunContext
from gas_jax.evaluation import finite_check
from gas_jax.runners import gas_runner, seeds_steps
from gas_jax.runners.calls import GasCalls
from gas_jax.system import scheduler as scheduler_lib

tree_map = jax.tree_util.tree_map


def _stack(trees):
  return tree_map(lambda *xs: jnp.stack(xs), *trees)


def _where(keep, new, old):
  return tree_map(lambda n, o: jnp.where(keep, n, o), new, old)


def _masked(fn):
  """fn(state_a, state_b, ..., valid) keeps the old states where not valid."""
  def run(*args):
    *args, valid = args
    out = fn(*args)
    n = len(out) - 1          # last output: metrics
    return tuple(_where(valid, o, a) for o, a in zip(out[:n], args[:n])) + (out[n],)
  return run


class SeedsGasRunner:
  """GAS over S seeds at once. `contexts[s]` is the RunContext of seed s (same shapes).

  Vmapped (the client steps of all seeds in one call, and the server updates of all seeds in
  one call: every state has a leading seed axis) or, with `vmapped=False`, a host loop over
  the seeds' own states through the single-run jitted steps. Both give each seed the numbers
  of its separate run.

  `calls` is the public `GasCalls` record of the jitted functions it goes through (vmapped
  over seeds, or the single-run ones in the host loop, where `cohort` is None;
  `gas_jax.runners.calls`): replace it to instrument them (`runner.calls.wrap(Timed)`)."""

  def __init__(self, contexts: List[RunContext], generate: bool, vmapped: bool):
    cfg = contexts[0].config
    self.contexts, self.cfg, self.S, self.vmapped = contexts, cfg, len(contexts), vmapped
    self.algo = gas_runner.build_algorithm(contexts[0], generate)
    init = jax.jit(self.algo.init)
    setups = [gas_runner.seed_setup(ctx, self.algo, init) for ctx in contexts]
    self.schedulers = [x.scheduler for x in setups]
    states = [x.state for x in setups]
    self.step_keys = [x.step_key for x in setups]
    self.server_keys = [x.server_key for x in setups]
    self.agg_w = [x.agg_w for x in setups]
    aug = augment_lib.from_config(cfg)
    if vmapped:
      # Client steps and server updates are vmapped over seeds. The statistics' compressions
      # run from the host, one seed's label at a time (`seeds_steps.make_compress_runner`):
      # vmapped, their QR's branches would become selects computing both.
      self.state = _stack([(st.client, st.buffer) for st in states])
      self.servers = _stack([st.server for st in states])
      self.step_keys = jnp.stack(self.step_keys)
      self.server_keys = jnp.stack(self.server_keys)
      self.data = dict(x=contexts[0].data["x"], y=contexts[0].data["y"],
                       log_prior=jnp.stack([ctx.data["log_prior"] for ctx in contexts]))
      data_axes = dict(x=None, y=None, log_prior=0)
      client = _masked(engine.client_event(self.algo, aug))
      # Cohorts x seeds: each round runs one cohort of every seed (its next independent events,
      # padded to a common bucketed length); cohort_step already ignores padding events.
      self.cohort_size = contexts[0].plan.cohort_size
      self.calls = GasCalls(
          client=jax.jit(jax.vmap(client, in_axes=(0, 0, 0, data_axes, 0, 0, 0)),
                         donate_argnums=(0, 1)),
          cohort=jax.jit(jax.vmap(engine.cohort_event(self.algo, augment=aug),
                                  in_axes=(0, 0, 0, data_axes, 0, 0)),
                         donate_argnums=(0, 1)),
          server=seeds_steps.make_server_runner(self.algo),
          compress=seeds_steps.make_compress_runner(self.algo))
    else:
      self.cohort_size = 1
      self.states = states
      self.calls = GasCalls(client=engine.make_client_runner(self.algo, augment=aug),
                            cohort=None, server=engine.make_server_runner(self.algo),
                            compress=engine.make_compress_runner(self.algo))
    self.client_steps = np.zeros(self.S, np.int64)
    self.server_updates = np.zeros(self.S, np.int64)
    self.lookahead = [None] * self.S     # cohorts: an event pulled that starts the next cohort
    # Per seed, the client (loss, finite) and server (loss, finite, generated, fallbacks)
    # outputs of its current global iteration (fetched, not yet in a row).
    self.client_hist, self.server_hist = [[] for _ in range(self.S)], [[] for _ in range(self.S)]
    # Per seed, the staleness values of its current global iteration: [model, activation].
    self.staleness_hist = [[[], []] for _ in range(self.S)]
    if self.cohort_size != 1:
      self.precompile()

  def _pull(self, s: int):
    """Seed s's next event and its arrays (consumes its scheduler and minibatch streams)."""
    if self.lookahead[s] is not None:   # drawn by a cohort (also before a resume)
      item, self.lookahead[s] = self.lookahead[s], None
      return item
    ev = self.schedulers[s].next_event()
    idx, mask = self.contexts[s].clients.next_batch(ev.client)
    arrays = engine.event_arrays(ev, idx, mask, weighting.tag(self.cfg, ev),
                                 self.agg_w[s][ev.client], int(self.client_steps[s]))
    self.client_steps[s] += 1
    return ev, arrays

  def _next_cohort(self, s: int) -> list:
    """Seed s's next cohort, by `engine.cohorts`' rules: distinct slots, ends after a server
    update or an aggregation, at most cohort_size events (0 = unbounded). A list of (event,
    arrays)."""
    group, slots = [], set()
    while True:
      item = self._pull(s)
      ev = item[0]
      if engine.opens_cohort(ev, slots, len(group), self.cohort_size):
        self.lookahead[s] = item
        return group
      group.append(item)
      slots.add(ev.slot)
      if engine.closes_cohort(ev):
        return group

  def _next_segment(self, s: int) -> list:
    """Seed s's cohorts up to its next server update or aggregation (a list of cohorts)."""
    groups = [self._next_cohort(s)]
    while not engine.closes_cohort(groups[-1][-1][0]):
      groups.append(self._next_cohort(s))
    return groups

  def precompile(self) -> None:
    """Compiles, before training, every padded cohort length (padding changes nothing), the
    compression and, where there are several, the server update's packed sizes of generated
    rows (`GasRunner.precompile`)."""
    c = gas_runner.cohort_limit(self.cfg.clients.participating, self.algo.hparams)
    limit = c if self.cohort_size == 0 else min(c, self.cohort_size)
    cs, buf = self.state
    for size in sorted({engine.bucket(n) for n in range(1, limit + 1)}):
      pad = engine.padding_events(self.cfg.clients.batch_size, size)
      stacked = {k: np.stack([v] * self.S) for k, v in pad.items()}
      cs, buf, _ = self.calls.cohort(cs, buf, self.servers.server, self.data, stacked,
                                     self.step_keys)
    self.state = (cs, buf)
    if getattr(self.algo.hparams, "generate", False) and stats_lib.compressible(
        self.servers.stats):
      self.calls.compress.lower(self.servers, np.int32(0), np.int32(0)).compile()
    its, due = np.zeros(self.S, np.int32), np.zeros(self.S, bool)
    for rows in gas.server_sizes_to_precompile(self.algo.hparams):
      self.calls.server.lower(self.servers, buf, its, self.server_keys, due, gen_rows=rows,
                              room_made=True).compile()

  def _server_updates(self, last_events, buf):
    """The server updates of the seeds whose last event triggers one, in one vmapped call
    (`seeds_steps`), after the compressions their merges need. Returns (metrics [S] or None,
    due [S])."""
    due = np.array([ev is not None and ev.server_update for ev in last_events])
    if not due.any():
      return None, due
    self.server_updates += due
    its = np.array([self.schedulers[s].global_iters - int(ev.aggregate) if due[s] else 0
                    for s, ev in enumerate(last_events)], np.int32)
    st, hp = self.servers.stats, self.algo.hparams
    sqrt = stats_lib.compressible(st)
    host = jax.device_get((buf.labels, buf.row_mask, buf.tags, st.seen,
                           st.used if sqrt else None))
    rows = []
    for s in np.flatnonzero(due):
      r, full = gas.plan_from_host(hp, *[None if a is None else a[s] for a in host],
                                   st.rows.shape[-2] if sqrt else 0)
      rows.append(r)
      for y in full:
        self.servers = self.calls.compress(self.servers, np.int32(s), np.int32(y))
    gen_rows = None if rows[0] is None else max(rows)   # seeds pack to the largest size
    self.servers, out = self.calls.server(self.servers, buf, its, self.server_keys, due,
                                          gen_rows=gen_rows, room_made=True)
    return out, due

  def tick(self, active: np.ndarray):
    """Advances every active seed by one event, or in the cohort mode by one segment (its
    cohorts up to its next server update or aggregation), and runs the server updates due.

    Returns (events, outputs): events[s] is the list of seed s's events (empty if inactive);
    outputs are device values not yet fetched (ticks queue up on the device) -
    `seed_outputs` turns fetched outputs into per-seed ones."""
    if self.vmapped and self.cohort_size != 1:
      # One segment per seed: its cohorts, j-th cohorts of all seeds in one call (padded to a
      # common bucketed length), then the seeds' server updates in one call.
      cs, buf = self.state
      segs = [self._next_segment(s) if active[s] else [] for s in range(self.S)]
      c_outs = []
      for j in range(max(len(g) for g in segs)):
        groups = [g[j] if j < len(g) else [] for g in segs]
        length = engine.bucket(max(len(g) for g in groups))
        pad = engine.padding_events(self.cfg.clients.batch_size, length)
        per_seed = [engine.stack_events([a for _, a in g], length) if g else pad
                    for g in groups]
        stacked = {k: np.stack([p[k] for p in per_seed]) for k in pad}
        cs, buf, c_out = self.calls.cohort(cs, buf, self.servers.server, self.data, stacked,
                                           self.step_keys)
        self.servers = gas_runner.take_server(self.servers, c_out)   # padding keeps phi
        c_outs.append((c_out, [len(g) for g in groups]))
      self.state = (cs, buf)
      events = [[ev for g in seg for ev, _ in g] for seg in segs]
      return events, (c_outs, self._server_updates([e[-1] if e else None for e in events], buf))
    pulled = [self._pull(s) if active[s] else None for s in range(self.S)]
    events = [[p[0]] if p else [] for p in pulled]
    if not self.vmapped:
      outs = []
      for s, p in enumerate(pulled):
        if p is None:
          outs.append(None)
          continue
        ev, arrays = p
        st, ctx = self.states[s], self.contexts[s]
        cs, buf, c_out = self.calls.client(st.client, st.buffer, st.server.server, ctx.data,
                                           arrays, self.step_keys[s])
        ss, s_out = gas_runner.take_server(st.server, c_out), None
        if ev.server_update:
          self.server_updates[s] += 1
          it = np.int32(self.schedulers[s].global_iters - int(ev.aggregate))
          ss, s_out = gas.run_server_update(self.algo, self.calls.server,
                                            self.calls.compress, ss, buf, it,
                                            self.server_keys[s])
        self.states[s] = gas.GasState(client=cs, server=ss, buffer=buf)
        outs.append((c_out, s_out))
      return events, outs
    template = next(p[1] for p in pulled if p is not None)
    arrays = [p[1] if p is not None else template for p in pulled]
    stacked = {k: np.stack([a[k] for a in arrays]) for k in template}
    cs, buf = self.state
    active = np.asarray(active, bool)
    cs, buf, c_out = self.calls.client(cs, buf, self.servers.server, self.data, stacked,
                                       self.step_keys, active)
    if "server" in c_out:   # inactive seeds keep their phi
      c_out["server"] = tree_map(
          lambda n, o: jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
          c_out["server"], self.servers.server)
    self.servers = gas_runner.take_server(self.servers, c_out)
    self.state = (cs, buf)
    ones = [int(p is not None) for p in pulled]
    return events, ([(c_out, ones)],
                    self._server_updates([p[0] if p else None for p in pulled], buf))

  def seed_outputs(self, fetched, s: int, n: int):
    """Seed s's (client metrics [n], server metrics or None) from a fetched `tick` output
    whose events[s] had n events."""
    if not self.vmapped:
      c_out, s_out = fetched[s]
      return {k: np.atleast_1d(v)[:n] for k, v in c_out.items()}, s_out
    c_outs, (s_out, due) = fetched
    c = {k: np.concatenate([np.atleast_1d(o[k][s])[:ns[s]] for o, ns in c_outs])
         for k in c_outs[0][0]}
    return c, ({k: v[s] for k, v in s_out.items()} if due[s] else None)

  def seed_state(self, s: int) -> gas.GasState:
    if not self.vmapped:
      return self.states[s]
    (cs, buf), ss = tree_map(lambda a: a[s], (self.state, self.servers))
    return gas.GasState(client=cs, server=ss, buffer=buf)

  def eval_params(self, s: int):
    """(theta_glob, phi) of seed s (sliced alone: the statistics stay where they are)."""
    if not self.vmapped:
      st = self.states[s]
      return st.client.global_client, st.server.server
    return tree_map(lambda a: a[s], (self.state[0].global_client, self.servers.server))

  def at_row_boundary(self, s: int) -> bool:
    """Whether seed s ran no client step since its last global iteration ended (its models are
    still those of its last row; `callbacks.Evaluate` evaluates them then)."""
    return not self.client_hist[s]

  def device_state(self):
    """Every seed's device state (the multi-seed checkpoint's `state` item)."""
    return list(self.states) if not self.vmapped else dict(stacked=self.state,
                                                           servers=self.servers)

  def load_device_state(self, device) -> None:
    if not self.vmapped:
      self.states = list(device)
      return
    self.state, self.servers = tuple(device["stacked"]), device["servers"]

  def host_state(self) -> dict:
    look = [None if item is None else dict(
        ev=dataclasses.asdict(item[0]), idx=item[1]["idx"].tolist(),
        mask=item[1]["mask"].tolist(), event_id=int(item[1]["event_id"]))
            for item in self.lookahead]
    return dict(schedulers=[x.state_dict() for x in self.schedulers],
                clients=[ctx.clients.state_dict() for ctx in self.contexts],
                client_steps=self.client_steps.tolist(),
                server_updates=self.server_updates.tolist(), lookahead=look)

  def load_host_state(self, d: dict) -> None:
    for sch, x in zip(self.schedulers, d["schedulers"]):
      sch.load_state_dict(x)
    for ctx, x in zip(self.contexts, d["clients"]):
      ctx.clients.load_state_dict(x)
    self.client_steps = np.asarray(d["client_steps"], np.int64)
    self.server_updates = np.asarray(d["server_updates"], np.int64)
    self.lookahead = [None] * self.S
    for s, item in enumerate(d.get("lookahead") or [None] * self.S):
      if item is not None:
        ev = scheduler_lib.Event(**dict(item["ev"], merged_activation_staleness=tuple(
            item["ev"].get("merged_activation_staleness", ()))))
        self.lookahead[s] = (ev, engine.event_arrays(
            ev, item["idx"], item["mask"], weighting.tag(self.cfg, ev),
            self.agg_w[s][ev.client], item["event_id"]))

  def seed_state_dict(self, s: int) -> dict:
    """Seed s's state in `GasRunner.state_dict`'s layout: a seed folder is a single run."""
    return dict(device=self.seed_state(s), scheduler=self.schedulers[s].state_dict(),
                clients=self.contexts[s].clients.state_dict(),
                client_steps=int(self.client_steps[s]))

  # The run loop's interface (`gas_jax.loop`, lanes = seeds).
  def run_iteration(self) -> Dict[int, dict]:
    """Ticks until at least one seed finishes a global iteration (seeds that have done
    num_global_iters ride along masked); returns {seed index: its row fields}, as
    `GasRunner.run_iteration` gives them for one seed."""
    T = self.cfg.num_global_iters
    active = np.array([sch.global_iters < T for sch in self.schedulers])
    pending = []
    while True:
      events, out = self.tick(active)
      pending.append((events, out))
      done_now = [s for s, evs in enumerate(events) if evs and evs[-1].aggregate]
      if done_now:
        break
    self._collect(pending)
    return {s: self._row_fields(s, events[s][-1]) for s in done_now}

  def _collect(self, pending) -> None:
    """Fetches the queued tick outputs into the per-seed histories."""
    fetched = jax.device_get([o for _, o in pending])
    for (evs, _), out in zip(pending, fetched):
      for s, seed_events in enumerate(evs):
        if not seed_events:
          continue
        c_out, s_out = self.seed_outputs(out, s, len(seed_events))
        model, act = self.staleness_hist[s]
        model.extend(ev.model_staleness for ev in seed_events if ev.upload)
        act.extend(v for ev in seed_events if ev.server_update
                   for v in ev.merged_activation_staleness)
        self.client_hist[s].extend((float(l), bool(f)) for l, f in
                                   zip(c_out["client_loss"], c_out["grad_finite"]))
        if s_out is not None:
          gas.check_gen_rows([s_out])
          self.server_hist[s].append((float(s_out["server_loss"]), bool(s_out["grad_finite"]),
                                      float(s_out["generated"]),
                                      int(s_out.get("stats_fallbacks", 0))))

  def _row_fields(self, s: int, ev) -> dict:
    """Seed s finished a global iteration at event ev: its row fields (divergence checked)."""
    it = self.schedulers[s].global_iters
    c_loss, c_fin = zip(*self.client_hist[s])
    hist = [tuple(h) for h in self.server_hist[s]]
    s_loss, s_fin, gen, fallbacks = zip(*hist) if hist else ((), (True,), (), ())
    finite_check(it, client_loss=c_loss, client_gradient=c_fin,
                 server_loss=np.asarray(s_loss, float), server_gradient=s_fin)
    self.client_hist[s], self.server_hist[s] = [], []
    stale = staleness.columns(*self.staleness_hist[s])
    self.staleness_hist[s] = [[], []]
    return dict(server_updates=int(self.server_updates[s]),
                client_steps=int(self.client_steps[s]), simulated_time_s=ev.iteration_time,
                client_loss=float(np.mean(c_loss)),
                server_loss=float(np.mean(s_loss)) if s_loss else None,
                generated_per_update=float(np.mean(gen)) if gen else 0.0,
                stats_fallbacks=stats_lib.report_fallbacks(
                    it, [dict(stats_fallbacks=f) for f in fallbacks]), **stale)

  def state_dict(self) -> dict:
    """Every seed's state: `device` (`device_state`) and the host state."""
    return dict(self.host_state(), device=self.device_state(), client_hist=self.client_hist,
                server_hist=self.server_hist, staleness_hist=self.staleness_hist)

  def load_state_dict(self, d: dict) -> None:
    self.load_device_state(d["device"])
    self.load_host_state(d)
    self.client_hist = [list(h) for h in d["client_hist"]]
    self.server_hist = [list(h) for h in d["server_hist"]]
    # older checkpoints: the current iterations' staleness values start empty
    self.staleness_hist = [[[int(v) for v in m], [int(v) for v in a]]
                           for m, a in d.get("staleness_hist") or [[[], []]] * self.S]

  def lane_state_dict(self, s: int) -> dict:
    """Seed s alone, in the single run's layout (`seed_state_dict`)."""
    return self.seed_state_dict(s)
