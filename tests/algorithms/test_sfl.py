"""SFL baselines (spec §2.4-2.5): S2FL's grouping search on hand-computed label counts, and one
MiniBatch-SFL / S2FL round against an independent numpy recomputation of the whole sequence."""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import baseline_toys as toys
from gas_jax.algorithms import sfl
from gas_jax import config as config_lib
from gas_jax.config import ConfigError
from gas_jax.data.clients import ClientData
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner, sfl_runner

tree_map = jax.tree_util.tree_map


def test_group_distance_and_objective_hand_values():
  lc = np.array([[8, 0], [0, 2], [4, 0], [0, 6]])
  # {0,1}: (8,2)/10 -> sqrt(0.3^2 + 0.3^2); {2,3}: (4,6)/10 -> sqrt(0.1^2 + 0.1^2).
  assert math.isclose(sfl.group_distance(lc, [0, 1]), math.sqrt(0.18), rel_tol=1e-12)
  assert math.isclose(sfl.group_distance(lc, [2, 3]), math.sqrt(0.02), rel_tol=1e-12)
  assert math.isclose(sfl.group_objective(lc, [[0, 1], [2, 3]]),
                      (math.sqrt(0.18) + math.sqrt(0.02)) / 2, rel_tol=1e-12)


def test_s2fl_grouping_unequal_counts():
  """Start [[0,1],[2,3]] (objective 0.2828). Pass 1, group 0, client 0: swap with 2 gives
  [1,2] (4,2) and [3,0] (8,6): (0.2357 + 0.1010)/2 = 0.1684; swap with 3 gives 0.7071 -> apply
  the swap with 2 (swapped members appended) and move to group 1, where client 2 has left and
  client 3's swaps give 0.2828 / 0.7071. Pass 2 changes nothing."""
  lc = np.array([[8, 0], [0, 2], [4, 0], [0, 6]])
  assert sfl.s2fl_groups([0, 1, 2, 3], lc, 2, 100) == [[1, 2], [3, 0]]
  assert sfl.s2fl_groups([0, 1, 2, 3], lc, 2, 0) == [[0, 1], [2, 3]]


def test_s2fl_grouping_first_best_swap_and_order():
  """Two pure-label pairs: client 0's swaps with 2 and with 3 both reach 0; the first (2) wins.
  Then client 3 (group 1) finds no strictly better swap."""
  lc = np.array([[10, 0], [10, 0], [0, 10], [0, 10]])
  assert sfl.s2fl_groups([0, 1, 2, 3], lc) == [[1, 2], [3, 0]]
  # Selection order matters (contiguous initial groups): [3, 1 | 0, 2] is already balanced.
  assert sfl.s2fl_groups([3, 1, 0, 2], lc) == [[3, 1], [0, 2]]


@pytest.mark.parametrize("seed", range(4))
def test_s2fl_grouping_is_a_swap_local_optimum(seed):
  rng = np.random.default_rng(seed)
  lc = rng.integers(0, 30, size=(12, 5)) * (rng.uniform(size=(12, 5)) < 0.4)
  lc[:, 0] += 1
  order = list(rng.permutation(12)[:10])
  groups = sfl.s2fl_groups(order, lc, 2, 100)
  assert sorted(groups[0] + groups[1]) == sorted(order) and len(groups[0]) == 5
  best = sfl.group_objective(lc, groups)
  for c, d in itertools.product(groups[0], groups[1]):
    g0 = [x for x in groups[0] if x != c] + [d]
    g1 = [x for x in groups[1] if x != d] + [c]
    assert sfl.group_objective(lc, [g0, g1]) >= best
  assert best <= sfl.group_objective(lc, [order[:5], order[5:]])


def _sgd(w, g, buf, lr=0.01, clip=10.0):
  """REF optimiser on one part: clip by global norm, + 5e-4 w, momentum 0.9 (buf=None: first)."""
  norm = np.sqrt(sum(np.sum(a ** 2) for a in jax.tree_util.tree_leaves(g)))
  scale = min(1.0, clip / norm)
  d = tree_map(lambda a, p: a * scale + 5e-4 * p, g, w)
  buf = d if buf is None else tree_map(lambda m, a: 0.9 * m + a, buf, d)
  return tree_map(lambda p, m: p - lr * m, w, buf), buf


def _f64(tree):
  return tree_map(lambda a: np.asarray(a, np.float64), tree)


@functools.lru_cache(maxsize=None)
def _reference_fns(model):
  """Plain-CE gradients written out independently of gas_jax.losses / the SFL builders."""
  def ce(logits, y, m):
    lp = jax.nn.log_softmax(logits)
    return -jnp.sum(lp[jnp.arange(len(y)), y] * m) / jnp.sum(m)

  client_grad = jax.jit(jax.grad(lambda th, ph, x, y, m: ce(
      model.server_apply(ph, model.client_apply(th, x)), y, m)))
  server_grad = jax.jit(jax.grad(lambda ph, a, y, m: ce(model.server_apply(ph, a), y, m)))
  return client_grad, server_grad, jax.jit(model.client_apply)


@pytest.mark.parametrize("method, participating", [("minibatch_sfl", 2), ("s2fl", 4)])
def test_one_round_equals_numpy_recomputation(method, participating):
  cfg = toys.config(method, num=4, participating=participating, local_iters=2)
  ctx = toys.context(cfg, sizes=(6, 5, 9, 7))
  model = ctx.model
  runner = ALGORITHMS.get(method)(ctx)
  theta0, phi = _f64(runner.state.theta), _f64(runner.state.phi)
  info = runner.run_iteration()

  # Independent replay: same selection stream, fresh batch iterators with the same seed.
  selected = [int(k) for k in fl_runner.selection_rng(cfg.seed).choice(4, participating,
                                                                         replace=False)]
  groups = (sfl.s2fl_groups(selected, ctx.clients.label_counts, 2, 100) if method == "s2fl"
            else [selected])
  clients = ClientData([ctx.clients.indices(k) for k in range(4)], np.asarray(ctx.data["y"]),
                       toys.M, cfg.clients.batch_size, cfg.seed)
  x_all, y_all = np.asarray(ctx.data["x"]), np.asarray(ctx.data["y"])
  thetas = {k: theta0 for k in selected}
  cbuf = sbuf = None
  f32 = lambda t: tree_map(jnp.float32, t)  # noqa: E731

  client_grad, server_grad, forward = _reference_fns(model)

  for _ in range(cfg.clients.local_iters):
    phi_snap, new_phis = phi, []
    for group in groups:
      acts, ys, ms = [], [], []
      for k in group:
        idx, mask = clients.next_batch(k)
        x, y = x_all[idx], y_all[idx]
        acts.append(forward(f32(thetas[k]), x))
        ys.append(y)
        ms.append(mask)
        g = _f64(client_grad(f32(thetas[k]), f32(phi_snap), x, y, mask))
        thetas[k], cbuf = _sgd(thetas[k], g, cbuf)
      a, y, m = jnp.concatenate(acts), np.concatenate(ys), np.concatenate(ms)
      g = _f64(server_grad(f32(phi_snap), a, y, m))
      phi_g, sbuf = _sgd(phi_snap, g, sbuf)        # server momentum carries across groups
      new_phis.append(phi_g)
    phi = tree_map(lambda *ps: sum(ps) / len(ps), *new_phis)
  sizes = ctx.clients.sizes[selected].astype(np.float64)
  p = sizes / sizes.sum()
  theta = tree_map(lambda *ts: sum(w * t for w, t in zip(p, ts)), *[thetas[k] for k in selected])

  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                         _f64(runner.state.theta), theta)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                         _f64(runner.state.phi), phi)
  assert info["client_steps"] == participating * cfg.clients.local_iters
  assert info["server_updates"] == cfg.clients.local_iters
  # The momentum buffers really moved the parameters (not a trivially passing comparison).
  assert not np.allclose(_f64(runner.state.phi)["fc2"]["bias"], _f64(model.init(
      jax.random.fold_in(jax.random.key(0), 0))[1])["fc2"]["bias"])


@pytest.mark.parametrize("groups", [0, 3, True])
def test_bad_s2fl_groups(groups):
  cfg = toys.config("s2fl", num=4, participating=2, s2fl__num_groups=groups)
  with pytest.raises(ConfigError, match="^s2fl.num_groups"):
    config_lib.validate(cfg)
