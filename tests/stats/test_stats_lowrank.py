"""Tests for the square-root factor's modes beyond the exact default (gas_jax.stats): the
low-rank truncation (probabilistic PCA), the memory each mode takes, and `make_room` (the
merge's conditional compression as its own step). Shapes and helpers: tests/helpers/stats_cases.py."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax import stats
from helpers.stats_cases import D, M, N
from helpers.stats_cases import check_against_numpy as _check_against_numpy
from helpers.stats_cases import compressions as _compressions
from helpers.stats_cases import covariance as _cov
from helpers.stats_cases import rows as _rows


def test_lowrank_with_full_rank_equals_exact():
  """rank >= D: the truncation keeps everything, so many merges with compressions equal numpy."""
  x, labels, w = _rows(3)
  cap = stats.lowrank_capacity(D, D, N, M, 16)
  assert cap < stats.sqrt_capacity(D, N, M, 16)
  st, rng, i, compressions = stats.init_sqrt(M, D, cap), np.random.default_rng(3), 0, 0
  perm = rng.permutation(N)
  while i < N:
    take = perm[i:i + int(rng.integers(1, 7))]
    i += len(take)
    px, pl, pw = x[take], labels[take], w[take]
    new = stats.merge_jit(st, jnp.asarray(px, jnp.float32), jnp.asarray(pl, jnp.int32),
                          jnp.asarray(pw, jnp.float32), jitter=0.0, rank=D)
    compressions += _compressions(st, new)
    st = new
  assert compressions > 0
  _check_against_numpy(st, x, labels, w)


def test_lowrank_truncation_is_probabilistic_pca_then_exact_merge():
  """One label, D=4, rank 2, capacity 18: the second merge truncates the first merge's factor
  to its top-2 eigenpairs plus the mean of the other two eigenvalues (isotropic), then merges
  exactly. Reference: float64 numpy eigendecomposition and the weighted merge formula."""
  d, k, rng = 4, 2, np.random.default_rng(0)
  scale = np.array([3.0, 2.0, 0.7, 0.3])
  x1, x2 = rng.normal(size=(10, d)) * scale, rng.normal(size=(10, d)) * scale + 0.5
  w1, w2 = rng.uniform(0.5, 2.0, 10), rng.uniform(0.5, 2.0, 10)
  lab = jnp.zeros(10, jnp.int32)
  st = stats.init_sqrt(1, d, k + 16)
  st = stats.merge_jit(st, jnp.asarray(x1, jnp.float32), lab, jnp.asarray(w1, jnp.float32),
                       jitter=0.0, rank=k)
  assert int(st.used[0]) == 16
  st = stats.merge_jit(st, jnp.asarray(x2, jnp.float32), lab, jnp.asarray(w2, jnp.float32),
                       jitter=0.0, rank=k)
  assert int(st.used[0]) == k + 16            # truncated to k rows, then 16 appended

  W1 = w1.sum()
  mu1 = w1 @ x1 / W1
  scatter1 = (w1[:, None] * (x1 - mu1)).T @ (x1 - mu1)
  lam, vec = np.linalg.eigh(scatter1)
  lam, vec = lam[::-1], vec[:, ::-1]
  e_bar = lam[k:].mean()
  ppca = (vec[:, :k] * (lam[:k] - e_bar)) @ vec[:, :k].T + e_bar * np.eye(d)
  np.testing.assert_allclose(np.trace(ppca), np.trace(scatter1))
  W2 = W1 + w2.sum()
  mu2 = (W1 * mu1 + w2 @ x2) / W2
  expected = (ppca + W1 * np.outer(mu1 - mu2, mu1 - mu2)
              + (w2[:, None] * (x2 - mu2)).T @ (x2 - mu2)) / W2
  np.testing.assert_allclose(np.asarray(st.mean[0], np.float64), mu2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(_cov(st)[0], np.float64), expected, rtol=1e-4,
                             atol=1e-4)
  assert float(st.jitter[0]) > 0               # the isotropic rest, scaled by W1 / W2
  np.testing.assert_allclose(float(st.jitter[0]), e_bar / W2, rtol=1e-4)


def test_statistics_memory_is_bounded_by_the_mode():
  """stats_bytes: full square-root ~ M (2D + merge) D, low rank M (k + merge) D (+ the means;
  row counts rounded up to the sampler's chunk),
  diag 2 M D (means and variances)."""
  m, d, n, block = 10, 4096, 320, 16
  per_merge = (-(-(n + m) // block) + m) * block
  full = stats.nbytes(jax.eval_shape(lambda: stats.init_sqrt(
      m, d, stats.sqrt_capacity(d, n, m, block))))
  low = stats.nbytes(jax.eval_shape(lambda: stats.init_sqrt(
      m, d, stats.lowrank_capacity(64, d, n, m, block))))
  diag = stats.nbytes(jax.eval_shape(lambda: stats.init_diag(m, d)))
  assert full >= m * (2 * d + per_merge) * d * 4
  mean = m * d * 4
  rows = -(-(64 + per_merge) // 64) * 64      # rounded up to the sampler's 64-row chunks
  assert m * (64 + per_merge) * d * 4 <= low <= m * rows * d * 4 + mean + 1024
  assert 2 * m * d * 4 <= diag <= 2 * m * d * 4 + 1024
  assert diag < low < full


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("rank", [0, 2])
def test_make_room_then_merge_equals_merge(rank):
  """merge = make_room (the conditional compression) + merge(room_made=True), exactly."""
  x, labels, w = _rows(5)
  cap = 2 + 32 if rank else 40        # room for the rank (or D) rows and one merge's blocks
  a = b = stats.init_sqrt(M, D, cap)
  compressed = False
  for i in range(0, N, 12):
    xs, ls, ws = (jnp.asarray(v[i:i + 12], t) for v, t in
                  ((x, jnp.float32), (labels, jnp.int32), (w, jnp.float32)))
    before = np.asarray(a.used)
    a = stats.merge(a, xs, ls, ws, jitter=1e-5, rank=rank)
    compressed |= bool(np.any(np.asarray(a.used) < before))
    b = stats.make_room(b, ls, ws, rank=rank)
    b = stats.merge(b, xs, ls, ws, jitter=1e-5, rank=rank, room_made=True)
    assert int(jnp.max(b.used)) <= cap
  assert compressed
  chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-6)
