"""Tests for gas_jax.stats: weighted merge, REF jitter, factor refresh, sampling (spec §1.5).

Every expected value is an independent float64 numpy computation over all rows of a label, or a
hand-computed value.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax import stats

M = 5          # labels; label 3 only has weight-0 rows, label 4 has no rows at all
D = 6
N = 60
PAD = 16       # fixed batch size of the "many small batches" grouping (one compile)


def _rows(seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, size=N)
  x = rng.normal(size=(N, D)) * rng.uniform(0.5, 2.0, size=D) + 3.0 * labels[:, None] - 1.0
  w = rng.uniform(0.2, 3.0, size=N)
  # Weight-0 rows that must be ignored: outliers in labels 0..2, and every label-3 row.
  zero = rng.choice(N, size=8, replace=False)
  w[zero] = 0.0
  x[zero] += 100.0
  labels[zero[:3]] = 3
  return x, labels, w


def _expected(x, labels, w, num_labels=M):
  """float64 weighted mean and biased weighted covariance (divide by the weight sum)."""
  means, covs, wsum = [], [], []
  for y in range(num_labels):
    sel = (labels == y) & (w > 0)
    if not sel.any():
      means.append(np.zeros(x.shape[1]))
      covs.append(np.zeros((x.shape[1], x.shape[1])))
      wsum.append(0.0)
      continue
    xs, ws = x[sel], w[sel]
    mu = ws @ xs / ws.sum()
    c = xs - mu
    means.append(mu)
    covs.append((ws[:, None] * c).T @ c / ws.sum())
    wsum.append(ws.sum())
  return np.array(means), np.array(covs), np.array(wsum)


def _merge_one_batch(x, labels, w, block=16, jitter=0.0):
  st = stats.init(M, D)
  return stats.merge_jit(st, jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.int32),
                         jnp.asarray(w, jnp.float32), jitter=jitter, block=block)


def _merge_small_batches(x, labels, w, seed, block=16, jitter=0.0):
  """Random order, random fill (1..PAD rows) per batch, padded to PAD with weight-0 junk rows."""
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(labels))
  st = stats.init(M, D)
  i = 0
  while i < len(perm):
    take = perm[i:i + int(rng.integers(1, PAD + 1))]
    i += len(take)
    bx = rng.normal(size=(PAD, D)) * 50.0           # junk in the padding rows
    bl = rng.integers(0, M, size=PAD)
    bw = np.zeros(PAD)
    bx[:len(take)], bl[:len(take)], bw[:len(take)] = x[take], labels[take], w[take]
    st = stats.merge_jit(st, jnp.asarray(bx, jnp.float32), jnp.asarray(bl, jnp.int32),
                         jnp.asarray(bw, jnp.float32), jitter=jitter, block=block)
  return st


def _check_against_numpy(st, x, labels, w):
  mu, cov, wsum = _expected(x, labels, w)
  seen = np.array([True, True, True, False, False])
  chex.assert_trees_all_equal(np.asarray(st.seen), seen)
  chex.assert_trees_all_close(np.asarray(st.weight, np.float64), wsum, rtol=1e-5)
  chex.assert_trees_all_close(np.asarray(st.mean, np.float64), mu, atol=1e-4, rtol=1e-5)
  chex.assert_trees_all_close(np.asarray(stats.covariance(st), np.float64), cov,
                              atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_equal(np.asarray(st.jitter), np.zeros(M, np.float32))
  # Never merged (label 4) and only-weight-0 (label 3): unseen, all statistics zero.
  for y in (3, 4):
    assert float(st.weight[y]) == 0.0
    chex.assert_trees_all_equal(np.asarray(st.mean[y]), np.zeros(D, np.float32))
    chex.assert_trees_all_equal(np.asarray(st.scatter[y]), np.zeros((D, D), np.float32))
  assert not np.any(np.asarray(st.chol_fresh))


def test_merge_single_batch_equals_numpy():
  x, labels, w = _rows()
  _check_against_numpy(_merge_one_batch(x, labels, w), x, labels, w)


@pytest.mark.parametrize("seed", [1, 2])
def test_merge_many_small_batches_equals_numpy(seed):
  x, labels, w = _rows()
  _check_against_numpy(_merge_small_batches(x, labels, w, seed), x, labels, w)


@pytest.mark.parametrize("block", [1, 4, 64])
def test_merge_block_size_does_not_matter(block):
  x, labels, w = _rows()
  ref = _merge_small_batches(x, labels, w, seed=3, block=16)
  st = _merge_small_batches(x, labels, w, seed=3, block=block)
  _check_against_numpy(st, x, labels, w)
  chex.assert_trees_all_close(st.mean, ref.mean, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(st.scatter, ref.scatter, atol=1e-4, rtol=1e-5)
  chex.assert_trees_all_close(st.weight, ref.weight, rtol=1e-6)


def test_merge_is_pure_and_ignores_zero_weight_batch():
  x, labels, w = _rows()
  st = _merge_one_batch(x, labels, w)
  before = jax.tree_util.tree_map(np.asarray, st)
  st2 = stats.merge_jit(st, jnp.asarray(x, jnp.float32) + 7.0, jnp.asarray(labels, jnp.int32),
                        jnp.zeros(N, jnp.float32), jitter=1e-5, block=16)
  # All-zero weights: nothing is merged, no jitter is added.
  chex.assert_trees_all_close(jax.tree_util.tree_map(np.asarray, st2), before)
  chex.assert_trees_all_close(jax.tree_util.tree_map(np.asarray, st), before)


def test_ref_jitter_accumulates():
  rng = np.random.default_rng(5)
  sizes = [7, 3, 11, 5, 9, 4]
  batch_w = [1.0, 2.5, 0.7, 4.0, 1.3, 10.0]
  st = stats.init(2, 4)
  xs, ws = [], []
  r, w_prev = 0.0, 0.0
  for m, (n, bw) in enumerate(zip(sizes, batch_w), start=1):
    x = rng.normal(size=(n, 4)) * 0.3 + 1.0
    wt = bw * rng.uniform(0.5, 1.5, size=n)
    st = stats.merge_jit(st, jnp.asarray(x, jnp.float32), jnp.zeros(n, jnp.int32),
                         jnp.asarray(wt, jnp.float32), jitter=1e-5, block=4)
    xs.append(x)
    ws.append(wt)
    w_now = w_prev + wt.sum()
    r = 0.0 if m == 1 else (w_prev / w_now) * r + 1e-5    # R_1 = 0, R_m = d_m R_{m-1} + 1e-5
    w_prev = w_now
    allx, allw = np.concatenate(xs), np.concatenate(ws)
    _, cov, _ = _expected(allx, np.zeros(len(allw), int), allw, num_labels=1)
    got = np.asarray(stats.covariance(st)[0], np.float64)
    chex.assert_trees_all_close(got - cov[0], r * np.eye(4), atol=3e-7)
    np.testing.assert_allclose(float(st.jitter[0]), r, rtol=1e-4, atol=1e-12)
  assert r > 2e-5   # the recurrence really accumulated (not a constant 1e-5)
  # The never-merged label has no jitter and no statistics.
  assert float(st.jitter[1]) == 0.0 and not bool(st.seen[1])
  chex.assert_trees_all_equal(np.asarray(st.scatter[1]), np.zeros((4, 4), np.float32))


def _gaussian_stats(num_rows=3000, seed=0):
  rng = np.random.default_rng(seed)
  ms, d = 3, 4
  xs, ls = [], []
  for y in range(ms):
    a = rng.normal(size=(d, d)) * 0.6
    cov = a @ a.T + 0.5 * np.eye(d)
    mu = rng.normal(size=d) * 2.0
    xs.append(rng.multivariate_normal(mu, cov, size=num_rows))
    ls.append(np.full(num_rows, y))
  x, labels = np.concatenate(xs), np.concatenate(ls)
  w = rng.uniform(0.5, 2.0, size=len(labels))
  st = stats.merge_jit(stats.init(ms, d), jnp.asarray(x, jnp.float32),
                       jnp.asarray(labels, jnp.int32), jnp.asarray(w, jnp.float32),
                       jitter=0.0, block=64)
  return st, x, labels, w


def test_sampling_matches_statistics():
  st, _, _, _ = _gaussian_stats()
  st = jax.jit(stats.refresh_factors)(st, jnp.ones(3, bool))
  assert np.all(np.asarray(st.chol_fresh))
  cov = np.asarray(stats.covariance(st), np.float64)
  mu = np.asarray(st.mean, np.float64)
  chol = np.asarray(st.chol, np.float64)
  for y in range(3):
    chex.assert_trees_all_close(chol[y] @ chol[y].T, cov[y], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.triu(chol[y], 1), 0.0)
  n = 20000
  s = np.asarray(jax.jit(stats.sample, static_argnums=2)(st, jax.random.key(0), n), np.float64)
  assert s.shape == (3, n, 4)
  for y in range(3):
    var = np.diag(cov[y])
    mean_tol = 5.0 * np.sqrt(var / n)
    assert np.all(np.abs(s[y].mean(0) - mu[y]) < mean_tol), (s[y].mean(0), mu[y])
    cov_tol = 5.0 * np.sqrt((np.outer(var, var) + cov[y] ** 2) / n)
    emp = np.cov(s[y].T, bias=True)
    assert np.all(np.abs(emp - cov[y]) < cov_tol), (emp, cov[y])
    assert np.max(cov_tol) < 0.2   # the tolerance is tight enough to mean something


def test_refresh_only_stale_and_needed():
  st, x, labels, w = _gaussian_stats(num_rows=200)
  assert not np.any(np.asarray(st.chol_fresh))
  refresh = jax.jit(stats.refresh_factors)
  st1 = refresh(st, jnp.array([False, True, False]))
  chex.assert_trees_all_equal(np.asarray(st1.chol_fresh), np.array([False, True, False]))
  chex.assert_trees_all_equal(np.asarray(st1.chol[0]), np.zeros((4, 4), np.float32))
  chex.assert_trees_all_equal(np.asarray(st1.chol[2]), np.zeros((4, 4), np.float32))
  cov1 = np.asarray(stats.covariance(st1)[1], np.float64)
  chex.assert_trees_all_close(np.asarray(st1.chol[1], np.float64), np.linalg.cholesky(cov1),
                              atol=1e-5, rtol=1e-5)

  # A fresh factor is never recomputed: plant a sentinel in label 1 (fresh) and refresh all.
  sentinel = jnp.full((4, 4), 7.0)
  st2 = st1.replace(chol=st1.chol.at[1].set(sentinel))
  st2 = refresh(st2, jnp.array([True, True, True]))
  chex.assert_trees_all_equal(np.asarray(st2.chol[1]), np.asarray(sentinel))
  assert np.all(np.asarray(st2.chol_fresh))
  for y in (0, 2):
    c = np.asarray(stats.covariance(st2)[y], np.float64)
    chex.assert_trees_all_close(np.asarray(st2.chol[y], np.float64), np.linalg.cholesky(c),
                                atol=1e-5, rtol=1e-5)

  # Merging into label 2 makes only label 2 stale; needing only label 0 refreshes nothing.
  st3 = stats.merge_jit(st2, jnp.asarray(x[:5], jnp.float32), jnp.full((5,), 2, jnp.int32),
                        jnp.ones((5,), jnp.float32), jitter=1e-5, block=16)
  chex.assert_trees_all_equal(np.asarray(st3.chol_fresh), np.array([True, True, False]))
  st4 = refresh(st3, jnp.array([True, False, False]))
  chex.assert_trees_all_equal(np.asarray(st4.chol), np.asarray(st3.chol))
  chex.assert_trees_all_equal(np.asarray(st4.chol_fresh), np.array([True, True, False]))
  st5 = refresh(st3, jnp.array([False, False, True]))
  chex.assert_trees_all_equal(np.asarray(st5.chol_fresh), np.array([True, True, True]))
  c = np.asarray(stats.covariance(st5)[2], np.float64)
  chex.assert_trees_all_close(np.asarray(st5.chol[2], np.float64), np.linalg.cholesky(c),
                              atol=1e-5, rtol=1e-5)


def test_refresh_skips_unseen_labels():
  st = stats.init(3, 4)
  st = stats.merge_jit(st, jnp.ones((2, 4)), jnp.zeros((2,), jnp.int32),
                       jnp.array([1.0, 0.0]), jitter=0.0, block=16)
  st = jax.jit(stats.refresh_factors)(st, jnp.ones(3, bool))
  chex.assert_trees_all_equal(np.asarray(st.chol_fresh), np.array([True, False, False]))
  chex.assert_trees_all_equal(np.asarray(st.chol[1:]), np.zeros((2, 4, 4), np.float32))
  assert np.all(np.isfinite(np.asarray(st.chol[0])))


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
  v = np.random.default_rng(0).normal(size=16)
  v /= np.linalg.norm(v)
  vv = np.outer(v, v)
  _check_jittered_factor(chol(jnp.asarray(vv, jnp.float32)), vv)
  # A positive definite matrix is factorised as is (no jitter).
  a = np.random.default_rng(1).normal(size=(6, 6))
  spd = a @ a.T + np.eye(6)
  eps = _check_jittered_factor(chol(jnp.asarray(spd, jnp.float32)), spd, atol=1e-4)
  assert abs(eps) < 1e-5


def test_rank_deficient_covariance_gives_finite_samples():
  d = 256
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, d)) * 0.05 + 0.5
  st = stats.merge_jit(stats.init(2, d), jnp.asarray(x, jnp.float32), jnp.zeros(3, jnp.int32),
                       jnp.array([1.0, 2.0, 3.0]), jitter=0.0, block=4)
  cov = np.asarray(stats.covariance(st)[0], np.float64)
  assert np.linalg.matrix_rank(cov, tol=1e-6) == 2
  st = jax.jit(stats.refresh_factors)(st, jnp.array([True, True]))
  _check_jittered_factor(st.chol[0], cov, atol=1e-4)
  s = np.asarray(jax.jit(stats.sample, static_argnums=2)(st, jax.random.key(1), 8),
                 np.float64)[0]
  assert np.all(np.isfinite(s))
  # Samples lie in the affine span of the 3 rows, up to the small isotropic jitter.
  mu = np.asarray(st.mean[0], np.float64)
  q, _ = np.linalg.qr((x - x.mean(0)).T)           # [d, 3]; the span has dimension 2
  q = q[:, :2]
  dev = s - mu
  inside = dev @ q @ q.T
  outside = dev - inside
  rms_out = np.sqrt(np.mean(outside ** 2))
  assert rms_out < 3.0 * np.sqrt(1e-3), rms_out
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
  p, bl = stats.label_blocks(jnp.array(labels), jnp.array(valid, bool), num_labels, block)
  chex.assert_trees_all_equal(np.asarray(p), np.array(pos, np.int32))
  chex.assert_trees_all_equal(np.asarray(bl), np.array(block_label, np.int32))
