"""Tests for gas_jax.stats.linalg: the triangular-pentagonal QR used by the statistics'
compression.

Every expected value is a float64 numpy computation: R'^T R' = R^T R + P^T P, R' upper
triangular, |R'| = |numpy's R of [R; P]| row by row (R is unique up to row signs when [R; P] has
full column rank), and the compact WY form against the product of the reflectors.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax.stats import linalg


def _case(d, m, seed, rank_r=None, rank_p=None, scale=1.0):
  rng = np.random.default_rng(seed)
  r = np.linalg.qr(rng.normal(size=(d + 3, d)), mode="r")
  if rank_r is not None:
    r[rank_r:] = 0.0
  p = rng.normal(size=(m, d)) * scale
  if rank_p is not None:
    p = p[:, :rank_p] @ rng.normal(size=(rank_p, d)) if rank_p else np.zeros((m, d))
  return r, p


@functools.partial(jax.jit, static_argnames="widths")
def _tpqr(r, p, widths):
  return linalg.tpqr_r(r, p, widths=widths)


def _check(r, p, widths, dtype, rtol):
  got = np.asarray(_tpqr(jnp.asarray(r, dtype), jnp.asarray(p, dtype), widths), np.float64)
  want = r.T @ r + p.T @ p
  assert np.all(np.isfinite(got))
  chex.assert_trees_all_equal(np.tril(got, -1), np.zeros_like(got))
  scale = np.abs(want).max() or 1.0           # all zero: R' must be zero too
  np.testing.assert_allclose(got.T @ got / scale, want / scale, rtol=0, atol=rtol)
  return got


@pytest.mark.parametrize("d, m, widths", [
    (12, 30, (4,)),      # three full blocks, LAPACK panels
    (13, 30, (5,)),      # last block narrower (5, 5, 3)
    (16, 5, (16,)),      # fewer new rows than columns, one block
    (9, 40, (64,)),      # block wider than D
    (13, 30, (8, 3)),    # two levels: blocks 8 + 5, panels 3 + 3 + 2 and 3 + 2
    (16, 20, (8, 4)),    # two levels, all even (the default's shape of widths)
])
def test_tpqr_gram_equals_float64(d, m, widths):
  r, p = _case(d, m, seed=d + m)
  got = _check(r, p, widths, jnp.float32, 2e-6)
  # Full column rank: R' is numpy's R of [R; P] up to the sign of each row.
  want_r = np.linalg.qr(np.concatenate([r, p]), mode="r")
  np.testing.assert_allclose(np.abs(got), np.abs(want_r), rtol=1e-4, atol=1e-4)


def test_tpqr_ignores_entries_below_the_diagonal_of_r():
  r, p = _case(10, 12, seed=3)
  junk = r + np.tril(np.random.default_rng(0).normal(size=r.shape), -1)
  a = _tpqr(jnp.asarray(r, jnp.float32), jnp.asarray(p, jnp.float32), (4, 2))
  b = _tpqr(jnp.asarray(junk, jnp.float32), jnp.asarray(p, jnp.float32), (4, 2))
  chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize("rank_r, rank_p", [(0, 3), (4, 0), (0, 0), (5, 2)])
def test_tpqr_rank_deficient_is_finite_and_exact(rank_r, rank_p):
  """Zero R (the QR of P alone), zero P, and both rank-deficient: zero reflectors (tau = 0)."""
  r, p = _case(12, 20, seed=7, rank_r=rank_r, rank_p=rank_p)
  _check(r, p, (6, 2), jnp.float32, 2e-6)


def test_tpqr_extreme_scales_never_nan():
  """Dead dimensions (zero columns) and rows over 12 decades, as ReLU activations give."""
  rng = np.random.default_rng(11)
  for case in range(20):
    r, p = _case(16, 24, seed=100 + case, scale=10.0 ** rng.uniform(-6, 6))
    p[:, rng.integers(0, 16, size=6)] = 0.0
    r *= 10.0 ** rng.uniform(-6, 6)
    _check(r, p, (8, 4), jnp.float32, 5e-6)


def test_larft_matches_the_product_of_reflectors():
  rng = np.random.default_rng(2)
  k, m = 5, 9
  vb = rng.normal(size=(m, k))
  tau = rng.uniform(0.1, 1.9, size=k)
  tau[2] = 0.0                                   # an identity reflector
  v = np.concatenate([np.eye(k), vb])
  want = np.eye(k + m)
  for i in range(k):
    want = want @ (np.eye(k + m) - tau[i] * np.outer(v[:, i], v[:, i]))
  t = np.asarray(linalg._larft(jnp.asarray(vb, jnp.float32), jnp.asarray(tau, jnp.float32)),
                 np.float64)
  chex.assert_trees_all_equal(np.tril(t, -1), np.zeros((k, k)))
  np.testing.assert_allclose(np.eye(k + m) - v @ t @ v.T, want, atol=2e-6)


def test_tpqr_rejects_bad_shapes():
  with pytest.raises(ValueError, match="R must be"):
    linalg.tpqr_r(jnp.zeros((3, 4)), jnp.zeros((5, 4)))
  with pytest.raises(ValueError, match="R must be"):
    linalg.tpqr_r(jnp.zeros((4, 4)), jnp.zeros((5, 3)))


def _dot_precisions(fn, *args):
  """The precision of every dot_general in fn's jaxpr, sub-jaxprs (loops, branches) included."""
  out = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        out.append(eqn.params["precision"])
      for v in eqn.params.values():
        for sub in (v if isinstance(v, (tuple, list)) else (v,)):
          inner = getattr(sub, "jaxpr", None)
          if inner is not None:
            walk(getattr(inner, "jaxpr", inner))

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return out


def test_statistics_products_run_at_highest_precision():
  """JAX's default precision is TensorFloat-32 on recent GPUs: every product of the factor's
  compression, merge and sampling must ask for HIGHEST (a CPU test of what a GPU would run)."""
  from gas_jax import stats as stats_lib
  highest = (jax.lax.Precision.HIGHEST,) * 2
  d, cap, m = 8, 24, 3
  found = _dot_precisions(lambda r, p: linalg.tpqr_r(r, p, widths=(4,)), jnp.zeros((d, d)),
                          jnp.zeros((5, d)))
  st = stats_lib.init_sqrt(m, d, cap)
  x, y, w = jnp.ones((6, d)), jnp.arange(6) % m, jnp.ones((6,))
  found += _dot_precisions(lambda s: stats_lib.merge(s, x, y, w, block=4), st)
  for impl in ("batched", "loop"):
    found += _dot_precisions(
        lambda s: stats_lib.sample(s, jax.random.key(0), 4, impl=impl), st)
  assert len(found) >= 8 + 1 + 2
  assert all(p == highest for p in found), found
