"""Square-root factor of the per-label statistics (the default, `stats.method="sqrt"`).

Sigma_y = G_y^T G_y / W_y + r_y I is never formed: G_y holds the rows sqrt(w_i)(a_i - mu) of every
merge (`stats_merge.merge_rows`, paper eq. 11-12), r_y is REF's accumulated jitter as a scalar.
When G_y is full it is compressed to the D rows of an R with R^T R = G^T G (`make_room`: a QR the
first time, then `linalg.tpqr_r`), or, for `stats.covariance="lowrank"`, truncated to its top
directions plus an isotropic rest. Samples mu + G^T z1 / sqrt(W) + sqrt(r) z2 have exactly REF's
covariance with BLAS-3 work only, no Cholesky, no jitter ladder, never NaN.
"""
import functools

import jax
import jax.numpy as jnp
from flax import struct

from gas_jax import linalg
from gas_jax.stats_merge import HIGHEST, PerLabel, merge_rows


@struct.dataclass
class SqrtStats(PerLabel):
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
  compressed: jax.Array  # [M] bool  rows[:D] hold an upper-triangular R (a compression ran)


def init_sqrt(num_labels: int, dim: int, capacity: int, dtype=jnp.float32) -> SqrtStats:
  return SqrtStats(mean=jnp.zeros((num_labels, dim), dtype),
                   rows=jnp.zeros((num_labels, capacity, dim), dtype),
                   used=jnp.zeros((num_labels,), jnp.int32),
                   weight=jnp.zeros((num_labels,), dtype), jitter=jnp.zeros((num_labels,), dtype),
                   seen=jnp.zeros((num_labels,), bool),
                   compressed=jnp.zeros((num_labels,), bool))


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


# From this activation dimension on, later compressions use `linalg.tpqr_r`; below it LAPACK's
# QR of the whole factor was as fast or faster on the 2-core CPU (D = 1024: 0.057 s against
# 0.065-0.087 s; 2048: 0.37 against 0.38-0.56 s; 4096: 2.69 against 1.74 s;
# `python launch/benchmark_qr.py --config=...`, docs/benchmarks.md). Not measured on a GPU.
TPQR_MIN_DIM = 3072


def _compressed_r(top, rest, triangular):
  """R [D, D] with R^T R = G^T G for G = [top [D, D]; rest [cap - D, D]].

  A label's first compression is a QR of all of G; every later one (`triangular`: `top` is the
  R of the previous one) eliminates only the rows merged since with `linalg.tpqr_r`
  (2 m D^2 flops for m rows instead of 2 (D + m) D^2 - 2 D^3 / 3)."""
  if triangular:
    return linalg.tpqr_r(top, rest)
  return jnp.linalg.qr(jnp.concatenate([top, rest]), mode="r")


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


def overflowing(used, seen, labels, w, block: int, cap: int, xp=jnp):
  """[M] bool: the labels whose factor cannot take the next merge of rows (labels [N], w [N])
  without a compression: used + the merge's rows (its rows with w > 0 plus, for a label seen
  before, the old mean's pseudo-row), padded to whole blocks, would exceed the capacity.
  `xp` = numpy gives the host's answer (`engine.plan_server_update`), the same as the device's."""
  n = xp.sum((labels[:, None] == xp.arange(used.shape[0])[None, :]) & (w > 0)[:, None], 0)
  rows = n + (seen & (n > 0))
  return used + (-(-rows // block)) * block > cap


def compress_label(stats: SqrtStats, y, rank: int = 0) -> SqrtStats:
  """Compresses (rank 0: exact, `_compressed_r`) or truncates (rank k: `_truncate`) label y's
  factor: afterwards it uses min(cap, D) (or k) rows. y may be traced."""
  m, cap, d = stats.rows.shape
  min_rows = min(cap, d) if not rank else min(rank, cap, d)
  rows, jit, done = stats.rows, stats.jitter, stats.compressed
  if rank or cap <= d:
    g = jax.lax.dynamic_index_in_dim(rows, y, keepdims=False)
    if rank:
      # Sigma ~ G_k^T G_k / W + (r + e_bar / W) I; a merge then scales r by W / W'.
      g, e_bar = _truncate(g, rank)
      jit = jit.at[y].add(e_bar / jnp.where(stats.seen[y], stats.weight[y], 1.0))
    else:
      g = jnp.linalg.qr(g, mode="r")            # cap <= D rows: R has G's shape
    rows = jax.lax.dynamic_update_index_in_dim(rows, g, y, 0)
  else:
    # Exact: R into the first D rows, the rest zeroed (slices of `rows`, updated in place).
    top = jax.lax.dynamic_slice(rows, (y, 0, 0), (1, d, d))[0]
    rest = jax.lax.dynamic_slice(rows, (y, d, 0), (1, cap - d, d))[0]
    if d >= TPQR_MIN_DIM:
      r = jax.lax.cond(done[y], lambda t, p: _compressed_r(t, p, True),
                       lambda t, p: _compressed_r(t, p, False), top, rest)
    else:
      r = _compressed_r(top, rest, False)
    rows = jax.lax.dynamic_update_slice(rows, r[None], (y, 0, 0))
    rows = jax.lax.dynamic_update_slice(rows, jnp.zeros((1, cap - d, d), rows.dtype), (y, d, 0))
    done = done.at[y].set(True)
  return stats.replace(rows=rows, used=stats.used.at[y].set(jnp.int32(min_rows)), jitter=jit,
                       compressed=done)


def make_room(stats, labels: jax.Array, w: jax.Array, *, block: int = 16, rank: int = 0):
  """Compresses (`compress_label`) the factor of every label whose next merge of (labels, w)
  would overflow its capacity (`overflowing`); other representations are returned unchanged.
  `merge` does this first unless `room_made`: the runners call `compress_label` from the host
  instead, only when a label overflows (`engine.plan_server_update`), so that the server
  update holds no loop over the factor (on a GPU the loop's carry cost two transposes of
  every label's factor at every update, about 1.5 ms for CIFAR-10's 1.4 GB)."""
  if not isinstance(stats, SqrtStats):
    return stats
  todo = overflowing(stats.used, stats.seen, labels, w, block, stats.rows.shape[1])

  def compress(carry):
    st, todo = carry
    y = jnp.argmax(todo)
    return compress_label(st, y, rank), todo.at[y].set(False)

  # One overflowing label per iteration (usually none): a loop over all labels with a
  # `lax.cond` each cost ~0.7 ms per label on the CPU even when nothing was compressed.
  return jax.lax.while_loop(lambda c: jnp.any(c[1]), compress, (stats, todo))[0]


def merge_sqrt(stats: SqrtStats, x, labels, w, jitter, block, rank=0, room_made=False):
  if not room_made:
    stats = make_room(stats, labels, w, block=block, rank=rank)
  m, cap, d = stats.rows.shape
  mean_new, w_new, jit_new, _, merged, blocks, block_label = merge_rows(
      stats, x, labels, w, jitter, block)
  # One scatter puts block b of label y at rows used[y] + (its rank among y's blocks) * block
  # (blocks are sorted by label; empty blocks, block_label == m, are dropped).
  nb = block_label.shape[0]
  first = jnp.searchsorted(block_label, jnp.arange(m), side="left")
  y = jnp.minimum(block_label, m - 1)
  start = stats.used[y] + (jnp.arange(nb) - first[y]) * block
  dest = jnp.where(block_label[:, None] < m, start[:, None] + jnp.arange(block), cap)
  rows = stats.rows.at[y[:, None], dest].set(blocks, mode="drop")
  nblk = jnp.sum(jax.nn.one_hot(block_label, m, dtype=jnp.int32), 0)
  used = stats.used + nblk * block
  return stats.replace(mean=mean_new, rows=rows, used=used, weight=w_new, jitter=jit_new,
                       seen=stats.seen | merged)


def sampler_impl() -> str:
  """How the square-root factor is sampled: "loop" on the CPU, "batched" elsewhere.

  "batched" is one batched matmul over every label and the factor's whole capacity (best on
  accelerators); "loop" visits only the labels that need samples and, per label, only the
  row chunks in use (about half the capacity on average), which on the CPU costs about a
  third as much. Both draw the same normals (`_z1`, `_z2`), so they give the same samples up
  to float rounding (tests/stats/test_stats_sampling.py)."""
  return "batched" if jax.default_backend() != "cpu" else "loop"


def _z1(key, y, k, num, chunk, dtype):
  """Normals for label y's factor rows [k*chunk, (k+1)*chunk): one key per (label, chunk)."""
  return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, y), k), (num, chunk), dtype)


def _z2(key, y, num, dim, dtype):
  return jax.random.normal(jax.random.fold_in(key, y), (num, dim), dtype)


def _row_sizes(num: int) -> list:
  """The row counts the "loop" sampler computes a label's samples for (each is a branch of its
  own): at most 4, multiples of a multiple of 8 (8 for num <= 32), and `num`."""
  step = min(num, 8 * max(1, -(-num // 32)))
  return sorted(set(range(step, num + 1, step)) | {num})


def sample_sqrt(stats: SqrtStats, key, num, need=None, impl="", rows=None):
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
    low = jnp.einsum("mnc,mcd->mnd", z1, stats.rows, precision=HIGHEST)
    return (stats.mean[:, None, :] + low * inv_sqrt_w[:, None, None]
            + jnp.sqrt(stats.jitter)[:, None, None] * z2)
  need = jnp.ones((m,), bool) if need is None else need
  rows = jnp.full((m,), num) if rows is None else jnp.minimum(rows, num)
  sizes = _row_sizes(num)

  def one_label(n, y, out):
    """Label y's first n samples (the normals are the first n rows of the num-row draws:
    threefry's bits depend on the element's index only, so the samples do not depend on n)."""
    def add_chunk(k, acc):
      g = jax.lax.dynamic_slice(stats.rows, (y, k * chunk, 0), (1, chunk, d))[0]
      return acc + jnp.matmul(_z1(k1, y, k, n, chunk, dtype), g, precision=HIGHEST)

    chunks = (stats.used[y] + chunk - 1) // chunk
    low = jax.lax.fori_loop(0, chunks, add_chunk, jnp.zeros((n, d), dtype))
    x = (stats.mean[y] + low * inv_sqrt_w[y]
         + jnp.sqrt(stats.jitter[y]) * _z2(k2, y, n, d, dtype))
    return out.at[y, :n].set(x)

  # Label y computes the smallest of `sizes` holding its rows[y] samples (none without need):
  # a matmul's cost here grows with its rows (8 / 16 / 32 rows: about 72 / 97 / 151 ms for
  # CIFAR-10's ten half-full factors on the 2-core CPU). Rows not computed hold the mean.
  branches = [lambda y, o: o] + [functools.partial(one_label, n) for n in sizes]
  which = jnp.where(need & (rows > 0),
                    jnp.searchsorted(jnp.asarray(sizes), rows, side="left") + 1, 0)
  out = jnp.broadcast_to(stats.mean[:, None, :], (m, num, d))
  return jax.lax.fori_loop(0, m, lambda y, o: jax.lax.switch(which[y], branches, y, o), out)
