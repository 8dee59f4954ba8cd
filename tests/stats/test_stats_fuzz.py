"""Fuzz: 1000 random rank-deficient or ill-conditioned covariances.

Every output being finite proves nothing on its own (the Cholesky ladder's diagonal fallback is
finite too), so each case must also factorise without a fallback (the `report=True` counter)
and agree with a float64 numpy reference: the factor L of `cholesky_with_jitter` satisfies
L L^T = sym(cov) + eps I with eps the FIRST rung of REF's ladder (0, 1e-6, 1e-5, ...) that works
(the rung before is not positive definite in float64, up to float32 rounding); the statistics
(square-root factor and dense scatter) equal the float64 weighted mean / covariance of all rows
merged plus REF's jitter recurrence, their samplers never fall back and give finite samples.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from gas_jax import stats

N_CASES, D = 1000, 16
# The rungs of REF's ladder that are finite in float32 (10.0 ** 39 overflows).
LADDER = np.concatenate([[0.0], 1e-6 * 10.0 ** np.arange(39)])
# Backward error of a float32 Cholesky of a 16x16 matrix, relative to its largest entry:
# c n u ~ 16 * 6e-8 = 1e-6; 2e-5 leaves a margin of 20.
TOL = 2e-5


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


def test_cholesky_ladder_never_falls_back_and_matches_float64():
  covs = _random_psd(np.random.default_rng(0))
  factors, fell_back = jax.jit(jax.vmap(
      lambda c: stats.cholesky_with_jitter(c, report=True)))(jnp.asarray(covs))
  assert int(np.sum(np.asarray(fell_back))) == 0
  z = jax.random.normal(jax.random.key(0), (N_CASES, D, 8))
  chex.assert_tree_all_finite((factors, jnp.einsum("nde,nek->ndk", factors, z)))
  rungs = np.zeros(len(LADDER), int)
  for cov, l in zip(covs, np.asarray(factors, np.float64)):
    a = 0.5 * (cov.astype(np.float64) + cov.T.astype(np.float64))
    np.testing.assert_array_equal(np.triu(l, 1), 0.0)
    err = l @ l.T - a
    eps = float(np.mean(np.diag(err)))
    scale = np.abs(a).max() + abs(eps)
    # The rungs that L L^T - A = eps I matches within float32 rounding (several when the rung
    # is below the rounding of A); the smallest one must follow a rung that failed.
    fits = np.flatnonzero(np.abs(LADDER - eps) <= TOL * scale)
    assert fits.size, (eps, scale)
    j = int(fits[0])
    rungs[j] += 1
    assert np.abs(err - LADDER[j] * np.eye(D)).max() <= TOL * scale
    if j > 0:   # the rung before failed: not (safely) positive definite in float64
      lam = np.linalg.eigvalsh(a + LADDER[j - 1] * np.eye(D)).min()
      assert lam <= TOL * scale, (j, lam, scale)
  # Both kinds occur: jitters below A's rounding (rung 0 fits) and visible ones.
  assert rungs[0] > 100 and rungs[1:].sum() > 100


def _reference(xs, ys, ws, m, jitter):
  """float64: per label the weighted mean and biased covariance of every row merged, plus REF's
  jitter r' = (W / W') r + jitter on each merge after the label's first."""
  mean, cov = np.zeros((m, D)), np.zeros((m, D, D))
  r, w_tot = np.zeros(m), np.zeros(m)
  for x, y, w in zip(xs, ys, ws):
    for lab in range(m):
      wb = w[y == lab].sum()
      if wb > 0:
        if w_tot[lab] > 0:
          r[lab] = w_tot[lab] / (w_tot[lab] + wb) * r[lab] + jitter
        w_tot[lab] += wb
  x, y, w = (np.concatenate(v).astype(np.float64) for v in (xs, ys, ws))
  for lab in range(m):
    sel = (y == lab) & (w > 0)
    if sel.any():
      mean[lab] = np.average(x[sel], axis=0, weights=w[sel])
      c = x[sel] - mean[lab]
      cov[lab] = (c * w[sel][:, None]).T @ c / w[sel].sum() + r[lab] * np.eye(D)
  return mean, cov, w_tot > 0


def test_statistics_never_fall_back_and_match_float64():
  """Few rows (rank-deficient), duplicated rows, dead dimensions, extreme scales and weights,
  merged in steps into both the square-root factor and the dense scatter (Cholesky)."""
  rng = np.random.default_rng(1)
  m = 4
  cap = stats.sqrt_capacity(D, 8, m, 4)
  merge = jax.jit(lambda s, x, y, w: stats.merge(s, x, y, w, block=4))
  refresh = jax.jit(lambda s, n: stats.refresh_factors(s, n, report=True))
  sample = jax.jit(lambda s, k: stats.sample(s, k, 8))
  cov_fn = jax.jit(stats.covariance)
  worst = 0.0
  for case in range(N_CASES // m):
    sq, ch = stats.init_sqrt(m, D, cap), stats.init(m, D)
    xs, ys, ws = [], [], []
    for _ in range(rng.integers(1, 4)):
      x = rng.normal(size=(8, D)) * 10.0 ** rng.uniform(-6, 6)
      x[rng.integers(0, 8)] = x[0]                         # duplicates
      x[:, rng.integers(0, D, size=D // 2)] = 0.0          # dead dimensions (ReLU)
      x = x.astype(np.float32)
      y = rng.integers(0, m, 8)
      w = (10.0 ** rng.uniform(-3, 7, 8)).astype(np.float32)
      xs.append(x), ys.append(y), ws.append(w)
      args = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(w))
      sq, ch = merge(sq, *args), merge(ch, *args)
    mean, cov, seen = _reference(xs, ys, ws, m, stats.REF_JITTER)
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    x_max = [np.abs(x_all[y_all == lab]).max(initial=0.0) for lab in range(m)]
    for st in (sq, ch):
      np.testing.assert_array_equal(np.asarray(st.seen), seen)
      st, fallbacks = refresh(st, jnp.asarray(seen))
      assert int(fallbacks) == 0, case
      chex.assert_tree_all_finite(sample(st, jax.random.key(case)))
      got_mean = np.asarray(st.mean, np.float64)
      got_cov = np.asarray(cov_fn(st), np.float64)
      for lab in np.flatnonzero(seen):
        # Relative to the largest covariance entry; floored at 1e-8 x the largest squared
        # entry of the label's rows, for labels whose rows are all equal (one row, or
        # duplicates): their covariance is 0 and float32 centring leaves ~(1e-7 |x|)^2.
        scale = max(np.abs(cov[lab]).max(), 1e-8 * x_max[lab] ** 2, 1e-30)
        err = np.abs(got_cov[lab] - cov[lab]).max() / scale
        worst = max(worst, err)
        # Measured worst 4.4e-6 (float32 sums of up to 24 weighted outer products over 10
        # decades of weights); 1e-4 leaves a margin of 20.
        assert err <= 1e-4, (case, lab, err)
        np.testing.assert_allclose(got_mean[lab], mean[lab],
                                   atol=1e-5 * np.abs(mean[lab]).max() + 1e-4 * np.sqrt(scale))
  assert worst > 0.0
