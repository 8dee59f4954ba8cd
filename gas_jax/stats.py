"""Per-label weighted Gaussian statistics of activations (paper eq. 11-12, spec §1.5).

The server keeps, for every label y, the weighted mean mu_y and covariance Sigma_y of all real
activations it has received, each row weighted by its tag w_i (spec §1.6). New rows arrive in
batches (one server update's buffer) and are merged by the exact weighted parallel
(Chan/Welford) recurrence, which equals eq. (11)-(12) applied row by row:

    W' = W + W_b,   mu' = (W mu + sum_i w_i a_i) / W'
    W' Sigma' = W Sigma + W (mu - mu')(mu - mu')^T + sum_i w_i (a_i - mu')(a_i - mu')^T  [+ W' r I]

i.e. the old statistics enter as one pseudo-row mu with weight W. REF adds r = 1e-5 * I on every
merge after the first (spec §1.5, §6.3); the paper adds nothing (`jitter=0`).

We store the unnormalised scatter S_y = W_y Sigma_y, so a merge only *adds* outer products of the
rows of label y to S_y: the rows of a batch are sorted into label-pure blocks and each block's
Gram matrix is added to its label's slab, N D^2 work in total instead of M N D^2.

Sampling (REF: torch MultivariateNormal) draws mu + L z with L = chol(Sigma). A factor is
refreshed only for labels whose Sigma changed since the last factorisation and that need samples
(spec §6.20: semantics-preserving). If a factorisation fails (NaN in JAX), a diagonal jitter
1e-6, 1e-5, ... is added inside jitted code, as REF retries (§1.5), so a sample is never NaN.
"""
import functools

import chex
import jax
import jax.numpy as jnp
from flax import struct

REF_JITTER = 1e-5
_HIGHEST = jax.lax.Precision.HIGHEST


class _PerLabel:
  """Shape accessors shared by the statistics' representations (all hold `mean` [M, D])."""

  @property
  def num_labels(self) -> int:
    return self.mean.shape[0]

  @property
  def dim(self) -> int:
    return self.mean.shape[1]


@struct.dataclass
class GaussianStats(_PerLabel):
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


def label_blocks(labels: jax.Array, valid: jax.Array, num_labels: int, block: int):
  """Positions that sort rows into blocks of `block` rows holding a single label each.

  Returns (pos [N], block_label [nb]); invalid rows get position nb*block (dropped by a
  scatter with mode="drop"); block_label == num_labels marks an empty block. nb is static:
  ceil(N / block) + num_labels.
  """
  n = labels.shape[0]
  nb = -(-n // block) + num_labels
  lab = jnp.where(valid, labels, num_labels)
  onehot = jax.nn.one_hot(lab, num_labels + 1, dtype=jnp.int32)
  rank = jnp.take_along_axis(jnp.cumsum(onehot, 0), lab[:, None], 1)[:, 0] - 1
  counts = onehot.sum(0)[:num_labels]
  nblk = (counts + block - 1) // block
  ends = jnp.cumsum(nblk)
  first = jnp.concatenate([jnp.zeros((1,), ends.dtype), ends[:-1], ends[-1:]])
  pos = jnp.where(valid, first[lab] * block + rank, nb * block)
  block_label = jnp.searchsorted(ends, jnp.arange(nb), side="right")
  return pos, block_label


def _merge_rows(stats, x, labels, w, jitter, block):
  """Shared part of the merge: new mean/weight/jitter and the rows to add as outer products.

  Returns (mean, weight, jitter, merged, blocks [nb, block, D], block_label [nb]).
  """
  chex.assert_rank(x, 2)
  chex.assert_equal_shape_prefix([x, labels, w], 1)
  m, d = stats.mean.shape
  x = x.astype(stats.mean.dtype)
  w = w.astype(stats.mean.dtype)
  onehot = jax.nn.one_hot(labels, m, dtype=x.dtype) * w[:, None]       # [N, M]
  wb = onehot.sum(0)                                                   # [M]
  merged = wb > 0
  w_new = stats.weight + wb
  w_safe = jnp.where(merged, w_new, 1.0)
  wsum_x = jnp.matmul(onehot.T, x, precision=_HIGHEST)                   # [M, D]
  old_w = jnp.where(stats.seen, stats.weight, 0.0)
  mean_new = jnp.where(merged[:, None],
                       (old_w[:, None] * stats.mean + wsum_x) / w_safe[:, None], stats.mean)
  # Rows to add as outer products: the batch rows, plus one pseudo-row per merged seen label
  # (its old mean, weight W_y), all centred at the new mean and scaled by sqrt(weight).
  pseudo_w = jnp.where(merged & stats.seen, stats.weight, 0.0)
  rows = jnp.concatenate([x, stats.mean], 0)
  row_lab = jnp.concatenate([labels, jnp.arange(m, dtype=labels.dtype)], 0)
  row_w = jnp.concatenate([w, pseudo_w], 0)
  centred = (rows - mean_new[row_lab]) * jnp.sqrt(row_w)[:, None]
  pos, block_label = label_blocks(row_lab, row_w > 0, m, block)
  nb = block_label.shape[0]
  blocks = jnp.zeros((nb * block, d), x.dtype).at[pos].set(centred, mode="drop")
  add_j = jnp.where(merged & stats.seen, jitter, 0.0)     # REF: no jitter on first sight
  d_frac = jnp.where(merged, old_w / w_safe, 1.0)
  jit_new = jnp.where(merged, d_frac * stats.jitter + add_j, stats.jitter)
  return (mean_new, w_new, jit_new, add_j, merged, blocks.reshape(nb, block, d), block_label)


def merge(stats, x: jax.Array, labels: jax.Array, w: jax.Array, *,
          jitter: float = REF_JITTER, block: int = 16, rank: int = 0, room_made: bool = False):
  """Merges rows x [N, D] with labels [N] and weights w [N] (0 = ignore) into the statistics.

  rank > 0 (square-root factor only; `stats.covariance="lowrank"`): when a label's factor is
  full it is truncated to its top `rank` directions plus an isotropic rest (`_truncate`)
  instead of compressed exactly (memory M x (rank + one merge) x D)."""
  if isinstance(stats, SqrtStats):
    return _merge_sqrt(stats, x, labels, w, jitter, block, rank, room_made)
  if isinstance(stats, DiagStats):
    return _merge_diag(stats, x, labels, w, jitter)
  m, d = stats.num_labels, stats.dim
  mean_new, w_new, jit_new, add_j, merged, blocks, block_label = _merge_rows(
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


def cholesky_with_jitter(cov: jax.Array, max_tries: int = 100) -> jax.Array:
  """chol(cov); on failure chol(cov + eps I) for eps = 1e-6, 1e-5, ... (REF's retry ladder)."""
  eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
  cov = 0.5 * (cov + cov.T)

  def failed(l):
    return ~jnp.all(jnp.isfinite(l))

  def body(carry):
    i, _ = carry
    eps = jnp.asarray(1e-6, cov.dtype) * jnp.asarray(10.0, cov.dtype) ** i
    return i + 1, jnp.linalg.cholesky(cov + eps * eye)

  l0 = jnp.linalg.cholesky(cov)
  _, l = jax.lax.while_loop(lambda c: failed(c[1]) & (c[0] < max_tries), body, (0, l0))
  # Last resort (never reached in practice): a diagonal factor, so samples stay finite.
  diag = jnp.sqrt(jnp.clip(jnp.diagonal(cov), 0.0) + 1e-6)
  return jnp.where(failed(l), jnp.diag(diag), l)


def factored(stats) -> jax.Array:
  """[M] bool: the label has a Cholesky factor (possibly stale); all True for the
  representations that need none."""
  if not isinstance(stats, GaussianStats):
    return jnp.ones((stats.num_labels,), bool)
  return stats.chol[:, 0, 0] > 0     # a Cholesky factor has a positive diagonal


def refresh_factors(stats, need: jax.Array):
  """Refactorises Sigma_y for labels with need[y] whose factor is stale (one jitted call).
  A no-op for the square-root factor, which needs no factorisation."""
  if isinstance(stats, (SqrtStats, DiagStats)):
    return stats
  todo = need & stats.seen & ~stats.chol_fresh
  cov = covariance(stats)

  def one(args):
    c, l, do = args
    return jax.lax.cond(do, cholesky_with_jitter, lambda _: l, c)

  chol = jax.lax.map(one, (cov, stats.chol, todo))
  return stats.replace(chol=chol, chol_fresh=stats.chol_fresh | todo)


def sample(stats, key: jax.Array, num: int, need=None, impl: str = "") -> jax.Array:
  """num samples per label ([M, num, D]): mu_y + L_y z with the cached Cholesky factors, or
  mu_y + G_y^T z1 / sqrt(W_y) + sqrt(r_y) z2 with the square-root factor.

  need [M] bool (optional): labels whose samples are used; the square-root factor's "loop"
  sampler (`sampler_impl`, impl "" = the backend's default) returns the mean for the others."""
  if isinstance(stats, SqrtStats):
    return _sample_sqrt(stats, key, num, need, impl)
  if isinstance(stats, DiagStats):
    z = jax.random.normal(key, (stats.num_labels, num, stats.dim), stats.mean.dtype)
    sd = jnp.sqrt(jnp.maximum(stats.var, 0.0) + stats.jitter[:, None])
    return stats.mean[:, None, :] + sd[:, None, :] * z
  z = jax.random.normal(key, (stats.num_labels, num, stats.dim), stats.mean.dtype)
  return stats.mean[:, None, :] + jnp.einsum("mnd,med->mne", z, stats.chol, precision=_HIGHEST)


# ---------------------------------------------------------------------------------------------
# Square-root factor (default): Sigma_y = G_y^T G_y / W_y + r_y I, never formed explicitly.


@struct.dataclass
class SqrtStats(_PerLabel):
  """Sigma_y = G_y^T G_y / W_y + r_y I with G_y the rows sqrt(w_i)(a_i - mu) merged so far.

  A merge appends its centred rows (and the old mean's pseudo-row) to G_y; when G_y would
  overflow its capacity it is compressed to its R factor (G = QR => G^T G = R^T R, D rows).
  Samples mu + G^T z1 / sqrt(W) + sqrt(r) z2 have exactly REF's covariance, cost BLAS-3 only,
  need no Cholesky (hence no jitter ladder) and are never NaN.
  """
  mean: jax.Array      # [M, D]
  rows: jax.Array      # [M, cap, D]  G_y (unused rows are zero)
  used: jax.Array      # [M] int32    rows of G_y in use
  weight: jax.Array    # [M]
  jitter: jax.Array    # [M]  r_y
  seen: jax.Array      # [M] bool


def init_sqrt(num_labels: int, dim: int, capacity: int, dtype=jnp.float32) -> SqrtStats:
  return SqrtStats(mean=jnp.zeros((num_labels, dim), dtype),
                   rows=jnp.zeros((num_labels, capacity, dim), dtype),
                   used=jnp.zeros((num_labels,), jnp.int32),
                   weight=jnp.zeros((num_labels,), dtype), jitter=jnp.zeros((num_labels,), dtype),
                   seen=jnp.zeros((num_labels,), bool))


def _round_rows(cap: int) -> int:
  """Capacities are rounded up to a multiple of the sampler's row chunk (`_chunk`)."""
  unit = 256 if cap >= 2048 else 64 if cap >= 256 else 1
  return -(-cap // unit) * unit


def _chunk(cap: int) -> int:
  """Rows of the factor per step of the looped sampler: the largest power of two <= 256
  dividing the capacity."""
  c = 256
  while cap % c:
    c //= 2
  return c


def sqrt_capacity(dim: int, batch_rows: int, num_labels: int, block: int) -> int:
  """Rows per label: D after a compression plus room for about D more rows of merges."""
  per_merge = (-(-(batch_rows + num_labels) // block) + num_labels) * block
  return _round_rows(2 * dim + per_merge)


def lowrank_capacity(rank: int, dim: int, batch_rows: int, num_labels: int, block: int) -> int:
  """Rows per label of the low-rank factor: `rank` after a compression plus one merge."""
  per_merge = (-(-(batch_rows + num_labels) // block) + num_labels) * block
  return _round_rows(min(rank, dim) + per_merge)


def _compress(g):
  """[cap, D] -> same shape, first min(cap, D) rows = R of G = QR (G^T G preserved)."""
  r = jnp.linalg.qr(g, mode="r")
  return jnp.zeros_like(g).at[: r.shape[0]].set(r)


def _truncate(g, rank: int):
  """Probabilistic-PCA truncation of G [cap, D] (G^T G = V diag(s^2) V^T) to rank k.

  Returns (rows, e_bar): the first k rows are diag(sqrt(s_i^2 - e_bar)) V_k^T and e_bar is the
  mean discarded energy sum_{i>k} s_i^2 / (D - k), to be added isotropically. G_k^T G_k + e_bar I
  keeps the top-k eigenpairs of G^T G exactly, replaces the others by their mean, and keeps
  the trace (the maximum-likelihood rank-k + isotropic fit, Tipping & Bishop 1999)."""
  d = g.shape[1]
  _, sv, vt = jnp.linalg.svd(g, full_matrices=False)
  k = min(rank, sv.shape[0])
  e_bar = jnp.sum(jnp.square(sv[k:])) / max(d - k, 1)
  top = jnp.sqrt(jnp.maximum(jnp.square(sv[:k]) - e_bar, 0.0))[:, None] * vt[:k]
  return jnp.zeros_like(g).at[:k].set(top), e_bar


def make_room(stats, labels: jax.Array, w: jax.Array, *, block: int = 16, rank: int = 0):
  """Compresses (rank 0: exact QR) or truncates (rank k: `_truncate`) the square-root factor
  of every label whose next merge of (labels, w) would overflow its capacity; other
  representations are returned unchanged. `merge` does this first; it is public so that a
  caller can run this data-dependent branch (a `lax.cond`, which `vmap` would turn into work
  at every merge) separately and then call `merge(..., room_made=True)`."""
  if not isinstance(stats, SqrtStats):
    return stats
  m, cap, d = stats.rows.shape
  onehot = jax.nn.one_hot(labels, m, dtype=jnp.int32) * (w > 0)[:, None]
  rows_y = onehot.sum(0) + (stats.seen & (onehot.sum(0) > 0))    # + the old mean's pseudo-row
  overflow = stats.used + (-(-rows_y // block)) * block > cap
  min_rows = min(cap, d) if not rank else min(rank, cap, d)
  old_w = jnp.where(stats.seen, stats.weight, 1.0)

  def compress(carry):
    rows, used, jit, todo = carry
    y = jnp.argmax(todo)
    g = jax.lax.dynamic_index_in_dim(rows, y, keepdims=False)
    if rank:
      # Sigma ~ G_k^T G_k / W + (r + e_bar / W) I; a merge then scales r by W / W'.
      g, e_bar = _truncate(g, rank)
      jit = jit.at[y].add(e_bar / old_w[y])
    else:
      g = _compress(g)
    return (jax.lax.dynamic_update_index_in_dim(rows, g, y, 0),
            used.at[y].set(jnp.int32(min_rows)), jit, todo.at[y].set(False))

  # In place, one overflowing label per iteration (usually none): a loop over all labels with
  # a `lax.cond` each cost ~0.7 ms per label on the CPU even when nothing was compressed.
  rows, used, jit, _ = jax.lax.while_loop(lambda c: jnp.any(c[3]), compress,
                                          (stats.rows, stats.used, stats.jitter, overflow))
  return stats.replace(rows=rows, used=used, jitter=jit)


def _merge_sqrt(stats: SqrtStats, x, labels, w, jitter, block, rank=0, room_made=False):
  if not room_made:
    stats = make_room(stats, labels, w, block=block, rank=rank)
  m, cap, d = stats.rows.shape
  mean_new, w_new, jit_new, _, merged, blocks, block_label = _merge_rows(
      stats, x, labels, w, jitter, block)
  rows, used = stats.rows, stats.used

  def append(b, carry):
    rows, used = carry
    y = jnp.minimum(block_label[b], m - 1)
    ok = block_label[b] < m
    start = jnp.where(ok, used[y], 0)
    cur = jax.lax.dynamic_slice(rows, (y, start, 0), (1, block, d))
    new = jnp.where(ok, blocks[b][None], cur)
    rows = jax.lax.dynamic_update_slice(rows, new, (y, start, 0))
    return rows, used.at[y].add(jnp.where(ok, block, 0))

  rows, used = jax.lax.fori_loop(0, block_label.shape[0], append, (rows, used))
  return stats.replace(mean=mean_new, rows=rows, used=used, weight=w_new, jitter=jit_new,
                       seen=stats.seen | merged)


def sampler_impl() -> str:
  """How the square-root factor is sampled: "loop" on the CPU, "batched" elsewhere.

  "batched" is one batched matmul over every label and the factor's whole capacity (best on
  accelerators); "loop" visits only the labels that need samples and, per label, only the
  row chunks in use (about half the capacity on average), which on the CPU costs about a
  third as much. Both draw the same normals (`_z1`, `_z2`), so they give the same samples up
  to float rounding (tests/test_stats.py)."""
  return "batched" if jax.default_backend() != "cpu" else "loop"


def _z1(key, y, k, num, chunk, dtype):
  """Normals for label y's factor rows [k*chunk, (k+1)*chunk): one key per (label, chunk)."""
  return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, y), k), (num, chunk), dtype)


def _z2(key, y, num, dim, dtype):
  return jax.random.normal(jax.random.fold_in(key, y), (num, dim), dtype)


def _sample_sqrt(stats: SqrtStats, key, num, need=None, impl=""):
  m, cap, d = stats.rows.shape
  dtype = stats.mean.dtype
  k1, k2 = jax.random.split(key)
  chunk = _chunk(cap)
  inv_sqrt_w = 1.0 / jnp.sqrt(jnp.where(stats.seen, stats.weight, 1.0))
  labels = jnp.arange(m)
  if (impl or sampler_impl()) == "batched":
    z1 = jax.vmap(lambda y: jax.vmap(lambda k: _z1(k1, y, k, num, chunk, dtype))(
        jnp.arange(cap // chunk)))(labels)                        # [m, cap/chunk, num, chunk]
    z1 = jnp.moveaxis(z1, 1, 2).reshape(m, num, cap)
    z2 = jax.vmap(lambda y: _z2(k2, y, num, d, dtype))(labels)
    low = jnp.einsum("mnc,mcd->mnd", z1, stats.rows, precision=_HIGHEST)
    return (stats.mean[:, None, :] + low * inv_sqrt_w[:, None, None]
            + jnp.sqrt(stats.jitter)[:, None, None] * z2)
  need = jnp.ones((m,), bool) if need is None else need

  def one_label(y, out):
    def add_chunk(k, acc):
      g = jax.lax.dynamic_slice(stats.rows, (y, k * chunk, 0), (1, chunk, d))[0]
      return acc + jnp.matmul(_z1(k1, y, k, num, chunk, dtype), g, precision=_HIGHEST)

    chunks = (stats.used[y] + chunk - 1) // chunk
    low = jax.lax.fori_loop(0, chunks, add_chunk, jnp.zeros((num, d), dtype))
    x = (stats.mean[y] + low * inv_sqrt_w[y]
         + jnp.sqrt(stats.jitter[y]) * _z2(k2, y, num, d, dtype))
    return out.at[y].set(x)

  # Labels that need no samples get their mean (cheap; the caller does not use them).
  out = jnp.broadcast_to(stats.mean[:, None, :], (m, num, d))
  return jax.lax.fori_loop(0, m, lambda y, o: jax.lax.cond(need[y], one_label, lambda y, o: o,
                                                           y, o), out)


# ---------------------------------------------------------------------------------------------
# Diagonal covariance (REF's commented-out variant, spec §3.5): for high-dimensional splits.


@struct.dataclass
class DiagStats(_PerLabel):
  """Per-label weighted mean and per-dimension variance; Sigma_y = diag(var_y) + r_y I."""
  mean: jax.Array      # [M, D]
  var: jax.Array       # [M, D]
  weight: jax.Array    # [M]
  jitter: jax.Array    # [M]
  seen: jax.Array      # [M] bool


def init_diag(num_labels: int, dim: int, dtype=jnp.float32) -> DiagStats:
  return DiagStats(mean=jnp.zeros((num_labels, dim), dtype), var=jnp.zeros((num_labels, dim), dtype),
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
