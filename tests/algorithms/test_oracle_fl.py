"""FedAvg (spec §2.1) and CA2FL (spec §2.3, REF rule and aliasing) against plain oracles
(tests/helpers/oracles/fl_oracle.py).

Digits, cnn_small trained unsplit, K=6 (5 label shards each), C=3, E=3, B=8, clipping active
(optimizer.clip_norm below the observed gradient norms). Both sides start from the runner's
initial model, draw the same clients (the baselines' selection stream) and the same minibatches
(a second ClientData with the same seed); the oracles keep their own clocks (spec §2.0 time
constants of the TimeModel, the §1.9 rate formula).

Compared after every global iteration: the global model (norm-wise relative error per tensor
<= 1e-5; observed ~1e-7), the shared momentum buffer, the simulated time (rtol 1e-12), and every
local step's loss (rtol 1e-5) and minibatch; for CA2FL also every client's cached update h_k
(absolute error <= 1e-5 of the global model's norm, as h_k is a small difference of models).
"""
import dataclasses

import jax
import numpy as np

from gas_jax import context
from gas_jax.data.clients import ClientData
from gas_jax.registry import ALGORITHMS
from helpers.oracles import common, fl_oracle

CLIP = 1.0
REL = 1e-5
SELECT_STREAM = 0x5E1EC7     # the baselines' client-selection numpy stream id


def _config(algorithm, iters):
  return common.small_digits_config(algorithm, iters, CLIP)


def _run_engine(cfg):
  ctx = context.build_context(cfg)
  runner = ALGORITHMS.get(cfg.algorithm)(ctx)
  params0 = common.copy(jax.device_get(runner.state.glob))
  rec = dict(steps=[], iters=[])
  step = runner.calls.step

  def record_step(params, opt, data, idx, mask, *rest):   # rest: iteration, keys, step id
    out = step(params, opt, data, idx, mask, *rest)
    rec["steps"].append(dict(idx=np.asarray(idx)[np.asarray(mask)], loss=float(out[2]["loss"])))
    return out

  runner.calls = dataclasses.replace(runner.calls, step=record_step)
  for _ in range(cfg.num_global_iters):
    runner.run_iteration()
    it = dict(glob=common.copy(jax.device_get(runner.state.glob)),
              trace=common.copy(jax.device_get(common.momentum_trace(runner.state.opt))),
              t_now=runner.t_now)
    if cfg.algorithm == "ca2fl":
      it["caches"] = common.copy(jax.device_get(runner.state.acc.caches))
    rec["iters"].append(it)
  return ctx, params0, rec


def _run_both(algorithm, oracle_cls, iters):
  cfg = _config(algorithm, iters)
  ctx, params0, rec = _run_engine(cfg)
  parts = [ctx.clients.indices(k) for k in range(cfg.clients.num)]
  batches = ClientData(parts, ctx.dataset.y_train, ctx.dataset.num_classes,
                       cfg.clients.batch_size, cfg.seed)
  oracle = oracle_cls(
      common.net_for(ctx.model), params0, ctx.dataset.x_train, ctx.dataset.y_train, parts,
      batches.next_batch, common.clock_from(ctx.time_model),
      np.random.default_rng(np.random.SeedSequence([cfg.seed, SELECT_STREAM])),
      participating=cfg.clients.participating, local_iters=cfg.clients.local_iters,
      lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum,
      weight_decay=cfg.optimizer.weight_decay, clip_norm=cfg.optimizer.clip_norm)
  snaps = []
  for _ in range(iters):
    oracle.run_iteration()
    snap = dict(glob=common.copy(oracle.glob), trace=[b.copy() for b in oracle.opt.buf],
                t_now=oracle.t_now)
    if algorithm == "ca2fl":
      snap["caches"] = [c if c is not None else common.tree_map(np.zeros_like, oracle.glob)
                        for c in oracle.caches]
    snaps.append(snap)
  return cfg, rec, oracle, snaps




def _compare(rec, oracle, snaps):
  assert len(rec["steps"]) == len(oracle.batches) == len(oracle.losses)
  for s, idx in zip(rec["steps"], oracle.batches):
    np.testing.assert_array_equal(s["idx"], idx)
  np.testing.assert_allclose([s["loss"] for s in rec["steps"]], oracle.losses, rtol=1e-5)
  assert len(rec["iters"]) == len(snaps)
  for t, (e, o) in enumerate(zip(rec["iters"], snaps)):
    common.assert_trees_close(e["glob"], o["glob"], what=f"global model t={t}")
    common.assert_trees_close(e["trace"], o["trace"], what=f"momentum t={t}")
    np.testing.assert_allclose(e["t_now"], o["t_now"], rtol=1e-12)
  # clipping active (and not always: both branches of the clip run)
  assert 0 < oracle.opt.clipped_steps() < len(oracle.opt.norms), oracle.opt.norms


def test_fedavg_against_oracle():
  cfg, rec, oracle, snaps = _run_both("fedavg", fl_oracle.FedAvgOracle, 2)
  assert len(oracle.trained) == 2 * cfg.clients.participating
  _compare(rec, oracle, snaps)


def test_ca2fl_against_oracle():
  """REF CA2FL, 3 global iterations: arrivals of re-dispatched clients whose global moved
  between their dispatch and their arrival (the aliasing) do occur, caches persist."""
  cfg, rec, oracle, snaps = _run_both("ca2fl", fl_oracle.Ca2flOracle, 3)
  assert oracle.moved_arrivals >= 1, (oracle.live_arrivals, oracle.arrivals)
  assert len(set(oracle.arrivals)) > cfg.clients.participating
  _compare(rec, oracle, snaps)
  gnorm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree_util.tree_leaves(snaps[-1]["glob"])))
  for t, (e, o) in enumerate(zip(rec["iters"], snaps)):
    for k, h in enumerate(o["caches"]):
      for a, b in zip(jax.tree_util.tree_leaves(e["caches"]), jax.tree_util.tree_leaves(h)):
        np.testing.assert_allclose(np.asarray(a[k], np.float64), b, rtol=0,
                                   atol=1e-5 * gnorm / np.sqrt(b.size) + 1e-9,
                                   err_msg=f"cache of client {k} after t={t}")
