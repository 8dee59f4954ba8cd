"""Per-label weighted Gaussian statistics of activations (paper eq. 11-12, spec §1.5).

The server keeps, for every label y, the weighted mean mu_y and covariance Sigma_y of all real
activations it has received, each row weighted by its tag w_i (spec §1.6). New rows arrive in
batches (one server update's buffer) and are merged by the exact weighted parallel
(Chan/Welford) recurrence, which equals eq. (11)-(12) applied row by row:

    W' = W + W_b,   mu' = (W mu + sum_i w_i a_i) / W'
    W' Sigma' = W Sigma + W (mu - mu')(mu - mu')^T + sum_i w_i (a_i - mu')(a_i - mu')^T  [+ W' r I]

i.e. the old statistics enter as one pseudo-row mu with weight W. REF adds r = 1e-5 * I on every
merge after the first (spec §1.5, §6.3); the paper adds nothing (`jitter=0`).

This module is the statistics' interface (`merge`, `sample`, `refresh_factors`, `covariance`)
over three representations:
- the square-root factor (`sqrt_stats.SqrtStats`, the default, `stats.method="sqrt"`): exact,
  no Cholesky; also its low-rank truncation (`stats.covariance="lowrank"`);
- the dense scatter with cached Cholesky factors (`GaussianStats`, REF-literal,
  `stats.method="cholesky"`), here;
- per-dimension variances (`DiagStats`, `stats.covariance="diag"`), here.
The merge's shared row form lives in `stats_merge.py`.

The dense form stores the unnormalised scatter S_y = W_y Sigma_y, so a merge only *adds* outer
products of the rows of label y to S_y: the rows of a batch are sorted into label-pure blocks and
each block's Gram matrix is added to its label's slab, N D^2 work in total instead of M N D^2.

Sampling (REF: torch MultivariateNormal) draws mu + L z with L = chol(Sigma). A factor is
refreshed only for labels whose Sigma changed since the last factorisation and that need samples
(spec §6.20: semantics-preserving). If a factorisation fails (NaN in JAX), a diagonal jitter
1e-6, 1e-5, ... is added inside jitted code, as REF retries (§1.5). Where every try fails REF
raises; here the label falls back to a diagonal factor and the fallback is counted
(`refresh_factors(..., report=True)`), reported by the server update (metrics
"stats_fallbacks") and logged as a warning by the GAS runners.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import struct

# The square-root factor's public names are re-exported: `stats` is the one entry point.
from gas_jax.sqrt_stats import (SqrtStats, compress_label, init_sqrt,  # noqa: F401
                                lowrank_capacity, make_room, merge_sqrt, overflowing,
                                sample_sqrt, sampler_impl, sqrt_capacity)
from gas_jax.stats_merge import PerLabel, label_blocks, merge_rows  # noqa: F401

REF_JITTER = 1e-5
# REF's commented-out diagonal variant samples mu + sqrt(var + 1e-5) eps (utils.py,
# `std = torch.sqrt(variance + 1e-5)`), on top of the 1e-5 its merges accumulate in var.
DIAG_SAMPLE_EPS = 1e-5
_HIGHEST = jax.lax.Precision.HIGHEST


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


def covariance(stats) -> jax.Array:
  """Sigma_y for every label ([M, D, D]; zeros for unseen labels). Explicit: for tests/debug."""
  w = jnp.where(stats.seen, stats.weight, 1.0)
  if isinstance(stats, DiagStats):
    return jax.vmap(jnp.diag)(stats.var + stats.jitter[:, None]) * stats.seen[:, None, None]
  if isinstance(stats, SqrtStats):
    gram = jnp.einsum("mcd,mce->mde", stats.rows, stats.rows, precision=_HIGHEST)
    eye = jnp.eye(stats.dim, dtype=gram.dtype)
    return (gram / w[:, None, None] + stats.jitter[:, None, None] * eye) * stats.seen[:, None, None]
  return stats.scatter / w[:, None, None]


def nbytes(stats) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(stats))


def merge(stats, x: jax.Array, labels: jax.Array, w: jax.Array, *,
          jitter: float = REF_JITTER, block: int = 16, rank: int = 0, room_made: bool = False):
  """Merges rows x [N, D] with labels [N] and weights w [N] (0 = ignore) into the statistics.

  rank > 0 (square-root factor only; `stats.covariance="lowrank"`): when a label's factor is
  full it is truncated to its top `rank` directions plus an isotropic rest
  (`sqrt_stats._truncate`) instead of compressed exactly (memory M x (rank + one merge) x D)."""
  if isinstance(stats, SqrtStats):
    return merge_sqrt(stats, x, labels, w, jitter, block, rank, room_made)
  if isinstance(stats, DiagStats):
    return _merge_diag(stats, x, labels, w, jitter)
  m, d = stats.num_labels, stats.dim
  mean_new, w_new, jit_new, add_j, merged, blocks, block_label = merge_rows(
      stats, x, labels, w, jitter, block)

  def add_block(b, scatter):
    y = block_label[b]

    def add(s):
      xb = blocks[b]
      return s.at[y].add(jnp.matmul(xb.T, xb, precision=_HIGHEST))
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
  `refresh_factors(..., report=True)` counts and the GAS server update reports as
  metrics["stats_fallbacks"] (a warning and a metrics.jsonl field per global iteration).
  Covariances with NaN/inf entries or a negative eigenvalue beyond the ladder's reach (in
  float32 10.0 ** i overflows from i = 39, so the largest finite jitter is 1e32) fall back."""
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


def factored(stats) -> jax.Array:
  """[M] bool: the label has a Cholesky factor (possibly stale); all True for the
  representations that need none."""
  if not isinstance(stats, GaussianStats):
    return jnp.ones((stats.num_labels,), bool)
  return stats.chol[:, 0, 0] > 0     # a Cholesky factor has a positive diagonal


def refresh_factors(stats, need: jax.Array, *, report: bool = False):
  """Refactorises Sigma_y for labels with need[y] whose factor is stale (one jitted call).
  A no-op for the square-root factor, which needs no factorisation.

  report=True returns (stats, fallbacks): fallbacks (int32 scalar) counts the needed labels
  whose sampler falls back to a substitute this time -
  - Cholesky (`GaussianStats`): a label refactorised now whose every try of REF's jitter
    ladder failed, so it gets a diagonal factor (`cholesky_with_jitter`; REF raises). A
    cached factor is counted once, when it is computed, not at every later use;
  - diagonal (`DiagStats`): a needed label with a negative per-dimension variance (`sample`
    clamps it to 0; by construction - sums of squares with non-negative weights - it never
    is, so any count is a bug or a negative weight tag);
  - square-root factor, full or low-rank (`SqrtStats`): nothing is ever substituted
    (sampling needs no factorisation; the low-rank truncation's clamp of s_i^2 - e_bar at 0
    only absorbs rounding, as e_bar <= s_k^2 <= s_i^2), so always 0."""
  if isinstance(stats, SqrtStats):
    return (stats, jnp.zeros((), jnp.int32)) if report else stats
  if isinstance(stats, DiagStats):
    if not report:
      return stats
    bad = jnp.any(stats.var < 0, axis=1) & need & stats.seen
    return stats, jnp.sum(bad.astype(jnp.int32))
  todo = need & stats.seen & ~stats.chol_fresh
  cov = covariance(stats)

  def one(args):
    c, l, do = args
    return jax.lax.cond(do, functools.partial(cholesky_with_jitter, report=True),
                        lambda _: (l, jnp.zeros((), bool)), c)

  chol, fell_back = jax.lax.map(one, (cov, stats.chol, todo))
  stats = stats.replace(chol=chol, chol_fresh=stats.chol_fresh | todo)
  return (stats, jnp.sum(fell_back.astype(jnp.int32))) if report else stats


def report_fallbacks(global_iteration: int, server_outputs) -> int:
  """Host side, once per global iteration: the sum of its server updates'
  metrics["stats_fallbacks"] (device_get outputs; None entries skipped), which the GAS runners
  write as the metrics.jsonl field `stats_fallbacks`; a warning names the count when > 0."""
  n = int(sum(int(np.sum(o["stats_fallbacks"])) for o in server_outputs
              if o is not None and "stats_fallbacks" in o))
  if n:
    logging.warning(
        "global iteration %d: %d Gaussian-statistics fallback(s): a label's covariance could "
        "not be factorised at any jitter of REF's ladder (1e-6, 1e-5, ...; REF raises here) and "
        "was sampled from a diagonal factor (or a negative diagonal variance was clamped)",
        global_iteration, n)
  return n


def sample(stats, key: jax.Array, num: int, need=None, impl: str = "",
           rows=None, diag_eps: float = 0.0) -> jax.Array:
  """num samples per label ([M, num, D]): mu_y + L_y z with the cached Cholesky factors, or
  mu_y + G_y^T z1 / sqrt(W_y) + sqrt(r_y) z2 with the square-root factor, or
  mu_y + sqrt(var_y + r_y + diag_eps) z with the diagonal statistics (diag_eps: REF's
  commented-out diagonal variant adds `DIAG_SAMPLE_EPS` = 1e-5 here, `stats.diag_rule="ref"`;
  ignored by the other representations).

  need [M] bool (optional): labels whose samples are used; rows [M] int (optional): only label
  y's first rows[y] samples are used. The square-root factor's "loop" sampler (`sampler_impl`,
  impl "" = the backend's default) returns the mean for the others, and computes label y's
  samples for rows[y] rounded up to one of a few sizes (multiples of 8 up to 32 rows); the
  samples it computes are the same whatever rows says."""
  if isinstance(stats, SqrtStats):
    return sample_sqrt(stats, key, num, need, impl, rows)
  if isinstance(stats, DiagStats):
    z = jax.random.normal(key, (stats.num_labels, num, stats.dim), stats.mean.dtype)
    sd = jnp.sqrt(jnp.maximum(stats.var, 0.0) + stats.jitter[:, None] + diag_eps)
    return stats.mean[:, None, :] + sd[:, None, :] * z
  z = jax.random.normal(key, (stats.num_labels, num, stats.dim), stats.mean.dtype)
  return stats.mean[:, None, :] + jnp.einsum("mnd,med->mne", z, stats.chol, precision=_HIGHEST)


# ---------------------------------------------------------------------------------------------
# Diagonal covariance (REF's commented-out variant, spec §3.5): for high-dimensional splits.


@struct.dataclass
class DiagStats(PerLabel):
  """Per-label weighted mean and per-dimension variance; Sigma_y = diag(var_y) + r_y I."""
  mean: jax.Array      # [M, D]
  var: jax.Array       # [M, D]
  weight: jax.Array    # [M]
  jitter: jax.Array    # [M]
  seen: jax.Array      # [M] bool


def init_diag(num_labels: int, dim: int, dtype=jnp.float32) -> DiagStats:
  return DiagStats(mean=jnp.zeros((num_labels, dim), dtype),
                   var=jnp.zeros((num_labels, dim), dtype),
                   weight=jnp.zeros((num_labels,), dtype), jitter=jnp.zeros((num_labels,), dtype),
                   seen=jnp.zeros((num_labels,), bool))


def _merge_diag(stats: DiagStats, x, labels, w, jitter):
  m = stats.num_labels
  x = x.astype(stats.mean.dtype)
  w = w.astype(stats.mean.dtype)
  onehot = jax.nn.one_hot(labels, m, dtype=x.dtype) * w[:, None]
  wb = onehot.sum(0)
  merged = wb > 0
  old_w = jnp.where(stats.seen, stats.weight, 0.0)
  w_new = old_w + wb
  w_safe = jnp.where(merged, w_new, 1.0)
  mean_new = jnp.where(merged[:, None], (old_w[:, None] * stats.mean
                                         + jnp.matmul(onehot.T, x, precision=_HIGHEST))
                       / w_safe[:, None], stats.mean)
  sq = jnp.matmul(onehot.T, jnp.square(x - mean_new[labels]), precision=_HIGHEST)
  scatter = old_w[:, None] * (stats.var + jnp.square(stats.mean - mean_new)) + sq
  add_j = jnp.where(merged & stats.seen, jitter, 0.0)
  return stats.replace(
      mean=mean_new, var=jnp.where(merged[:, None], scatter / w_safe[:, None], stats.var),
      weight=jnp.where(merged, w_new, stats.weight),
      jitter=jnp.where(merged, old_w / w_safe * stats.jitter + add_j, stats.jitter),
      seen=stats.seen | merged)


@functools.partial(jax.jit, static_argnames=("jitter", "block", "rank"))
def merge_jit(stats, x, labels, w, jitter=REF_JITTER, block=16, rank=0):
  return merge(stats, x, labels, w, jitter=jitter, block=block, rank=rank)
