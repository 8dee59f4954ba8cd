"""MiniBatch-SFL (spec §2.4, REF) against the plain oracle (tests/helpers/oracles/sfl_oracle.py).

Digits, cnn_small split, K=6 (5 label shards each), C=3, E=3, B=8, 2 global iterations, clipping
active on both parts (optimizer.clip_norm between the observed gradient norms). Same initial
parameters, clients (the baselines' selection stream) and minibatches (a second ClientData with
the same seed) on both sides; the oracle keeps its own clock.

Compared: every client step's minibatch and loss and every server step's loss (rtol 1e-5), phi
after every server step, and after every global iteration theta_glob, phi, both shared momentum
buffers (norm-wise relative error per tensor <= 1e-5; observed ~1e-7) and the simulated time
(rtol 1e-12).
"""
import dataclasses

import jax
import numpy as np

from gas_jax import context
from gas_jax.data.clients import ClientData
from gas_jax.registry import ALGORITHMS
from helpers.oracles import common, sfl_oracle

T = 2
CLIP = 0.3
REL = 1e-5
SELECT_STREAM = 0x5E1EC7     # the baselines' client-selection numpy stream id


def _config():
  return common.small_digits_config("minibatch_sfl", T, CLIP)


def _run_engine(cfg):
  ctx = context.build_context(cfg)
  runner = ALGORITHMS.get(cfg.algorithm)(ctx)
  init = common.copy(jax.device_get((runner.state.theta, runner.state.phi)))
  rec = dict(client=[], server=[], iters=[])
  client, server = runner.calls.client, runner.calls.server

  def record_client(theta, copt, phi, data, idx, mask, *rest):
    out = client(theta, copt, phi, data, idx, mask, *rest)
    rec["client"].append(dict(idx=np.asarray(idx)[np.asarray(mask)], loss=float(out[2]["loss"])))
    return out

  def record_server(*args):
    out = server(*args)
    rec["server"].append(dict(loss=float(out[2]["loss"]),
                              phi=common.copy(jax.device_get(out[0]))))
    return out

  runner.calls = dataclasses.replace(runner.calls, client=record_client, server=record_server)
  for _ in range(T):
    runner.run_iteration()
    rec["iters"].append(dict(
        theta=common.copy(jax.device_get(runner.state.theta)),
        phi=common.copy(jax.device_get(runner.state.phi)),
        ctrace=common.copy(jax.device_get(common.momentum_trace(runner.state.copt))),
        strace=common.copy(jax.device_get(common.momentum_trace(runner.state.sopt))), t_now=runner.t_now))
  return ctx, init, rec




def test_minibatch_sfl_against_oracle():
  cfg = _config()
  ctx, (theta0, phi0), rec = _run_engine(cfg)
  parts = [ctx.clients.indices(k) for k in range(cfg.clients.num)]
  batches = ClientData(parts, ctx.dataset.y_train, ctx.dataset.num_classes,
                       cfg.clients.batch_size, cfg.seed)
  oracle = sfl_oracle.MiniBatchSflOracle(
      common.net_for(ctx.model), theta0, phi0, ctx.dataset.x_train, ctx.dataset.y_train, parts,
      batches.next_batch, common.clock_from(ctx.time_model),
      np.random.default_rng(np.random.SeedSequence([cfg.seed, SELECT_STREAM])),
      participating=cfg.clients.participating, local_iters=cfg.clients.local_iters,
      batch_size=cfg.clients.batch_size, lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum,
      weight_decay=cfg.optimizer.weight_decay, clip_norm=cfg.optimizer.clip_norm)
  snaps = []
  for _ in range(T):
    oracle.run_iteration()
    snaps.append(dict(theta=common.copy(oracle.theta), phi=common.copy(oracle.phi),
                      ctrace=[b.copy() for b in oracle.copt.buf],
                      strace=[b.copy() for b in oracle.sopt.buf], t_now=oracle.t_now))
  # the path: both parts clipped (the client part on some steps only: both branches of the
  # clip run; observed norms: client ~0.2-0.4, server 0.32-0.71); T rounds of C*E steps
  assert 0 < oracle.copt.clipped_steps() < len(oracle.copt.norms), oracle.copt.norms
  assert oracle.sopt.clipped_steps() > 0, oracle.sopt.norms
  assert len(oracle.client_losses) == T * cfg.clients.participating * cfg.clients.local_iters
  assert len(rec["client"]) == len(oracle.batches)
  for c, idx in zip(rec["client"], oracle.batches):
    np.testing.assert_array_equal(c["idx"], idx)
  np.testing.assert_allclose([c["loss"] for c in rec["client"]], oracle.client_losses, rtol=1e-5)
  np.testing.assert_allclose([s["loss"] for s in rec["server"]], oracle.server_losses, rtol=1e-5)
  assert len(rec["server"]) == len(oracle.phis) == T * cfg.clients.local_iters
  for u, (s, phi) in enumerate(zip(rec["server"], oracle.phis)):
    common.assert_trees_close(s["phi"], phi, what=f"phi after server step {u}")
  for t, (e, o) in enumerate(zip(rec["iters"], snaps)):
    common.assert_trees_close(e["theta"], o["theta"], what=f"theta_glob t={t}")
    common.assert_trees_close(e["phi"], o["phi"], what=f"phi t={t}")
    common.assert_trees_close(e["ctrace"], o["ctrace"], what=f"client momentum t={t}")
    common.assert_trees_close(e["strace"], o["strace"], what=f"server momentum t={t}")
    np.testing.assert_allclose(e["t_now"], o["t_now"], rtol=1e-12)
