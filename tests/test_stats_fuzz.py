"""Fuzz: sampling from 1000 random rank-deficient or ill-conditioned covariances never gives NaN."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from gas_jax import stats

N_CASES, D = 1000, 16


def _random_psd(rng):
  """Covariances with random rank (0..D), eigenvalues over 16 decades, scale 1e-6..1e6,
  and round-off asymmetry / tiny negative eigenvalues, as float32 accumulation produces."""
  out = np.empty((N_CASES, D, D), np.float32)
  for i in range(N_CASES):
    rank = rng.integers(0, D + 1)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    eig = np.zeros(D)
    eig[:rank] = 10.0 ** rng.uniform(-8, 8, rank)
    eig[rank:] = -10.0 ** rng.uniform(-12, -7, D - rank) * rng.integers(0, 2)
    cov = (q * eig) @ q.T * 10.0 ** rng.uniform(-6, 6)
    cov += rng.normal(size=(D, D)) * 1e-7 * np.abs(cov).max()   # not exactly symmetric
    out[i] = cov
  return out


def test_cholesky_ladder_never_nan():
  covs = jnp.asarray(_random_psd(np.random.default_rng(0)))
  factors = jax.jit(jax.vmap(stats.cholesky_with_jitter))(covs)
  z = jax.random.normal(jax.random.key(0), (N_CASES, D, 8))
  samples = jnp.einsum("nde,nek->ndk", factors, z)
  chex.assert_tree_all_finite((factors, samples))


def test_sqrt_factor_sampling_never_nan():
  """Few rows (rank-deficient), duplicated rows, extreme scales and weights, merged in steps."""
  rng = np.random.default_rng(1)
  m = 4
  cap = stats.sqrt_capacity(D, 8, m, 4)
  merge = jax.jit(lambda s, x, y, w: stats.merge(s, x, y, w, block=4))
  sample = jax.jit(lambda s, k: stats.sample(s, k, 8))
  for case in range(N_CASES // m):
    st = stats.init_sqrt(m, D, cap)
    for step in range(rng.integers(1, 4)):
      x = rng.normal(size=(8, D)) * 10.0 ** rng.uniform(-6, 6)
      x[rng.integers(0, 8)] = x[0]                         # duplicates
      x[:, rng.integers(0, D, size=D // 2)] = 0.0          # dead dimensions (ReLU)
      w = 10.0 ** rng.uniform(-3, 7, 8)
      st = merge(st, jnp.asarray(x, jnp.float32), jnp.asarray(rng.integers(0, m, 8)),
                 jnp.asarray(w, jnp.float32))
    chex.assert_tree_all_finite(sample(st, jax.random.key(case)))
