"""Dense covariance with cached Cholesky factors (REF-literal, `stats.method="cholesky"`).

The state stores the unnormalised scatter S_y = W_y Sigma_y, so a merge (paper eq. 11-12 in the
row form of `welford.merge_rows`) only *adds* outer products of the rows of label y to S_y: the
rows of a batch are sorted into label-pure blocks and each block's Gram matrix is added to its
label's slab, N D^2 work in total instead of M N D^2.

Sampling (REF: torch MultivariateNormal) draws mu + L z with L = chol(Sigma). A factor is
refreshed only for labels whose Sigma changed since the last factorisation and that need samples
(spec §6.20: semantics-preserving). If a factorisation fails (NaN in JAX), a diagonal jitter
1e-6, 1e-5, ... is added inside jitted code, as REF retries (spec §1.5). Where every try fails
REF raises; here the label falls back to a diagonal factor and the fallback is counted
(`refresh`), reported by the server update (metrics "stats_fallbacks") and logged as a warning
by the GAS runners.
"""
import functools

import jax
import jax.numpy as jnp
from flax import struct

from gas_jax.stats import welford
from gas_jax.stats.base import HIGHEST, Kind, PerLabel


@struct.dataclass
class GaussianStats(PerLabel):
  mean: jax.Array      # [M, D]
  scatter: jax.Array   # [M, D, D]  S_y = W_y * Sigma_y (REF jitter included)
  weight: jax.Array    # [M]        W_y, sum of the tags of every row merged so far
  jitter: jax.Array    # [M]        accumulated isotropic jitter r_y contained in Sigma_y
  seen: jax.Array      # [M] bool   label has statistics
  chol: jax.Array      # [M, D, D]  cached Cholesky factor of Sigma_y
  chol_fresh: jax.Array  # [M] bool  chol matches the current Sigma_y


def init(num_labels: int, dim: int, dtype=jnp.float32) -> GaussianStats:
  return GaussianStats(
      mean=jnp.zeros((num_labels, dim), dtype),
      scatter=jnp.zeros((num_labels, dim, dim), dtype),
      weight=jnp.zeros((num_labels,), dtype),
      jitter=jnp.zeros((num_labels,), dtype),
      seen=jnp.zeros((num_labels,), bool),
      chol=jnp.zeros((num_labels, dim, dim), dtype),
      chol_fresh=jnp.zeros((num_labels,), bool))


def covariance(stats: GaussianStats) -> jax.Array:
  w = jnp.where(stats.seen, stats.weight, 1.0)
  return stats.scatter / w[:, None, None]


def merge(stats: GaussianStats, x, labels, w, *, jitter, block, rank=0, room_made=False):
  """Eq. (11)-(12): each label-pure block's Gram matrix is added to its label's scatter, and
  REF's jitter as W' r I (Sigma' += r I <=> S' += W' r I). rank and room_made: unused."""
  del rank, room_made
  m, d = stats.num_labels, stats.dim
  mean_new, w_new, jit_new, add_j, merged, blocks, block_label = welford.merge_rows(
      stats, x, labels, w, jitter, block)

  def add_block(b, scatter):
    y = block_label[b]

    def add(s):
      xb = blocks[b]
      return s.at[y].add(jnp.matmul(xb.T, xb, precision=HIGHEST))
    return jax.lax.cond(y < m, add, lambda s: s, scatter)

  scatter = jax.lax.fori_loop(0, block_label.shape[0], add_block, stats.scatter)
  # Sigma' += j I  <=>  S' += W' j I.
  scatter = scatter + (add_j * w_new)[:, None, None] * jnp.eye(d, dtype=scatter.dtype)
  return stats.replace(
      mean=mean_new, scatter=scatter, weight=w_new, jitter=jit_new,
      seen=stats.seen | merged, chol_fresh=stats.chol_fresh & ~merged)


def cholesky_with_jitter(cov: jax.Array, max_tries: int = 100, *, report: bool = False):
  """chol(cov); on failure chol(cov + eps I) for eps = 1e-6, 1e-5, ... (REF's retry ladder).

  If every try fails (REF raises `ValueError` there), the factor is diagonal instead:
  sqrt(max(diag(cov), 0) + 1e-6), so that a run can go on, but the substitution must not be
  silent: report=True returns (factor, fell_back) with fell_back a bool scalar, which
  `refresh` counts and the GAS server update reports as metrics["stats_fallbacks"] (a warning
  and a metrics.jsonl field per global iteration). Covariances with NaN/inf entries or a
  negative eigenvalue beyond the ladder's reach (in float32 10.0 ** i overflows from i = 39,
  so the largest finite jitter is 1e32) fall back."""
  eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
  cov = 0.5 * (cov + cov.T)

  def failed(l):
    return ~jnp.all(jnp.isfinite(l))

  def eps(i):
    return jnp.asarray(1e-6, cov.dtype) * jnp.asarray(10.0, cov.dtype) ** i

  def body(carry):
    i, _ = carry
    return i + 1, jnp.linalg.cholesky(cov + eps(i) * eye)

  # A try whose jitter overflowed (inf: from i = 39 in float32) cannot succeed (an infinite
  # diagonal gives an infinite factor), so the ladder stops there: same result, fewer tries.
  l0 = jnp.linalg.cholesky(cov)
  _, l = jax.lax.while_loop(
      lambda c: failed(c[1]) & (c[0] < max_tries) & jnp.isfinite(eps(c[0])), body, (0, l0))
  fell_back = failed(l)
  diag = jnp.sqrt(jnp.clip(jnp.diagonal(cov), 0.0) + 1e-6)
  l = jnp.where(fell_back, jnp.diag(diag), l)
  return (l, fell_back) if report else l


def factored(stats: GaussianStats) -> jax.Array:
  return stats.chol[:, 0, 0] > 0     # a Cholesky factor has a positive diagonal


def refresh(stats: GaussianStats, need: jax.Array):
  """Refactorises Sigma_y for the labels with need[y] whose factor is stale (one jitted call).
  Fallbacks: the labels refactorised now whose every try of REF's jitter ladder failed, so
  they get a diagonal factor (`cholesky_with_jitter`; REF raises). A cached factor is counted
  once, when it is computed, not at every later use."""
  todo = need & stats.seen & ~stats.chol_fresh
  cov = covariance(stats)

  def one(args):
    c, l, do = args
    return jax.lax.cond(do, functools.partial(cholesky_with_jitter, report=True),
                        lambda _: (l, jnp.zeros((), bool)), c)

  chol, fell_back = jax.lax.map(one, (cov, stats.chol, todo))
  stats = stats.replace(chol=chol, chol_fresh=stats.chol_fresh | todo)
  return stats, jnp.sum(fell_back.astype(jnp.int32))


def sample(stats: GaussianStats, key, num, *, need=None, impl="", rows=None, diag_eps=0.0):
  """mu_y + L_y z with the cached Cholesky factors (every label; need, impl, rows and
  diag_eps are not used)."""
  del need, impl, rows, diag_eps
  z = jax.random.normal(key, (stats.num_labels, num, stats.dim), stats.mean.dtype)
  return stats.mean[:, None, :] + jnp.einsum("mnd,med->mne", z, stats.chol, precision=HIGHEST)


KIND = Kind(name="cholesky", merge=merge, sample=sample, refresh=refresh, covariance=covariance,
            factored=factored)
