"""`clients.aggregation=data_size`, `clients.momentum=per_client` and `optimizer.decay=sqrt`
through the real runners (GAS and FedAvg), against runs reconstructed by hand in float64 numpy.

GAS (toy context, 2 global iterations, generation on): every client step is replayed from the
runner's own inputs (slot, minibatch indices, mask, current phi) with a hand-written loss
CE(logits + log p_k, y), its gradient, clipping, weight decay, momentum and learning rate:
- per_client: one momentum buffer per slot, reset when the slot uploads (a new client joins);
- sqrt: every step of global iteration t (1-based) uses eta_0 / sqrt(t); the server's update
  equals a constant-lr server update with eta_0 / sqrt(t) from the same state and key;
- data_size: theta_glob = sum_k |D_k| theta_k / sum_k |D_k| over the uploads, |D_k| counted
  from the partition.
The runner's theta_glob and in-flight slots must equal the reconstruction; reconstructions with
each option flipped (uniform weights, shared momentum, constant lr) must not.
FedAvg (per_client + sqrt; it always weights by |D_k|, REF): replayed from a twin of the
clients' batch iterators and the baselines' selection stream.
"""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import gas_toys
from gas_jax import engine
from gas_jax.algorithms import gas
from gas_jax.data.clients import ClientData
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner

tree_map = jax.tree_util.tree_map
LR, WD, MOMENTUM, CLIP = 0.05, 5e-4, 0.9, 10.0
ITERS = 2


def _f64(tree):
  return tree_map(lambda a: np.asarray(a, np.float64), tree)


def _norm(tree):
  return np.sqrt(sum(np.sum(np.square(a)) for a in jax.tree_util.tree_leaves(tree)))


class _SGD:
  """REF's update in float64: g <- clip(g); g <- g + wd w; buf <- 0.9 buf + g; w <- w - lr buf."""

  def __init__(self, per_client):
    self.per_client, self.bufs = per_client, {}

  def step(self, key, w, g, lr):
    g = tree_map(lambda a: a * min(1.0, CLIP / _norm(g)), g)
    g = tree_map(lambda a, p: a + WD * p, g, w)
    key = key if self.per_client else "shared"
    buf = self.bufs.get(key)
    buf = g if buf is None else tree_map(lambda b, a: MOMENTUM * b + a, buf, g)
    self.bufs[key] = buf
    return tree_map(lambda p, b: p - lr * b, w, buf)

  def reset(self, key):
    if self.per_client:
      self.bufs.pop(key, None)


def _gas_replay(events, theta0, weights, per_client, sqrt_decay, grad_fn):
  """theta_glob and slots after the recorded client events, rebuilt in float64."""
  sgd = _SGD(per_client)
  slots = {}
  glob, acc, wsum = theta0, None, 0.0
  for it, ev, phi in events:
    s = int(ev["slot"])
    theta = slots.get(s, theta0)
    lr = LR / np.sqrt(it + 1.0) if sqrt_decay else LR
    g = _f64(grad_fn(tree_map(jnp.float32, theta), phi, ev))
    theta = sgd.step(s, theta, g, lr)
    if bool(ev["upload"]):
      w = weights[int(ev["client"])]
      acc = tree_map(lambda p: w * p, theta) if acc is None else \
          tree_map(lambda a, p: a + w * p, acc, theta)
      wsum += w
      if bool(ev["aggregate"]):
        glob, acc, wsum = tree_map(lambda a: a / wsum, acc), None, 0.0
      theta = glob
      sgd.reset(s)
    slots[s] = theta
  return glob, slots


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_gas_runner_data_size_per_client_sqrt():
  cfg = gas_toys.config(clients__aggregation="data_size", clients__momentum="per_client",
                        optimizer__decay="sqrt", optimizer__lr=LR)
  ctx = gas_toys.context(cfg)
  runner = ALGORITHMS.get("gas")(ctx)
  model = ctx.model
  parts, labels, x_all = gas_toys.parts_and_labels()
  sizes = np.array([len(p) for p in parts], np.float64)            # |D_k|
  counts = np.stack([np.bincount(labels[p], minlength=gas_toys.M) for p in parts])
  log_prior = jnp.asarray(np.log(counts / sizes[:, None] + 1e-12), jnp.float32)
  x_all, labels = jnp.asarray(x_all), jnp.asarray(labels)

  @jax.jit
  def grad_fn(theta, phi, ev):
    x, y = x_all[ev["idx"]], labels[ev["idx"]]
    mask = jnp.asarray(ev["mask"], jnp.float32)

    def loss(th):
      z = model.server_apply(phi, model.client_apply(th, x)) + log_prior[ev["client"]]
      ce = -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1)[:, 0]
      return jnp.sum(ce * mask) / jnp.sum(mask)
    return jax.grad(loss)(theta)

  events, servers, it = [], [], 0
  client_run, server_run = runner.calls.client, runner.calls.server

  def client_spy(cs, buf, phi, data, ev, key):
    events.append((it, dict(ev), _f64(phi)))
    return client_run(cs, buf, phi, data, ev, key)

  def server_spy(ss, buf, global_iter, key, **kw):
    before = tree_map(jnp.copy, ss)                  # server_run donates the state
    ss, out = server_run(ss, buf, global_iter, key, **kw)
    servers.append((it, before, tree_map(jnp.copy, buf), global_iter, key, kw,
                    tree_map(jnp.copy, ss.server)))
    return ss, out

  runner.calls = dataclasses.replace(runner.calls, client=client_spy, server=server_spy)
  theta0 = _f64(runner.state.client.global_client)
  for it in range(ITERS):
    runner.run_iteration()
  assert sum(bool(e["aggregate"]) for _, e, _ in events) == ITERS
  uploads = [int(e["client"]) for _, e, _ in events if e["upload"]]
  assert len(set(sizes[uploads])) > 1                 # |D_k| differ among the uploaders

  glob, slots = _gas_replay(events, theta0, sizes, True, True, grad_fn)
  tol = dict(rtol=2e-4, atol=2e-6)
  chex.assert_trees_all_close(_f64(runner.state.client.global_client), glob, **tol)
  for s, theta in slots.items():
    chex.assert_trees_all_close(_f64(tree_map(lambda p: p[s], runner.state.client.slots)),
                                theta, **tol)
  # Each option changes the result (the same recorded phi's, one option flipped).
  for flipped in [(np.ones_like(sizes), True, True), (sizes, False, True), (sizes, True, False)]:
    other, _ = _gas_replay(events, theta0, *flipped, grad_fn)
    diff = max(np.max(np.abs(a - b)) for a, b in zip(jax.tree_util.tree_leaves(other),
                                                     jax.tree_util.tree_leaves(glob)))
    assert diff > 1e-4, (flipped[1:], diff)

  # The server's steps: phi' = phi - lr u with u the optimiser's output, which does not
  # depend on lr (it is applied last), so a constant-lr (eta_0) server update from the same
  # state and key gives u = (phi - phi'_ref) / eta_0 and phi' = phi - eta_0 / sqrt(t) u.
  assert {t for t, *_ in servers} == set(range(ITERS))
  ref = engine.make_server_runner(gas.build(model, dataclasses.replace(
      runner.algo.hparams, lr_decay="none")))
  for t, before, buf, global_iter, key, kw, phi in servers:
    assert int(global_iter) == t
    phi0 = _f64(before.server)
    const, _ = ref(before, buf, np.int32(0), key, **kw)
    want = tree_map(lambda p0, p1: p0 - (p0 - p1) / np.sqrt(t + 1.0), phi0, _f64(const.server))
    chex.assert_trees_all_close(_f64(phi), want, rtol=1e-5, atol=1e-7)
    if t > 0:   # and it is not the constant-lr step
      leaves = zip(jax.tree_util.tree_leaves(_f64(phi)),
                   jax.tree_util.tree_leaves(_f64(const.server)))
      assert max(np.max(np.abs(a - b)) for a, b in leaves) > 1e-6


def test_fedavg_runner_per_client_sqrt_data_size():
  """FedAvg with per_client momentum and sqrt decay: each selected client trains E steps from
  theta_glob with a fresh momentum buffer at eta_0 / sqrt(t); the new global is the
  |D_k|-weighted mean (FedAvg's rule; clients.aggregation=data_size changes nothing there)."""
  from helpers import baseline_toys as toys     # noqa: PLC0415
  cfg = toys.config("fedavg", clients__momentum="per_client", optimizer__decay="sqrt",
                    optimizer__lr=LR, clients__aggregation="data_size")
  ctx = toys.context(cfg)
  runner = ALGORITHMS.get("fedavg")(ctx)
  model = ctx.model
  sizes = np.array([6, 5, 9, 7], np.float64)          # toys.context's partition
  x_all, y_all = ctx.data["x"], ctx.data["y"]
  parts = [ctx.clients.indices(k) for k in range(4)]     # before any batch is drawn
  glob0 = _f64(runner.state.glob)

  @jax.jit
  def grad_fn(params, idx, mask):
    mask = mask.astype(jnp.float32)

    def loss(p):
      ce = -jnp.take_along_axis(jax.nn.log_softmax(model.full_apply(p, x_all[idx])),
                                y_all[idx][:, None], 1)[:, 0]
      return jnp.sum(ce * mask) / jnp.sum(mask)
    return jax.grad(loss)(params)

  def replay(per_client, sqrt_decay):
    """The run rebuilt: a twin of the clients' batch iterators, the baselines' selection
    stream, float64 SGD."""
    glob = glob0
    sgd = _SGD(per_client)
    clients = ClientData(parts, np.asarray(y_all), toys.M, cfg.clients.batch_size, cfg.seed)
    rng = fl_runner.selection_rng(cfg.seed)
    for t in range(ITERS):
      lr = LR / np.sqrt(t + 1.0) if sqrt_decay else LR
      selected = rng.choice(cfg.clients.num, cfg.clients.participating, replace=False)
      models = []
      for k in selected:
        sgd.reset("k")
        w = glob
        for _ in range(cfg.clients.local_iters):
          idx, mask = clients.next_batch(int(k))
          w = sgd.step("k", w, _f64(grad_fn(tree_map(jnp.float32, w), idx, mask)), lr)
        models.append(w)
      p = sizes[selected] / sizes[selected].sum()
      glob = tree_map(lambda *ms: sum(pi * m for pi, m in zip(p, ms)), *models)
    return glob

  for _ in range(ITERS):
    runner.run_iteration()
  want = replay(True, True)
  chex.assert_trees_all_close(_f64(runner.state.glob), want, rtol=2e-4, atol=2e-6)
  for flipped in [(False, True), (True, False)]:
    other = replay(*flipped)
    diff = max(np.max(np.abs(a - b)) for a, b in zip(jax.tree_util.tree_leaves(other),
                                                     jax.tree_util.tree_leaves(want)))
    assert diff > 1e-4, (flipped, diff)
