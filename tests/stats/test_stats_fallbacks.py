"""Every fallback of the Gaussian statistics' sampler is counted and reported, never silent.

REF raises when no jitter of its ladder makes a covariance factorisable (spec §1.5); we fall back
to a diagonal factor (`stats.cholesky_with_jitter`) and count it: `refresh_factors(...,
report=True)` -> the server update's metrics["stats_fallbacks"] -> the GAS runner's row
(metrics.jsonl `stats_fallbacks`) and an absl warning naming the count. The diagonal statistics'
clamp of a negative variance is counted the same way; the square-root factor has no fallback.
Fallbacks are forced with covariances holding NaN / inf or hugely indefinite ones; healthy
cases report 0. Expected counts are derived by hand (which labels are needed and stale).
"""
import dataclasses
import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import gas_toys
from gas_jax import stats
from gas_jax.algorithms import gas
from gas_jax.registry import ALGORITHMS

_chol = jax.jit(lambda c: stats.cholesky_with_jitter(c, report=True))
_refresh = jax.jit(lambda s, n: stats.refresh_factors(s, n, report=True))


def _spd(d, seed):
  a = np.random.default_rng(seed).normal(size=(d, d))
  return a @ a.T / d + np.eye(d)


@pytest.mark.parametrize("case", ["nan", "inf", "indefinite", "beyond_ladder"])
def test_cholesky_fallback_is_reported(case):
  d = 6
  cov = _spd(d, 0)
  if case == "nan":
    cov[1, 2] = cov[2, 1] = np.nan
  elif case == "inf":
    cov[3, 3] = np.inf
  elif case == "indefinite":
    cov = -1e34 * np.eye(d)                     # float32 jitter tops out at 1e32
  else:
    cov[4, 4] = -1e33
  l, fell_back = _chol(jnp.asarray(cov, jnp.float32))
  assert bool(fell_back)
  if case in ("indefinite", "beyond_ladder"):   # the substitute: sqrt(max(diag, 0) + 1e-6)
    want = np.sqrt(np.clip(np.diag(cov), 0, None) + 1e-6)
    np.testing.assert_allclose(np.asarray(l), np.diag(want), rtol=1e-6)
  # Without report the same factor comes back alone.
  chex.assert_trees_all_equal(jax.jit(stats.cholesky_with_jitter)(jnp.asarray(cov, jnp.float32)),
                              l)


def test_healthy_cholesky_reports_no_fallback():
  cov = _spd(6, 1)
  l, fell_back = _chol(jnp.asarray(cov, jnp.float32))
  assert not bool(fell_back)
  np.testing.assert_allclose(np.asarray(l, np.float64), np.linalg.cholesky(cov), rtol=1e-5,
                             atol=1e-6)
  singular = np.zeros((6, 6))                   # needs jitter, but the ladder succeeds
  l, fell_back = _chol(jnp.asarray(singular, jnp.float32))
  assert not bool(fell_back) and np.all(np.isfinite(np.asarray(l)))


def _cholesky_stats(m=4, d=8):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, d))
  y = np.arange(40) % m
  return stats.merge_jit(stats.init(m, d), jnp.asarray(x, jnp.float32), jnp.asarray(y),
                         jnp.ones(40, jnp.float32))


def test_refresh_counts_each_fallback_once():
  """Labels 1 (NaN) and 2 (indefinite) fail, label 3 too but it is not needed: 2 fallbacks;
  refreshing again refactorises nothing (the factors are cached): 0; healthy stats: 0."""
  st = _cholesky_stats()
  d = st.dim
  st_bad = st.replace(scatter=st.scatter.at[1, 0, 1].set(jnp.nan).at[1, 1, 0].set(jnp.nan)
                      .at[2].set(-1e36 * jnp.eye(d)).at[3].set(-1e36 * jnp.eye(d)))
  need = jnp.array([True, True, True, False])
  st2, n = _refresh(st_bad, need)
  assert int(n) == 2
  np.testing.assert_array_equal(np.asarray(st2.chol_fresh), [True, True, True, False])
  _, n_again = _refresh(st2, jnp.ones(4, bool).at[3].set(False))
  assert int(n_again) == 0
  healthy, n_ok = _refresh(st, jnp.ones(4, bool))
  assert int(n_ok) == 0
  for y in range(4):
    cov = np.asarray(stats.covariance(st)[y], np.float64)
    np.testing.assert_allclose(np.asarray(healthy.chol[y], np.float64), np.linalg.cholesky(cov),
                               rtol=1e-4, atol=1e-5)


def test_diag_negative_variance_is_counted_and_sqrt_never_falls_back():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(30, 5)), jnp.float32)
  y = jnp.asarray(np.arange(30) % 3)
  w = jnp.ones(30, jnp.float32)
  diag = stats.merge_jit(stats.init_diag(3, 5), x, y, w)
  assert int(_refresh(diag, jnp.ones(3, bool))[1]) == 0
  bad = diag.replace(var=diag.var.at[0, 2].set(-4.0))
  assert int(_refresh(bad, jnp.ones(3, bool))[1]) == 1
  assert int(_refresh(bad, jnp.array([False, True, True]))[1]) == 0   # label 0 not needed
  sqrt = stats.merge_jit(stats.init_sqrt(3, 5, stats.sqrt_capacity(5, 30, 3, 16)), x, y, w)
  st, n = stats.refresh_factors(sqrt, jnp.ones(3, bool), report=True)
  assert int(n) == 0 and st is sqrt


C, B, M = 2, 4, 3


def test_server_update_reports_fallbacks():
  """stats.method=cholesky. Update 1: labels 1 and 2 hold hugely indefinite covariances and are
  needed (n_y <= B) and stale: 2 fallbacks. Update 2 merges labels 0 and 1 only: label 1 is
  refactorised (fallback), label 2's fallback factor is cached: 1. Healthy statistics: 0."""
  model = gas_toys.model()
  algo = gas.build(model, gas.GasHParams(participating=C, batch_size=B, num_classes=M,
                                         stats_method="cholesky"))
  state = algo.init(jax.random.key(0))
  step = jax.jit(algo.server_step)
  rng = np.random.default_rng(0)

  def buffer(labels):
    return state.buffer.replace(
        acts=jnp.asarray(rng.normal(size=state.buffer.acts.shape), jnp.float32),
        labels=jnp.asarray(np.reshape(labels, (C, B)), jnp.int32),
        row_mask=jnp.ones((C, B), bool), tags=jnp.ones((C,), jnp.float32))

  first = buffer([0, 1, 2, 0, 1, 2, 0, 1])
  healthy, out = step(state.server, dict(buffer=first, global_iter=0), jax.random.key(0))
  assert int(out["stats_fallbacks"]) == 0 and int(out["generated"]) == 4   # all seen
  healthy, out = step(healthy, dict(buffer=buffer([0, 0, 0, 0, 1, 1, 1, 1]), global_iter=0),
                      jax.random.key(1))
  assert int(out["stats_fallbacks"]) == 0

  st = healthy.stats
  d = st.dim
  bad = healthy.replace(stats=st.replace(
      scatter=st.scatter.at[1].set(-1e36 * jnp.eye(d)).at[2].set(-1e36 * jnp.eye(d)),
      chol_fresh=jnp.zeros(M, bool)))
  bad, out = step(bad, dict(buffer=first, global_iter=0), jax.random.key(2))
  assert int(out["stats_fallbacks"]) == 2
  assert np.isfinite(float(out["server_loss"])) and bool(out["grad_finite"])
  bad, out = step(bad, dict(buffer=buffer([0, 0, 0, 0, 1, 1, 1, 1]), global_iter=0),
                  jax.random.key(3))
  assert int(out["stats_fallbacks"]) == 1


def _expected_fallbacks(buffers, bad, stale, b):
  """Hand count over a sequence of server updates (all labels seen): merge -> the merged labels
  are stale; the needed (n_y <= B) stale labels are refactorised; each one in `bad` falls back."""
  out = []
  for labels, mask in buffers:
    counts = np.bincount(labels[mask], minlength=gas_toys.M)
    stale |= counts > 0
    todo = stale & (counts <= b)
    out.append(int(np.sum(todo & bad)))
    stale &= ~todo
  return out


def test_runner_row_and_warning(caplog):
  """A real GasRunner (stats.method=cholesky) whose label-0 covariance is hugely indefinite:
  the iteration's row holds the hand-counted fallbacks (> 0) and a warning names the count;
  with healthy statistics the next iteration reports 0 and warns nothing."""
  cfg = gas_toys.config(stats__method="cholesky")
  runner = ALGORITHMS.get("gas")(gas_toys.context(cfg))
  seen_buffers, outs = [], []
  server_run = runner.calls.server

  def spy(ss, buf, *args, **kw):
    seen_buffers.append((np.asarray(buf.labels).reshape(-1), np.asarray(buf.row_mask).reshape(-1)))
    ss, out = server_run(ss, buf, *args, **kw)
    outs.append(jax.device_get(out))
    return ss, out

  runner.calls = dataclasses.replace(runner.calls, server=spy)
  st = runner.state.server.stats
  m, d = st.num_labels, st.dim
  eye = jnp.eye(d, dtype=jnp.float32)

  def with_stats(scatter0):     # every leaf new (the runner donates the old state)
    new = stats.init(m, d).replace(weight=jnp.ones(m), seen=jnp.ones(m, bool),
                                   scatter=jnp.stack([scatter0, eye, eye]))
    server = runner.state.server.replace(stats=new)
    runner.state = runner.state.replace(server=server)

  with_stats(-1e36 * eye)
  with caplog.at_level(logging.WARNING):
    row = runner.run_iteration()
  want = _expected_fallbacks(seen_buffers, np.array([True, False, False]), np.ones(m, bool),
                             cfg.clients.batch_size)
  assert [int(o["stats_fallbacks"]) for o in outs] == want
  assert row["stats_fallbacks"] == sum(want) > 0
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(f"global iteration 1: {sum(want)} Gaussian-statistics fallback" in w
             for w in warnings), warnings

  caplog.clear()
  with_stats(eye)
  with caplog.at_level(logging.WARNING):
    row = runner.run_iteration()
  assert row["stats_fallbacks"] == 0
  assert not [r for r in caplog.records if "fallback" in r.getMessage()]
  gas.check_gen_rows(outs)
