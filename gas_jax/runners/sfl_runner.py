"""Host loops of the synchronous SFL baselines "minibatch_sfl" and "s2fl" (spec §2.4-2.5).

One round = one global iteration: C clients drawn (the baselines' shared selection stream), all
start from theta_glob; E local iterations, each: phi_snap <- phi; every client (in order) does one
jitted client step through phi_snap; then the server steps on the concatenated activations
(MiniBatch-SFL: one step on all C; S2FL: one step from phi_snap per group, sharing the server
momentum, then phi <- mean of the group models). theta_glob <- data-weighted average.

Clocks (spec §1.9 constants via `TimeModel`):
- MiniBatch-SFL: per local iteration tau_k += F_c/c_k + B A/r_k, barrier tau <- max, then
  tau_k += F_c/c_k; at round end tau_k += Mbits_c/r_k and t_now <- max_k tau_k.
- S2FL (time-only adaptive split): per client two candidate costs 2 F_j/c_k + B A_j/r_k with
  REF's AlexNet constants (F, A) = (884,736, 262,144 bit) and (5,603,328, 131,072 bit), whatever
  the model or `time.ref_constants` (REF hard-codes them; training keeps the model's own split);
  m = median of the 2C costs, each client takes its candidate closest to m, the iteration costs
  the max of those; at round end tau += Mbits_c/r_k (the model's client-part size, or REF's
  620,544 bit with `time.ref_constants`), t_now <- max. With a small model and the model's own
  time constants the REF candidates overstate S2FL's per-iteration cost against MiniBatch-SFL;
  `s2fl.candidates="model"` uses the model's own split as the only candidate instead.

Privacy (`privacy.method`, paper eq. 44, `gas_jax.privacy.regularisers`): the regulariser is in
every client step; with "inversion" each selected client trains a copy of the global decoder
(`SflState.decoder`, fresh Adam state per round) and the copies are averaged with the client
models' weights.
"""
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gas_jax import staleness
from gas_jax.algorithms import fl, sfl
from gas_jax.data import augment as augment_lib
from gas_jax.context import RunContext
from gas_jax.evaluation import finite_check
from gas_jax.privacy import regularisers
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner
from gas_jax.runners.calls import SFLCalls
from gas_jax.runners.fl_runner import selection_rng
from gas_jax.system import availability

S2FL_REF_CANDIDATES = ((884_736, 262_144), (5_603_328, 131_072))   # (FLOPs/image, bits/image)


def split_round(t_now: float, fwd, bwd, up, cuts, local_iters: int):
  """Clock of one synchronous split round from t_now (spec §2.4-2.5), with the times `cuts` at
  which clients' work is cut (inf: never; docs/scenarios.md). Per local iteration every client
  still in the round sends its activation at tau + fwd; a client cut before it arrives is out of
  the round; the barrier waits for the last arrival (and learns of a cut when it happens), then
  tau = barrier + bwd; at the end each remaining client uploads its model (tau + up).
  Returns (ends: when each model arrives, inf for clients out of the round; steps: the local
  iterations whose activation arrived, per client)."""
  fwd, bwd, up = (np.asarray(v, np.float64) for v in (fwd, bwd, up))
  cuts = np.broadcast_to(np.asarray(cuts, np.float64), fwd.shape)
  tau = np.full(len(fwd), float(t_now))
  alive = np.ones(len(fwd), bool)
  steps = np.zeros(len(fwd), np.int64)
  for _ in range(local_iters):
    arr = tau + fwd
    ok = alive & (arr <= cuts)
    if ok.any():
      barrier = max(arr[ok].max(), cuts[alive & ~ok].max(initial=-np.inf))
      tau = np.where(ok, barrier + bwd, tau)
    steps += ok
    alive = ok
  return np.where(alive, tau + up, np.inf), steps


def minibatch_sfl_costs(tm, selected: Sequence[int]):
  """Spec §2.4 per-client (fwd, bwd, up): F_c/c + B A/r, F_c/c, Mbits_c/r."""
  sel = [int(k) for k in selected]
  return (np.array([tm.compute(k) + tm.upload_activation(k) for k in sel]),
          np.array([tm.compute(k) for k in sel]), np.array([tm.upload_model(k) for k in sel]))


def minibatch_sfl_round_end(tm, selected: Sequence[int], local_iters: int, t_now: float) -> float:
  """Spec §2.4 clock of one MiniBatch-SFL round that starts at t_now."""
  ends, _ = split_round(t_now, *minibatch_sfl_costs(tm, selected), np.inf, local_iters)
  return float(np.max(ends))


def s2fl_chosen_costs(tm, selected: Sequence[int], candidates=S2FL_REF_CANDIDATES) -> np.ndarray:
  """Spec §2.5: each client's candidate cost 2 F_j/c_k + B A_j/r_k closest to the median of
  all costs (ties -> first, as REF)."""
  rate = tm.profiles.rate
  costs = np.array([[2.0 * f / tm.profiles.compute[k] + tm.batch_size * a / rate[k]
                     for f, a in candidates] for k in selected])
  med = np.median(costs)
  return np.array([row[int(np.argmin(np.abs(row - med)))] for row in costs])


def s2fl_iteration_time(tm, selected: Sequence[int], candidates=S2FL_REF_CANDIDATES) -> float:
  """Spec §2.5: max over clients of the candidate cost closest to the median of all costs."""
  return float(max(s2fl_chosen_costs(tm, selected, candidates)))


def s2fl_costs(tm, selected: Sequence[int], candidates=S2FL_REF_CANDIDATES):
  """Spec §2.5 per-client (fwd, bwd, up) of `split_round`: the chosen cost, 0, Mbits_c/r."""
  return (s2fl_chosen_costs(tm, selected, candidates), np.zeros(len(selected)),
          np.array([tm.upload_model(int(k)) for k in selected]))


def s2fl_round_end(tm, selected: Sequence[int], local_iters: int, t_now: float,
                   candidates=S2FL_REF_CANDIDATES) -> float:
  """Spec §2.5 clock of one S2FL round that starts at t_now."""
  ends, _ = split_round(t_now, *s2fl_costs(tm, selected, candidates), np.inf, local_iters)
  return float(np.max(ends))


_MEAN = jax.jit(sfl.mean_trees)
SERVER_SALT = 0x5E    # server steps fold this into the step key (client steps do not)


@functools.lru_cache(maxsize=16)
def compiled_steps(model, hp: fl.FLHParams, augmenter=None, privacy=None):
  """(algorithm, jit(client step), jit(server step), jit(init_opt)) with on-device minibatch
  gathers (`augment.train_batch`, as in every method), cached per (model, hparams, augmenter,
  privacy settings) so runners built in one process share compilations."""
  algo = sfl.build(model, hp, privacy)

  def client(theta, copt, phi, data, idx, mask, it, key, aug_key, step_id, dec=None):
    x, y = augment_lib.train_batch(data, idx, aug_key, step_id, augmenter)
    batch = dict(x=x, y=y, mask=mask, global_iter=it)
    return algo.client_step(theta, copt, phi, batch, jax.random.fold_in(key, step_id), dec)

  def server(phi, sopt, data, acts, idx, mask, it, key, step_id):
    batch = dict(act=jnp.concatenate(acts), y=data["y"][idx], mask=mask, global_iter=it)
    key = jax.random.fold_in(jax.random.fold_in(key, step_id), SERVER_SALT)
    return algo.server_step(phi, sopt, batch, key)

  return algo, jax.jit(client), jax.jit(server), jax.jit(algo.init_opt)


@struct.dataclass
class SflState:
  """MiniBatch-SFL's / S2FL's device state: client model theta, server model phi, and their
  optimiser states (the client's shared momentum buffer); privacy "inversion": the global
  simulated decoder (else None)."""
  theta: Any
  phi: Any
  copt: Any
  sopt: Any
  decoder: Any = None


class SyncSflRunner:
  """MiniBatch-SFL (one group of all C clients) and S2FL (label-balanced groups).

  `calls` is the public `SFLCalls(client, server, init_opt)` record of the jitted steps
  (`gas_jax.runners.calls`): replace it to instrument them."""

  def __init__(self, ctx: RunContext, grouped: bool):
    cfg = ctx.config
    self.ctx, self.cfg, self.grouped = ctx, cfg, grouped
    self.K, self.C, self.E = cfg.clients.num, cfg.clients.participating, cfg.clients.local_iters
    self.algo, client, server, init_opt = compiled_steps(
        ctx.model, fl.hparams_from_config(cfg), augment_lib.from_config(cfg),
        regularisers.from_config(cfg, ctx.dataset))
    self.calls = SFLCalls(client=client, server=server, init_opt=init_opt)
    self.aug_key = augment_lib.run_key(cfg.seed)
    init_key = jax.random.fold_in(jax.random.key(cfg.seed), 0)
    theta, phi, copt, sopt = self.algo.init(init_key)
    reg = self.algo.regulariser
    self.inversion = reg is not None and reg.inversion
    self.state = SflState(theta=theta, phi=phi, copt=copt, sopt=sopt,
                          decoder=reg.init_decoder(init_key)[0] if self.inversion else None)
    self.key = jax.random.fold_in(jax.random.key(cfg.seed), fl_runner.STEP_STREAM)
    self.per_client = cfg.clients.momentum == "per_client"
    self.sizes = ctx.clients.sizes.astype(np.float64)
    self.rng = selection_rng(cfg.seed)
    self.system = availability.of(ctx)
    self.global_iters = self.client_steps = self.server_updates = 0
    self.t_now = 0.0
    if grouped:
      self.num_groups, self.passes = int(cfg.s2fl.num_groups), int(cfg.s2fl.search_passes)
      tm = ctx.time_model
      self.candidates = (S2FL_REF_CANDIDATES if cfg.s2fl.candidates == "ref"
                         else ((tm.client_flops, tm.activation_bits),))
    self._mean, self._aggregate = _MEAN, fl_runner.FEDAVG_AGGREGATE

  def groups(self, selected) -> list:
    if not self.grouped:
      return [[int(k) for k in selected]]
    groups = math.gcd(len(selected), self.num_groups)   # fewer online clients than C: fewer
    return sfl.s2fl_groups(selected, self.ctx.clients.label_counts, groups, self.passes)

  def run_iteration(self) -> dict:
    clients, data, sys = self.ctx.clients, self.ctx.data, self.system
    t0, selected = sys.select(self.rng, self.t_now, self.C, "S2FL" if self.grouped else
                              "MiniBatch-SFL")
    tm, n = sys.tm_at(t0), len(selected)
    costs = (s2fl_costs(tm, selected, self.candidates) if self.grouped
             else minibatch_sfl_costs(tm, selected))
    ends, _ = split_round(t0, *costs, np.inf, self.E)
    cuts = np.array([sys.dispatch(k, t0, e - t0) for k, e in zip(selected, ends)])
    ends, steps = split_round(t0, *costs, cuts, self.E)
    self.t_now, back = sys.sync_round(t0, ends, cuts)   # who returned (docs/scenarios.md)
    groups = self.groups(selected)
    pos = {int(k): i for i, k in enumerate(selected)}
    st = self.state
    thetas = [st.theta] * n
    copts = ([self.calls.init_opt(st.theta) for _ in range(n)] if self.per_client
             else None)
    phi, copt, sopt = st.phi, st.copt, st.sopt
    # privacy "inversion": each client's copy of the global decoder, with a fresh Adam state
    decs = ([(st.decoder, self.algo.regulariser.init_opt(st.decoder))] * n
            if self.inversion else None)
    it = np.int32(self.global_iters)
    c_out, s_out = [], []
    # activation staleness (`gas_jax.staleness`): server updates between the round's dispatch
    # of theta_glob and the update merging the activation (local iteration e: e - 1)
    dispatched, act_stale = self.server_updates, []
    for e in range(self.E):
      phi_snap, new_phis = phi, []
      for group in groups:
        acts, idxs, masks = [], [], []
        for k in group:
          i = pos[k]
          if e >= steps[i]:          # cut: this activation never arrives
            continue
          idx, mask = clients.next_batch(k)
          opt = copts[i] if self.per_client else copt
          thetas[i], opt, out = self.calls.client(thetas[i], opt, phi_snap, data, idx, mask,
                                                  it, self.key, self.aug_key,
                                                  np.int32(self.client_steps),
                                                  decs[i] if decs else None)
          if decs:
            decs[i] = out.pop("dec")
          if self.per_client:
            copts[i] = opt
          else:
            copt = opt
          acts.append(out.pop("act"))
          idxs.append(idx)
          masks.append(mask)
          c_out.append(out)
          act_stale.append(self.server_updates - dispatched)
          self.client_steps += 1
        if not acts:
          continue
        phi_g, sopt, out = self.calls.server(phi_snap, sopt, data, acts,
                                             np.concatenate(idxs), np.concatenate(masks), it,
                                             self.key, np.int32(self.client_steps))
        new_phis.append(phi_g)
        s_out.append(out)
      if new_phis:
        phi = new_phis[0] if len(new_phis) == 1 else self._mean(new_phis)
        self.server_updates += 1
    # The clients that returned are averaged; with none, the global client model stays.
    w = self.sizes[selected[back]]
    keep = [i for i in range(n) if back[i]]
    theta = self._aggregate([thetas[i] for i in keep], w) if keep else st.theta
    decoder = (self._aggregate([decs[i][0] for i in keep], w) if keep else st.decoder) \
        if decs else None
    self.state = SflState(theta=theta, phi=phi, copt=copt, sopt=sopt, decoder=decoder)
    self.global_iters += 1
    c_out, s_out = jax.device_get((c_out, s_out))
    c_loss = np.array([o["loss"] for o in c_out])
    s_loss = np.array([o["loss"] for o in s_out])
    extra = ({} if not c_out or "privacy_score" not in c_out[0] else
             dict(privacy_score=float(np.mean([o["privacy_score"] for o in c_out]))))
    finite_check(self.global_iters, client_loss=c_loss, server_loss=s_loss,
                 client_gradient=[o["grad_finite"] for o in c_out],
                 server_gradient=[o["grad_finite"] for o in s_out])
    return dict(**extra, server_updates=self.server_updates, client_steps=self.client_steps,
                simulated_time_s=self.t_now,
                client_loss=float(np.mean(c_loss)) if len(c_loss) else None,
                server_loss=float(np.mean(s_loss)) if len(s_loss) else None,
                generated_per_update=0.0, stats_fallbacks=0,
                **staleness.columns(staleness.synchronous_model(len(keep)), act_stale),
                **sys.take_row(self.t_now))

  def eval_params(self):
    return self.state.theta, self.state.phi

  def state_dict(self) -> dict:
    return dict(device=self.state,
                host=dict(rng=self.rng.bit_generator.state, t_now=self.t_now,
                          global_iters=self.global_iters, client_steps=self.client_steps,
                          server_updates=self.server_updates,
                          clients=self.ctx.clients.state_dict(),
                          **self.system.state_dict()))

  def load_state_dict(self, d: dict) -> None:
    dev, host = d["device"], d["host"]
    self.state = dev
    self.rng.bit_generator.state = host["rng"]
    self.t_now = float(host["t_now"])
    self.global_iters, self.client_steps = int(host["global_iters"]), int(host["client_steps"])
    self.server_updates = int(host["server_updates"])
    self.ctx.clients.load_state_dict(host["clients"])
    self.system.load_state_dict(host)


@ALGORITHMS.register("minibatch_sfl")
def make_minibatch_sfl(ctx: RunContext) -> SyncSflRunner:
  """MiniBatch-SFL: one server step per local iteration on all C clients' activations."""
  return SyncSflRunner(ctx, grouped=False)


@ALGORITHMS.register("s2fl")
def make_s2fl(ctx: RunContext) -> SyncSflRunner:
  """S2FL: label-balanced client groups, per-group server steps averaged; time-only split."""
  return SyncSflRunner(ctx, grouped=True)
