"""Shared cases of the statistics tests (tests/stats/): the shapes, the rows of the standard
merge, the float64 expectations and the check of merged statistics against them."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from gas_jax import stats
from gas_jax.stats import welford

M = 5          # labels; label 3 only has weight-0 rows, label 4 has no rows at all
D = 4
N = 60         # rows per merge call (every grouping is padded to this)
METHODS = ("cholesky", "sqrt")

refresh = jax.jit(stats.refresh_factors)
sample = jax.jit(stats.sample, static_argnums=2)
covariance = jax.jit(stats.covariance)
label_blocks = jax.jit(welford.label_blocks, static_argnums=(2, 3))


def init(method, num_labels=M, dim=D, batch_rows=N, block=16):
  if method == "cholesky":
    return stats.init(num_labels, dim)
  cap = stats.sqrt_capacity(dim, batch_rows, num_labels, block)
  return stats.init_sqrt(num_labels, dim, cap)


def merge(st, x, labels, w, jitter=0.0, block=16):
  """merge_jit of up to N rows, padded to N rows with weight-0 junk of random labels."""
  n = len(labels)
  rng = np.random.default_rng(n)
  px = np.concatenate([x, rng.normal(size=(N - n, x.shape[1])) * 50.0])
  pl = np.concatenate([labels, rng.integers(0, st.num_labels, size=N - n)])
  pw = np.concatenate([w, np.zeros(N - n)])
  return stats.merge_jit(st, jnp.asarray(px, jnp.float32), jnp.asarray(pl, jnp.int32),
                         jnp.asarray(pw, jnp.float32), jitter=jitter, block=block)


def compressions(before, after):
  """Labels whose square-root factor was compressed (rows in use went down) by a merge."""
  if not isinstance(after, stats.SqrtStats):
    return 0
  return int(np.sum(np.asarray(after.used) < np.asarray(before.used)))


def rows(seed=0):
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


def expected(x, labels, w, num_labels=M):
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


def merge_small_batches(method, x, labels, w, seed, block=16):
  """Random order, random fill (1..6 rows) per merge call. Returns (stats, compressions)."""
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(labels))
  st = init(method, block=block)
  i, count = 0, 0
  while i < len(perm):
    take = perm[i:i + int(rng.integers(1, 7))]
    i += len(take)
    new = merge(st, x[take], labels[take], w[take], block=block)
    count += compressions(st, new)
    st = new
  return st, count


def check_against_numpy(st, x, labels, w):
  mu, cov, wsum = expected(x, labels, w)
  seen = np.array([True, True, True, False, False])
  chex.assert_trees_all_equal(np.asarray(st.seen), seen)
  chex.assert_trees_all_close(np.asarray(st.weight, np.float64), wsum, rtol=1e-5)
  chex.assert_trees_all_close(np.asarray(st.mean, np.float64), mu, atol=1e-4, rtol=1e-5)
  chex.assert_trees_all_close(np.asarray(covariance(st), np.float64), cov, atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_equal(np.asarray(st.jitter), np.zeros(M, np.float32))
  # Never merged (label 4) and only-weight-0 (label 3): unseen, all statistics zero.
  for y in (3, 4):
    assert float(st.weight[y]) == 0.0
    chex.assert_trees_all_equal(np.asarray(st.mean[y]), np.zeros(D, np.float32))
    if isinstance(st, stats.SqrtStats):
      assert int(st.used[y]) == 0
      chex.assert_trees_all_equal(np.asarray(st.rows[y]), np.zeros(st.rows.shape[1:], np.float32))
    else:
      chex.assert_trees_all_equal(np.asarray(st.scatter[y]), np.zeros((D, D), np.float32))
  if isinstance(st, stats.GaussianStats):
    assert not np.any(np.asarray(st.chol_fresh))
