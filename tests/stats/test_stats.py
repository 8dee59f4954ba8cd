"""Tests for gas_jax.stats: weighted merge, REF jitter, factor refresh, sampling (spec §1.5).

Both representations are checked: the dense scatter + cached Cholesky (`init`, "cholesky") and
the square-root factor (`init_sqrt`, "sqrt", the default), including its QR compression. Every
expected value is an independent float64 numpy computation over all rows of a label, or a
hand-computed value. Almost every merge uses one shape (M=5 labels, D=4, batches of N=60 rows,
short batches padded with weight-0 junk rows), so that few programs are compiled.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax import stats
from gas_jax.stats import sqrt_factor, welford

from helpers.stats_cases import D, M, METHODS, N  # noqa: F401  (the shapes of every case)
from helpers.stats_cases import check_against_numpy as _check_against_numpy
from helpers.stats_cases import compressions as _compressions
from helpers.stats_cases import covariance as _cov
from helpers.stats_cases import expected as _expected
from helpers.stats_cases import init as _init
from helpers.stats_cases import label_blocks as _label_blocks
from helpers.stats_cases import merge as _merge
from helpers.stats_cases import merge_small_batches as _merge_small_batches
from helpers.stats_cases import refresh as _refresh
from helpers.stats_cases import rows as _rows
from helpers.stats_cases import sample as _sample


@pytest.mark.parametrize("method", METHODS)
def test_merge_single_batch_equals_numpy(method):
  x, labels, w = _rows()
  _check_against_numpy(_merge(_init(method), x, labels, w), x, labels, w)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [1, 2])
def test_merge_many_small_batches_equals_numpy(method, seed):
  x, labels, w = _rows()
  st, compressions = _merge_small_batches(method, x, labels, w, seed)
  _check_against_numpy(st, x, labels, w)
  if method == "sqrt":
    assert compressions > 0       # the QR compression path was exercised


@pytest.mark.parametrize("tpqr", [True, False])
def test_repeated_compressions_equal_numpy(tpqr, monkeypatch):
  """Labels compressed several times. With `tpqr` (the path for D >= TPQR_MIN_DIM, forced here
  for D=4) the second and later compressions eliminate only the rows merged since against the
  previous R (`linalg.tpqr_r`); without, each is a QR of the whole factor. Either way the
  covariance stays exact and the first D rows of a compressed label stay upper triangular."""
  monkeypatch.setattr(sqrt_factor, "TPQR_MIN_DIM", 1 if tpqr else 10 ** 9)
  merge = jax.jit(lambda st, x, y, w: stats.merge(st, x, y, w, jitter=0.0, block=4))  # fresh cache
  xs, ls, ws = zip(*[_rows(seed) for seed in (0, 1, 2, 3)])
  x, labels, w = np.concatenate(xs), np.concatenate(ls), np.concatenate(ws)
  rng = np.random.default_rng(4)
  st = _init("sqrt", block=4)
  per_label, i = np.zeros(M, int), 0
  while i < len(labels):
    take = np.arange(i, min(i + int(rng.integers(1, 4)), len(labels)))
    i += len(take)
    pad = N - len(take)             # padded to N rows with weight-0 junk, as `_merge` does
    px = np.concatenate([x[take], np.full((pad, D), 1e3)])
    pl = np.concatenate([labels[take], np.zeros(pad, int)])
    pw = np.concatenate([w[take], np.zeros(pad)])
    new = merge(st, jnp.asarray(px, jnp.float32), jnp.asarray(pl, jnp.int32),
                jnp.asarray(pw, jnp.float32))
    assert not np.any(np.tril(np.asarray(new.rows)[np.asarray(new.compressed)][:, :D], -1))
    per_label += np.asarray(new.used) < np.asarray(st.used)
    st = new
  assert per_label.max() >= 2, per_label              # a label's later compression ran
  chex.assert_trees_all_equal(np.asarray(st.compressed), per_label > 0)
  _check_against_numpy(st, x, labels, w)


@pytest.mark.parametrize("method, block", [
    ("cholesky", 1), ("cholesky", 4), ("cholesky", 64), ("sqrt", 1), ("sqrt", 64)])
def test_merge_block_size_does_not_matter(method, block):
  x, labels, w = _rows()
  ref, _ = _merge_small_batches(method, x, labels, w, seed=3, block=16)
  st, _ = _merge_small_batches(method, x, labels, w, seed=3, block=block)
  _check_against_numpy(st, x, labels, w)
  chex.assert_trees_all_close(st.mean, ref.mean, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(_cov(st), _cov(ref), atol=1e-4, rtol=1e-5)
  chex.assert_trees_all_close(st.weight, ref.weight, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_merge_ignores_all_zero_weight_batch(method):
  x, labels, w = _rows()
  st = _merge(_init(method), x, labels, w)
  before = jax.tree_util.tree_map(np.asarray, st)
  st2 = _merge(st, x + 7.0, labels, np.zeros(N), jitter=1e-5)
  # All-zero weights: nothing is merged, no jitter is added, the input is not modified.
  chex.assert_trees_all_close(jax.tree_util.tree_map(np.asarray, st2), before)
  chex.assert_trees_all_close(jax.tree_util.tree_map(np.asarray, st), before)


@pytest.mark.parametrize("method", METHODS)
def test_ref_jitter_accumulates(method):
  rng = np.random.default_rng(5)
  sizes = [7, 3, 11, 5, 9, 4, 6, 8, 2, 10, 5, 7]
  batch_w = [1.0, 2.5, 0.7, 4.0, 1.3, 10.0, 0.2, 3.0, 1.0, 0.5, 6.0, 2.0]
  st = _init(method)
  xs, ws = [], []
  r, w_prev, compressions = 0.0, 0.0, 0
  for m, (n, bw) in enumerate(zip(sizes, batch_w), start=1):
    x = rng.normal(size=(n, D)) * 0.3 + 1.0
    wt = bw * rng.uniform(0.5, 1.5, size=n)
    new = _merge(st, x, np.zeros(n, int), wt, jitter=1e-5)
    compressions += _compressions(st, new)
    st = new
    xs.append(x)
    ws.append(wt)
    w_now = w_prev + wt.sum()
    r = 0.0 if m == 1 else (w_prev / w_now) * r + 1e-5    # R_1 = 0, R_m = d_m R_{m-1} + 1e-5
    w_prev = w_now
    allx, allw = np.concatenate(xs), np.concatenate(ws)
    _, cov, _ = _expected(allx, np.zeros(len(allw), int), allw, num_labels=1)
    got = np.asarray(_cov(st)[0], np.float64)
    chex.assert_trees_all_close(got - cov[0], r * np.eye(D), atol=3e-7)
    np.testing.assert_allclose(float(st.jitter[0]), r, rtol=1e-4, atol=1e-12)
  assert r > 2e-5   # the recurrence really accumulated (not a constant 1e-5)
  if method == "sqrt":
    assert compressions > 0
  # Labels never merged (only weight-0 padding rows) have no jitter and no statistics.
  chex.assert_trees_all_equal(np.asarray(st.jitter[1:]), np.zeros(M - 1, np.float32))
  assert not np.any(np.asarray(st.seen[1:]))
  chex.assert_trees_all_equal(np.asarray(_cov(st)[1:]), np.zeros((M - 1, D, D), np.float32))


@functools.lru_cache(maxsize=None)
def _gaussian_stats(method):
  """Labels 0..2: 1000 rows of a known 4-dim Gaussian each, merged 60 mixed rows at a time
  (jitter 0); labels 3 and 4 never merged."""
  rng = np.random.default_rng(0)
  xs, ls = [], []
  for y in range(3):
    a = rng.normal(size=(D, D)) * 0.6
    cov = a @ a.T + 0.5 * np.eye(D)
    mu = rng.normal(size=D) * 2.0
    xs.append(rng.multivariate_normal(mu, cov, size=1000))
    ls.append(np.full(1000, y))
  perm = rng.permutation(3000)
  x, labels = np.concatenate(xs)[perm], np.concatenate(ls)[perm]
  w = rng.uniform(0.5, 2.0, size=len(labels))
  st = _init(method)
  for i in range(0, 3000, N):
    st = _merge(st, x[i:i + N], labels[i:i + N], w[i:i + N])
  return st, x, labels, w


@pytest.mark.parametrize("method", METHODS)
def test_sampling_matches_statistics(method):
  st, x, labels, w = _gaussian_stats(method)
  _, cov_np, _ = _expected(x, labels, w)
  chex.assert_trees_all_close(np.asarray(_cov(st), np.float64), cov_np, atol=1e-4, rtol=1e-4)
  st = _refresh(st, jnp.ones(M, bool))
  if method == "cholesky":
    chex.assert_trees_all_equal(np.asarray(st.chol_fresh), np.array([1, 1, 1, 0, 0], bool))
    chol = np.asarray(st.chol, np.float64)
    for y in range(3):
      chex.assert_trees_all_close(chol[y] @ chol[y].T, cov_np[y], atol=1e-4, rtol=1e-4)
      np.testing.assert_array_equal(np.triu(chol[y], 1), 0.0)
  else:
    # Exercise the isotropic term sqrt(r) z2 of the square-root sampler too.
    r = np.array([0.3, 0.0, 0.7, 0.0, 0.0])
    st = st.replace(jitter=jnp.asarray(r, jnp.float32))
    cov_np = cov_np + r[:, None, None] * np.eye(D)
  cov = np.asarray(_cov(st), np.float64)
  chex.assert_trees_all_close(cov, cov_np, atol=1e-4, rtol=1e-4)
  mu = np.asarray(st.mean, np.float64)
  n = 20000
  s = np.asarray(_sample(st, jax.random.key(0), n), np.float64)
  assert s.shape == (M, n, D)
  assert np.all(np.isfinite(s))
  for y in range(3):
    var = np.diag(cov[y])
    mean_tol = 5.0 * np.sqrt(var / n)
    assert np.all(np.abs(s[y].mean(0) - mu[y]) < mean_tol), (s[y].mean(0), mu[y])
    cov_tol = 5.0 * np.sqrt((np.outer(var, var) + cov[y] ** 2) / n)
    emp = np.cov(s[y].T, bias=True)
    assert np.all(np.abs(emp - cov[y]) < cov_tol), (emp, cov[y])
    # The tolerance is tight enough to mean something: <= 5% of sqrt(var_i var_j).
    assert np.max(cov_tol / np.sqrt(np.outer(var, var))) <= 0.05 + 1e-12


def test_refresh_is_a_no_op_for_sqrt_stats():
  st, _, _, _ = _gaussian_stats("sqrt")
  assert stats.refresh_factors(st, jnp.ones(M, bool)) is st


def test_refresh_only_stale_and_needed():
  st, x, _, _ = _gaussian_stats("cholesky")
  assert not np.any(np.asarray(st.chol_fresh))
  zero = np.zeros((D, D), np.float32)
  st1 = _refresh(st, jnp.array([0, 1, 0, 0, 0], bool))
  chex.assert_trees_all_equal(np.asarray(st1.chol_fresh), np.array([0, 1, 0, 0, 0], bool))
  for y in (0, 2, 3, 4):
    chex.assert_trees_all_equal(np.asarray(st1.chol[y]), zero)
  cov1 = np.asarray(_cov(st1)[1], np.float64)
  chex.assert_trees_all_close(np.asarray(st1.chol[1], np.float64), np.linalg.cholesky(cov1),
                              atol=1e-5, rtol=1e-5)

  # A fresh factor is never recomputed: plant a sentinel in label 1 (fresh) and refresh all.
  # The unseen labels 3, 4 are never factorised, even when needed.
  sentinel = jnp.full((D, D), 7.0)
  st2 = st1.replace(chol=st1.chol.at[1].set(sentinel))
  st2 = _refresh(st2, jnp.ones(M, bool))
  chex.assert_trees_all_equal(np.asarray(st2.chol[1]), np.asarray(sentinel))
  chex.assert_trees_all_equal(np.asarray(st2.chol[3:]), np.zeros((2, D, D), np.float32))
  chex.assert_trees_all_equal(np.asarray(st2.chol_fresh), np.array([1, 1, 1, 0, 0], bool))
  for y in (0, 2):
    c = np.asarray(_cov(st2)[y], np.float64)
    chex.assert_trees_all_close(np.asarray(st2.chol[y], np.float64), np.linalg.cholesky(c),
                                atol=1e-5, rtol=1e-5)

  # Merging into label 2 makes only label 2 stale; needing only label 0 refreshes nothing.
  st3 = _merge(st2, x[:5], np.full(5, 2), np.ones(5), jitter=1e-5)
  chex.assert_trees_all_equal(np.asarray(st3.chol_fresh), np.array([1, 1, 0, 0, 0], bool))
  st4 = _refresh(st3, jnp.array([1, 0, 0, 0, 0], bool))
  chex.assert_trees_all_equal(np.asarray(st4.chol), np.asarray(st3.chol))
  chex.assert_trees_all_equal(np.asarray(st4.chol_fresh), np.array([1, 1, 0, 0, 0], bool))
  st5 = _refresh(st3, jnp.array([0, 0, 1, 0, 0], bool))
  chex.assert_trees_all_equal(np.asarray(st5.chol_fresh), np.array([1, 1, 1, 0, 0], bool))
  c = np.asarray(_cov(st5)[2], np.float64)
  chex.assert_trees_all_close(np.asarray(st5.chol[2], np.float64), np.linalg.cholesky(c),
                              atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_equal(np.asarray(st5.chol[:2]), np.asarray(st3.chol[:2]))


def _check_jittered_factor(l, cov, max_eps=1e-3, atol=1e-5):
  """L finite, lower triangular, L L^T == cov + eps I for one eps in [0, max_eps]."""
  l = np.asarray(l, np.float64)
  assert np.all(np.isfinite(l))
  np.testing.assert_array_equal(np.triu(l, 1), 0.0)
  diff = l @ l.T - cov
  eps = float(np.mean(np.diag(diff)))
  assert -atol <= eps <= max_eps + atol, eps
  chex.assert_trees_all_close(diff, eps * np.eye(len(cov)), atol=atol)
  return eps


def test_cholesky_with_jitter_on_singular_matrices():
  chol = jax.jit(stats.cholesky_with_jitter)
  zeros = np.zeros((8, 8))
  eps = _check_jittered_factor(chol(jnp.zeros((8, 8))), zeros)
  assert eps > 0          # chol(0) fails, so some jitter was needed
  v = np.random.default_rng(0).normal(size=8)
  v /= np.linalg.norm(v)
  vv = np.outer(v, v)
  _check_jittered_factor(chol(jnp.asarray(vv, jnp.float32)), vv)
  # A positive definite matrix is factorised as is (no jitter).
  a = np.random.default_rng(1).normal(size=(8, 8))
  spd = a @ a.T + np.eye(8)
  eps = _check_jittered_factor(chol(jnp.asarray(spd, jnp.float32)), spd, atol=1e-4)
  assert abs(eps) < 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_rank_deficient_covariance_gives_finite_samples(method):
  d = 256
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, d)) * 0.05 + 0.5
  st = stats.merge_jit(_init(method, 2, d, 3, 4), jnp.asarray(x, jnp.float32),
                       jnp.zeros(3, jnp.int32), jnp.array([1.0, 2.0, 3.0]), jitter=0.0, block=4)
  cov = np.asarray(_cov(st)[0], np.float64)
  assert np.linalg.matrix_rank(cov, tol=1e-6) == 2
  st = _refresh(st, jnp.array([True, True]))
  if method == "cholesky":
    _check_jittered_factor(st.chol[0], cov, atol=1e-4)
  s = np.asarray(_sample(st, jax.random.key(1), 8), np.float64)[0]
  assert np.all(np.isfinite(s))
  # Samples lie in the affine span of the 3 rows, up to the small isotropic jitter (none for
  # the square-root factor).
  mu = np.asarray(st.mean[0], np.float64)
  q, _ = np.linalg.qr((x - x.mean(0)).T)           # [d, 3]; the span has dimension 2
  q = q[:, :2]
  dev = s - mu
  inside = dev @ q @ q.T
  outside = dev - inside
  rms_out = np.sqrt(np.mean(outside ** 2))
  assert rms_out < (3.0 * np.sqrt(1e-3) if method == "cholesky" else 1e-5), rms_out
  assert np.sum(inside ** 2) > 20.0 * np.sum(outside ** 2)


@pytest.mark.parametrize("labels, valid, block, num_labels, pos, block_label", [
    # n=5, nb=ceil(5/2)+3=6; counts [2,1,2] -> one block each: label 0 rows at 0,1; label 1
    # at 2; label 2 at 4,5; blocks 3..5 empty (label M=3).
    ([2, 0, 2, 1, 0], [1, 1, 1, 1, 1], 2, 3, [4, 0, 5, 2, 1], [0, 1, 2, 3, 3, 3]),
    # Row 1 invalid -> position nb*block = 8; label 0 in block 0, label 1 (2 rows) in block 1.
    ([1, 1, 1, 0], [1, 0, 1, 1], 2, 2, [2, 8, 3, 0], [0, 1, 2, 2]),
    # Label 0 has 3 rows -> two blocks (0, 1); label 1 starts at block 2 (position 4).
    ([0, 0, 0, 1], [1, 1, 1, 1], 2, 2, [0, 1, 2, 4], [0, 0, 1, 2]),
])
def test_label_blocks_hand_computed(labels, valid, block, num_labels, pos, block_label):
  p, bl = _label_blocks(jnp.array(labels), jnp.array(valid, bool), num_labels, block)
  chex.assert_trees_all_equal(np.asarray(p), np.array(pos, np.int32))
  chex.assert_trees_all_equal(np.asarray(bl), np.array(block_label, np.int32))


def test_diag_stats_match_numpy_per_dimension_variance():
  """Diagonal mode: weighted mean and per-dimension (biased) variance of all rows, any grouping,
  plus REF's jitter recurrence; samples have that mean and variance."""
  rng = np.random.default_rng(7)
  m, d = 3, 6
  xs = [rng.normal(size=(n, d)) * 3 + 1 for n in (5, 9, 4, 7)]
  ys = [rng.integers(0, m, len(x)) for x in xs]
  ws = [rng.uniform(0.5, 4.0, len(x)) for x in xs]
  st = stats.init_diag(m, d)
  for x, y, w in zip(xs, ys, ws):
    st = stats.merge_jit(st, jnp.asarray(x, jnp.float32), jnp.asarray(y), jnp.asarray(w, jnp.float32),
                         jitter=0.0)
  x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
  for lab in range(m):
    sel = y == lab
    mu = np.average(x[sel], axis=0, weights=w[sel])
    var = np.average((x[sel] - mu) ** 2, axis=0, weights=w[sel])
    np.testing.assert_allclose(np.asarray(st.mean[lab]), mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(st.var[lab]), var, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.diag(np.asarray(stats.covariance(st)[lab])), var, rtol=1e-4)
  s = np.asarray(stats.sample(st, jax.random.key(0), 20000))
  np.testing.assert_allclose(s.var(1), np.asarray(st.var), rtol=0.05)
  assert stats.nbytes(st) < 3 * m * d * 4 + 64


def test_overflowing_host_equals_device_and_hand_case():
  """`stats.overflowing` in numpy (the host's plan) equals the jnp version (the device's), and a
  hand case: capacity 12, block 4; label 0 uses 8 rows and gets 3 rows + its old mean's
  pseudo-row = one block (fits: 12); label 1 uses 8 and gets 5 rows (two blocks: 16 > 12);
  label 2 gets rows of weight 0 only (nothing to merge)."""
  used, seen = np.array([8, 8, 0]), np.array([True, False, False])
  labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
  w = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)
  np.testing.assert_array_equal(stats.overflowing(used, seen, labels, w, 4, 12, xp=np),
                                [False, True, False])
  rng = np.random.default_rng(0)
  for _ in range(20):
    used = rng.integers(0, 40, 5)
    seen = rng.random(5) < 0.5
    labels = rng.integers(0, 5, 30)
    w = rng.choice([0.0, 0.5, 1.0], 30)
    host = stats.overflowing(used, seen, labels, w, 4, 48, xp=np)
    dev = stats.overflowing(jnp.asarray(used, jnp.int32), jnp.asarray(seen),
                            jnp.asarray(labels, jnp.int32), jnp.asarray(w, jnp.float32), 4, 48)
    np.testing.assert_array_equal(host, np.asarray(dev))
