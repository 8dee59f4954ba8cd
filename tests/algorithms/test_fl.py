"""FL baselines (spec §2.1-2.3): aggregation rules on hand-computed toys, the local step, REF
CA2FL's aliasing and FedBuff's genuine staleness in the event loop."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import baseline_toys as toys
from gas_jax.algorithms import fl
from gas_jax import config as config_lib
from gas_jax.config import ConfigError
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner

tree_map = jax.tree_util.tree_map


def _t(a, b):
  """A two-leaf toy 'model'."""
  return dict(w=jnp.array([a, -a], jnp.float32), b=jnp.array(b, jnp.float32))


def _close(got, want, atol=1e-6):
  chex.assert_trees_all_close(got, want, atol=atol, rtol=0)


def test_fedavg_data_weights():
  np.testing.assert_allclose(fl.fedavg_weights([30, 10, 60]), [0.3, 0.1, 0.6], atol=1e-7)
  got = fl.fedavg_aggregate([_t(1.0, 10.0), _t(2.0, 20.0), _t(4.0, 0.0)], [30, 10, 60])
  # w: 0.3*1 + 0.1*2 + 0.6*4 = 2.9 ; b: 0.3*10 + 0.1*20 = 5.0
  _close(got, _t(2.9, 5.0))


def test_fedbuff_ref_flush_averages_models():
  acc = fl.zeros_like(_t(0.0, 0.0))
  acc = fl.fedbuff_ref_add(acc, _t(3.0, 1.0), 2)      # client A's final model
  acc = fl.fedbuff_ref_add(acc, _t(2.0, 5.0), 2)      # client B (stale start irrelevant)
  _close(acc, _t(2.5, 3.0))                           # replaces the global


@pytest.mark.parametrize("staleness, lr, want", [
    ("none", 1.0, 3.0),                                # 1 + (2 + 2) / 2
    ("none", 0.5, 2.0),                                # 1 + 0.5 * 2
    ("sqrt", 1.0, 1.0 + (2.0 + 2.0 / np.sqrt(2.0)) / 2.0)])
def test_fedbuff_paper_flush(staleness, lr, want):
  glob = _t(1.0, 0.0)
  acc = fl.zeros_like(glob)
  # A started from the current global (tau 0): 1 -> 3; B from a model one update old: 0 -> 2.
  acc = fl.fedbuff_paper_add(acc, _t(1.0, 0.0), _t(3.0, 1.0), 0, staleness)
  acc = fl.fedbuff_paper_add(acc, _t(0.0, 0.0), _t(2.0, 1.0), 1, staleness)
  s = 1.0 if staleness == "none" else 1.0 / np.sqrt(2.0)
  _close(fl.fedbuff_paper_flush(glob, acc, 2, lr), _t(want, lr * (1.0 + s) / 2.0), atol=1e-5)


def _ca2fl_windows(flush):
  """K=3 clients. Window 1: client 0 (Delta 1), client 1 (Delta 2). Window 2: client 2
  (Delta -1), client 0 again (Delta 3)."""
  glob = _t(0.0, 0.0)
  st = fl.ca2fl_init(glob, 3)
  outs = []
  for arrivals in ([(0, 1.0), (1, 2.0)], [(2, -1.0), (0, 3.0)]):
    for k, d in arrivals:
      st = fl.ca2fl_arrive(st, k, _t(d, d))
    glob, st = flush(glob, st)
    outs.append((glob, st))
  return outs


def test_ca2fl_ref_cache_rule():
  p = fl.fedavg_weights([10, 30, 60])                 # P_k over ALL K clients
  (g1, s1), (g2, s2) = _ca2fl_windows(lambda g, s: fl.ca2fl_ref_flush(g, s, p))
  _close(g1, _t(0.7, 0.7))                             # 0.1*1 + 0.3*2
  _close(g2, _t(1.0, 1.0), atol=1e-5)                  # 0.7 + 0.1*3 + 0.3*2 + 0.6*(-1)
  _close(s2.caches, dict(w=jnp.array([[3, -3], [2, -2], [-1, 1]], jnp.float32),
                         b=jnp.array([3, 2, -1], jnp.float32)))


@pytest.mark.parametrize("eta, want1, want2", [(1.0, 1.5, 3.0), (0.5, 0.75, 1.5)])
def test_ca2fl_paper_rule(eta, want1, want2):
  # Window 1: hbar = 0, mean(Delta - h_old) = (1 + 2) / 2 -> v = 1.5; then hbar = (1+2+0)/3 = 1.
  # Window 2: (-1 - 0) + (3 - 1) = 1 -> v = 1 + 1/2 = 1.5.
  (g1, s1), (g2, s2) = _ca2fl_windows(lambda g, s: fl.ca2fl_paper_flush(g, s, eta))
  _close(g1, _t(want1, want1), atol=1e-6)
  _close(s1.hbar, _t(1.0, 1.0), atol=1e-6)
  _close(g2, _t(want2, want2), atol=1e-5)
  _close(s2.hbar, _t(4.0 / 3.0, 4.0 / 3.0), atol=1e-6)
  assert int(s2.count) == 0


def test_local_step_clips_full_model_and_shares_momentum():
  """Two steps: g <- clip(g, c) over (client, server) jointly; buf = 0.9 buf + g + wd w."""
  model = toys.model()
  hp = fl.FLHParams(lr=0.1, clip_norm=0.2)
  algo = fl.build(model, hp)
  params, opt = algo.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batches = [dict(x=rng.normal(size=(4,) + toys.SHAPE).astype(np.float32),
                  y=np.array([0, 1, 2, 1], np.int32), mask=np.array([1, 1, 1, 0], bool),
                  global_iter=np.int32(0)) for _ in range(2)]

  @jax.jit
  @jax.grad
  def grad(p, b):
    ce = -jax.nn.log_softmax(model.full_apply(p, b["x"]))[jnp.arange(4), b["y"]]
    return jnp.sum(ce * b["mask"]) / 3.0

  w = tree_map(lambda a: np.asarray(a, np.float64), params)
  buf = None
  step = jax.jit(algo.local_step)
  for b in batches:
    g = tree_map(lambda a: np.asarray(a, np.float64),
                 grad(tree_map(jnp.float32, w), b))
    norm = np.sqrt(sum(np.sum(a ** 2) for a in jax.tree_util.tree_leaves(g)))
    assert norm > 0.2                                   # clipping is active
    g = tree_map(lambda a, p: a * 0.2 / norm + 5e-4 * p, g, w)
    buf = g if buf is None else tree_map(lambda m, a: 0.9 * m + a, buf, g)
    w = tree_map(lambda p, m: p - 0.1 * m, w, buf)
    params, opt, out = step(params, opt, b, jax.random.key(1))
    assert bool(out["grad_finite"])
  chex.assert_trees_all_close(tree_map(np.asarray, params), w, atol=2e-5, rtol=1e-4)


class _Recorder:
  """Replaces local training: records (client, start) and returns start + 1 everywhere."""

  def __init__(self, runner):
    self.runner, self.calls = runner, []

  def __call__(self, k, start):
    self.calls.append((k, start, self.runner.state.glob))
    return tree_map(lambda p: p + 1.0, start)


@pytest.mark.parametrize("method, true_staleness", [
    ("ca2fl", False), ("ca2fl", True), ("fedbuff", False)])
def test_async_start_models(method, true_staleness):
  """REF CA2FL: clients dispatched after the first C train from the live global at arrival;
  with ca2fl.true_staleness (and always in FedBuff) they train from their dispatch copy.

  Every local training's start model is checked by identity against one recorded
  independently of the runner's aliasing logic: the global model at the moment the client was
  dispatched (w0 for the initial C; for the others the global when `clock.replace` drew them),
  or, under REF CA2FL aliasing, the live global at its arrival for all but the initial C.
  K=4, C=3: some clients dispatched after the initial C see a flush before they arrive, where
  the two rules differ (with C=2 every such client arrives before the next flush)."""
  cfg = toys.config(method, num=4, participating=3, ca2fl__true_staleness=true_staleness)
  runner = ALGORITHMS.get(method)(toys.context(cfg))
  rec = _Recorder(runner)
  g0 = runner.state.glob
  dispatched = {int(k): g0 for k in runner.clock.active}     # client -> global at dispatch
  initial = set(dispatched)
  replace = runner.clock.replace
  trained_initial = set()

  def spy_replace(slot):
    j = replace(slot)
    dispatched[j] = runner.state.glob
    return j

  runner.clock.replace = spy_replace
  alias = method == "ca2fl" and not true_staleness
  checked, moved_on = [], 0

  def check_then_train(k, start):    # checked at the call (a client may be re-dispatched later)
    nonlocal moved_on
    first_initial = k in initial and k not in trained_initial
    trained_initial.add(k)
    want = runner.state.glob if alias and not first_initial else dispatched[k]
    checked.append(start is want)
    moved_on += (not first_initial) and dispatched[k] is not runner.state.glob
    return rec(k, start)

  runner.local_training = check_then_train
  for _ in range(4):
    runner.run_iteration()
  assert len(rec.calls) == 12 and all(checked), checked
  assert moved_on >= 1     # a non-initial client whose dispatch copy is older than the global
  if alias:   # the check above was exercised on models that moved on from w0
    assert sum(start is live and live is not g0 for _, start, live in rec.calls) >= 4
  else:       # somebody trained from a copy older than the live global (genuine staleness)
    assert any(start is not live for _, start, live in rec.calls)
    assert any(not np.allclose(np.asarray(s[1]["fc2"]["bias"]), np.asarray(g[1]["fc2"]["bias"]))
               for _, s, g in rec.calls)


@pytest.mark.parametrize("method", ["fedbuff", "ca2fl"])
def test_ref_rules_end_to_end_with_unit_updates(method):
  """Every local training adds exactly 1. FedBuff REF: the new global is the mean of the C
  buffered (start + 1) models; CA2FL REF: the global grows by sum_k P_k over every client seen so
  far (all caches hold 1, kept while inactive)."""
  cfg = toys.config(method, num=4, participating=2)
  ctx = toys.context(cfg)
  runner = ALGORITHMS.get(method)(ctx)
  rec = _Recorder(runner)
  runner.local_training = rec
  p = ctx.clients.sizes / ctx.clients.sizes.sum()
  leaf = lambda tree: np.asarray(tree[1]["fc2"]["bias"], np.float64)  # noqa: E731
  seen, base, total = set(), leaf(runner.state.glob), 0.0
  for _ in range(3):
    n = len(rec.calls)
    runner.run_iteration()
    window = rec.calls[n:]
    assert len(window) == 2
    if method == "fedbuff":
      want = np.mean([leaf(start) + 1.0 for _, start, _ in window], 0)
    else:
      seen |= {k for k, _, _ in window}
      total += sum(p[k] for k in seen)
      want = base + total
    np.testing.assert_allclose(leaf(runner.state.glob), want, atol=1e-5)


@pytest.mark.parametrize("field, value", [
    ("fedbuff__rule", "avg"), ("fedbuff__staleness", "linear"), ("fedbuff__server_lr", 0.0)])
def test_bad_fedbuff_config(field, value):
  cfg = toys.config("fedbuff", **{field: value})
  with pytest.raises(ConfigError, match="^" + field.replace("__", ".")):
    config_lib.validate(cfg)
