"""The runs axis: several seeds of one GAS experiment vmapped in one program (`config.seeds`).

    python -m gas_jax.main --config=configs/digits.py --config.seeds=0,1,2 --workdir=runs/s

Each seed is the run `--config.seed=s` would make - its own partition, client speeds, schedule,
minibatches, initialisation and sampling keys - and writes the same files to `WORKDIR/seed<s>/`;
`WORKDIR/summary.json` adds the mean and standard deviation over the seeds.

Why this works: in GAS every client step adds one minibatch to the activation buffer and the
server updates after every C-th step (spec §1.5), whatever the schedule. So tick j of the
program runs the j-th client event of every seed (vmapped over seeds: each seed's own client,
slot, minibatch and key) and, when j is a multiple of C, the server update of every seed (one
jitted call per seed: vmapping it would turn the statistics' occasional QR compressions into
work done at every update). The
seeds only differ in when they aggregate (the host knows from each seed's scheduler): a seed's
global iteration ends at its own tick, where its models are evaluated and its row written; a
seed that has finished its T iterations rides along masked (its state is kept unchanged).
On an accelerator the S seeds cost about one run; on the 2-core CPU vmapped convolutions are
slower than separate calls, so there the runs axis is a convenience, not a speed-up.

`execution.vmap_seeds` picks vmapped (the default on accelerators) or a host loop over the
seeds' own states (the CPU default). The final state of each seed is checkpointed in its folder
in the single-run layout, so `--config.seed=s --workdir=WORKDIR/seed<s>` continues it.

Not (yet) supported with `seeds`: periodic checkpoints/resume of the multi-seed program (an
interrupted one starts over), cohorts (`execution.cohort_size` is ignored: the seeds are the
batch axis), gradient dissimilarity, and the FL/SFL baselines (run those per seed, e.g. with
launch/compare.py).
"""
import json
import os
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gas_jax import checkpoint
from gas_jax import engine
from gas_jax import metrics as metrics_lib
from gas_jax import runners
from gas_jax.algorithms import gas
from gas_jax.runners import gas_runner
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


def vmap_seeds(config) -> bool:
  """execution.vmap_seeds: -1 = vmapped except on the CPU (where vmapped convolutions are
  slower than separate calls), 1 = vmapped, 0 = a host loop over per-seed jitted steps."""
  n = config.execution.vmap_seeds
  return jax.default_backend() != "cpu" if n < 0 else bool(n)


class SeedsGasRunner:
  """GAS over S seeds at once. `contexts[s]` is the RunContext of seed s (same shapes).

  Vmapped (the client steps of all seeds in one call; client states and activation buffers have
  a leading seed axis; the server updates run per seed) or, with `vmapped=False`, a host loop
  over the seeds' own states through the single-run jitted steps. Both give each seed the
  numbers of its separate run."""

  def __init__(self, contexts: List[runners.RunContext], generate: bool, vmapped: bool):
    cfg = contexts[0].config
    self.contexts, self.cfg, self.S, self.vmapped = contexts, cfg, len(contexts), vmapped
    model = contexts[0].model
    hp = gas.hparams_from_config(cfg, contexts[0].dataset.num_classes, generate)
    self.algo = gas.build(model, hp)
    self.schedulers = [scheduler_lib.GasScheduler(
        ctx.time_model, cfg.clients.num, cfg.clients.participating, cfg.clients.local_iters,
        ctx.config.seed) for ctx in contexts]
    keys = [jax.random.key(ctx.config.seed) for ctx in contexts]
    init = jax.jit(self.algo.init)
    states = [init(jax.random.fold_in(k, 0)) for k in keys]
    self.step_keys = [jax.random.fold_in(k, 1) for k in keys]
    self.server_keys = [jax.random.fold_in(k, 2) for k in keys]
    aug = gas_runner.augmenter(cfg)
    if vmapped:
      # Client steps are vmapped over seeds; server updates run per seed (a vmapped server
      # update turns the statistics' conditional QR compressions into selects that always
      # compute both branches: measured 18x slower than three separate updates on digits).
      self.state = _stack([(st.client, st.buffer) for st in states])
      self.servers = [st.server for st in states]
      self.phi = _stack([st.server.server for st in states])
      self.step_keys = jnp.stack(self.step_keys)
      self.data = dict(x=contexts[0].data["x"], y=contexts[0].data["y"],
                       log_prior=jnp.stack([ctx.data["log_prior"] for ctx in contexts]))
      data_axes = dict(x=None, y=None, log_prior=0)
      client = _masked(engine.client_event(self.algo, aug))
      self.client_run = jax.jit(jax.vmap(client, in_axes=(0, 0, 0, data_axes, 0, 0, 0)),
                                donate_argnums=(0, 1))
      server = engine.server_event(self.algo)
      self.server_run = jax.jit(
          lambda ss, bufs, s, it, key: server(ss, tree_map(lambda a: a[s], bufs), it, key),
          donate_argnums=(0,))
      self.stack = jax.jit(lambda *phis: _stack(phis))
    else:
      self.states = states
      self.client_run = engine.make_client_runner(self.algo, augment=aug)
      self.server_run = engine.make_server_runner(self.algo)
    self.agg_w = [np.ones(cfg.clients.num) if cfg.clients.aggregation == "uniform"
                  else ctx.clients.sizes.astype(np.float64) for ctx in contexts]
    self.client_steps = np.zeros(self.S, np.int64)
    self.server_updates = np.zeros(self.S, np.int64)

  def _next_events(self, active):
    events, arrays = [], []
    for s in range(self.S):
      if not active[s]:
        events.append(None)
        arrays.append(None)
        continue
      ev = self.schedulers[s].next_event()
      idx, mask = self.contexts[s].clients.next_batch(ev.client)
      arrays.append(engine.event_arrays(ev, idx, mask, gas_runner.weight_tag(self.cfg, ev),
                                        self.agg_w[s][ev.client], int(self.client_steps[s])))
      self.client_steps[s] += 1
      events.append(ev)
    return events, arrays

  def tick(self, active: np.ndarray):
    """One client event of every active seed (and the server updates it triggers).

    Returns (events, outputs): events[s] is seed s's Event (None if inactive); outputs[s] is
    seed s's (client metrics, server metrics or None), device values not yet fetched (ticks
    queue up on the device) - `seed_outputs` turns fetched outputs into that form."""
    events, arrays = self._next_events(active)
    updates = {ev.server_update for ev in events if ev is not None}
    assert len(updates) == 1, "seeds disagree on the server-update tick"
    update = updates.pop()
    # The iteration counter for the learning-rate decay: before this event's aggregation.
    iters = [np.int32(sch.global_iters - int(ev.aggregate)) if ev is not None else np.int32(0)
             for sch, ev in zip(self.schedulers, events)]
    if update:
      self.server_updates += np.asarray(active, np.int64)
    if not self.vmapped:
      outs = []
      for s, a in enumerate(arrays):
        if a is None:
          outs.append(None)
          continue
        st, ctx = self.states[s], self.contexts[s]
        cs, buf, c_out = self.client_run(st.client, st.buffer, st.server.server, ctx.data, a,
                                         self.step_keys[s])
        ss, s_out = st.server, None
        if update:
          ss, s_out = self.server_run(ss, buf, iters[s], self.server_keys[s])
        self.states[s] = gas.GasState(client=cs, server=ss, buffer=buf)
        outs.append((c_out, s_out))
      return events, outs
    template = next(a for a in arrays if a is not None)
    arrays = [a if a is not None else template for a in arrays]
    stacked = {k: np.stack([a[k] for a in arrays]) for k in template}
    cs, buf = self.state
    cs, buf, c_out = self.client_run(cs, buf, self.phi, self.data, stacked, self.step_keys,
                                     np.asarray(active, bool))
    self.state = (cs, buf)
    s_out = [None] * self.S
    if update:
      for s in np.flatnonzero(active):
        self.servers[s], s_out[s] = self.server_run(self.servers[s], buf, np.int32(s), iters[s],
                                                    self.server_keys[s])
      self.phi = self.stack(*[ss.server for ss in self.servers])
    return events, (c_out, s_out)

  def seed_outputs(self, fetched, s: int):
    """Seed s's (client metrics, server metrics or None) from a fetched `tick` output."""
    if not self.vmapped:
      return fetched[s]
    c_out, s_out = fetched
    return {k: v[s] for k, v in c_out.items()}, s_out[s]

  def seed_state(self, s: int) -> gas.GasState:
    if not self.vmapped:
      return self.states[s]
    cs, buf = tree_map(lambda a: a[s], self.state)
    return gas.GasState(client=cs, server=self.servers[s], buffer=buf)

  def eval_params(self, s: int):
    """(theta_glob, phi) of seed s."""
    st = self.seed_state(s)
    return st.client.global_client, st.server.server

  def seed_state_dict(self, s: int) -> dict:
    """Seed s's state in `GasRunner.state_dict`'s layout: a seed folder is a single run."""
    return dict(device=self.seed_state(s), scheduler=self.schedulers[s].state_dict(),
                clients=self.contexts[s].clients.state_dict(),
                client_steps=int(self.client_steps[s]))


def train_seeds(config, workdir: str, build_context, evaluator_cls) -> Dict:
  """Runs `config.seeds` as one vmapped program; returns the summary over seeds."""
  seeds = [int(s) for s in config.seeds]
  contexts = []
  for s in seeds:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.seed, c.seeds = s, ()
    contexts.append(build_context(c))
  runner = SeedsGasRunner(contexts, config.algorithm == "gas" and bool(config.generate),
                          vmap_seeds(config))
  ds = contexts[0].dataset
  evaluate = evaluator_cls(contexts[0].model, ds.x_test, ds.y_test, config.eval_batch_size)
  writers = []
  for s, ctx in zip(seeds, contexts):
    w = metrics_lib.MetricsWriter(os.path.join(workdir, f"seed{s}"), [])
    w.write_config(ctx.config.to_dict())
    writers.append(w)
  T, S = config.num_global_iters, len(seeds)
  active = np.ones(S, bool)
  pending, client_hist, server_hist = [], [[] for _ in seeds], [[] for _ in seeds]
  start = time.time()
  iter_start = np.full(S, start)
  walls = [[] for _ in seeds]
  progress = metrics_lib.Progress(T, config.log_every_s, 0)
  logging.info("%d seeds %s %s", S, seeds,
               "vmapped in one program" if runner.vmapped else "in a host loop")
  while active.any():
    events, out = runner.tick(active)
    pending.append((events, out))
    done_now = [s for s, ev in enumerate(events) if ev is not None and ev.aggregate]
    if not done_now:
      continue
    fetched = jax.device_get([o for _, o in pending])
    for (evs, _), out in zip(pending, fetched):
      for s, ev in enumerate(evs):
        if ev is None:
          continue
        c_out, s_out = runner.seed_outputs(out, s)
        client_hist[s].append((float(c_out["client_loss"]), bool(c_out["grad_finite"])))
        if s_out is not None:
          server_hist[s].append((float(s_out["server_loss"]), bool(s_out["grad_finite"]),
                                 float(s_out["generated"])))
    pending = []
    for s in done_now:
      it = runner.schedulers[s].global_iters
      c_loss, c_fin = zip(*client_hist[s])
      s_loss, s_fin, gen = zip(*server_hist[s]) if server_hist[s] else ((), (True,), ())
      runners.finite_check(it, client_loss=c_loss, client_gradient=c_fin,
                           server_loss=np.asarray(s_loss, float), server_gradient=s_fin)
      params = runner.eval_params(s)
      ev_metrics = evaluate(params)
      runners.finite_check(it, test_loss=ev_metrics["test_loss"])
      now = time.time()
      walls[s].append(now - iter_start[s])
      iter_start[s] = now
      row = dict(global_iteration=it, server_updates=int(runner.server_updates[s]),
                 client_steps=int(runner.client_steps[s]),
                 simulated_time_s=events[s].iteration_time, wall_time_s=now - start,
                 **ev_metrics, client_loss=float(np.mean(c_loss)),
                 server_loss=float(np.mean(s_loss)) if s_loss else None,
                 generated_per_update=float(np.mean(gen)) if gen else 0.0)
      writers[s].append(row)
      if s == 0:
        progress.update(row)
      client_hist[s], server_hist[s] = [], []
      if it >= T:
        active[s] = False
  for i, w in enumerate(writers):      # final models: each seed folder resumes as a single run
    state = runner.seed_state_dict(i)
    ckpt = checkpoint.Checkpointer(w.workdir, config.checkpoints_to_keep)
    ckpt.save(T, state.pop("device"), dict(runner=state, wall_time_s=w.rows[-1]["wall_time_s"]))
    ckpt.close()
  summaries = []
  for s, w, wl in zip(seeds, writers, walls):
    steady = wl[1:] or wl
    summaries.append(w.write_summary(dict(
        mean_iter_wall_s=float(np.mean(steady)), first_iter_wall_s=float(wl[0]), seed=s,
        algorithm=config.algorithm, seeds_vmapped=S,
        generate=config.algorithm == "gas" and bool(config.generate))))
  finals = np.array([x["final_accuracy"] for x in summaries], np.float64)
  total = dict(seeds=seeds, algorithm=config.algorithm, global_iterations=T,
               final_accuracy_mean=float(finals.mean()), final_accuracy_std=float(finals.std()),
               final_accuracy=[float(f) for f in finals], wall_time_s=time.time() - start,
               per_seed=[os.path.join(workdir, f"seed{s}") for s in seeds])
  if metrics_lib.is_primary():
    metrics_lib.atomic_write(os.path.join(workdir, "summary.json"),
                             json.dumps(total, indent=2) + "\n")
  return total
