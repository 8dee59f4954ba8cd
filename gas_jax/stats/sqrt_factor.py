"""Square-root factor of the per-label statistics (the default, `stats.method="sqrt"`).

Sigma_y = G_y^T G_y / W_y + r_y I is never formed: G_y holds the rows sqrt(w_i)(a_i - mu) of every
merge (`welford.merge_rows`, paper eq. 11-12), r_y is REF's accumulated jitter as a scalar
(spec §1.5). When G_y is full it is compressed to the D rows of an R with R^T R = G^T G
(`compress_label`: a QR the first time, then `linalg.tpqr_r`), or, for
`stats.covariance="lowrank"`, truncated to its top directions plus an isotropic rest
(`lowrank.truncate`). Samples (`sqrt_sampling.sample`) need no Cholesky, hence no jitter ladder,
and are never NaN: this kind never falls back (`refresh` counts 0).
"""
import jax
import jax.numpy as jnp
from flax import struct

from gas_jax.stats import linalg, lowrank, sqrt_sampling, welford
from gas_jax.stats.base import HIGHEST, Kind, PerLabel


@struct.dataclass
class SqrtStats(PerLabel):
  """Sigma_y = G_y^T G_y / W_y + r_y I with G_y the rows sqrt(w_i)(a_i - mu) merged so far.

  A merge appends its centred rows (and the old mean's pseudo-row) to G_y; when G_y would
  overflow its capacity it is compressed to its R factor (G = QR => G^T G = R^T R, D rows).
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


def sqrt_capacity(dim: int, batch_rows: int, num_labels: int, block: int) -> int:
  """Rows per label: D after a compression plus room for about D more rows of merges."""
  per_merge = welford.rows_per_merge(batch_rows, num_labels, block)
  return sqrt_sampling.round_capacity(2 * dim + per_merge)


def covariance(stats: SqrtStats) -> jax.Array:
  w = jnp.where(stats.seen, stats.weight, 1.0)
  gram = jnp.einsum("mcd,mce->mde", stats.rows, stats.rows, precision=HIGHEST)
  eye = jnp.eye(stats.dim, dtype=gram.dtype)
  return (gram / w[:, None, None] + stats.jitter[:, None, None] * eye) * stats.seen[:, None, None]


# From this activation dimension on, later compressions use `linalg.tpqr_r`; below it LAPACK's
# QR of the whole factor was as fast or faster on the 2-core CPU (docs/benchmarks.md, "Factor
# compression by triangular-pentagonal QR"). Not measured on a GPU.
TPQR_MIN_DIM = 3072


def _compressed_r(top, rest, triangular):
  """R [D, D] with R^T R = G^T G for G = [top [D, D]; rest [cap - D, D]].

  A label's first compression is a QR of all of G; every later one (`triangular`: `top` is the
  R of the previous one) eliminates only the rows merged since with `linalg.tpqr_r`
  (2 m D^2 flops for m rows instead of 2 (D + m) D^2 - 2 D^3 / 3)."""
  if triangular:
    return linalg.tpqr_r(top, rest)
  return jnp.linalg.qr(jnp.concatenate([top, rest]), mode="r")


def overflowing(used, seen, labels, w, block: int, cap: int, xp=jnp):
  """[M] bool: the labels whose factor cannot take the next merge of rows (labels [N], w [N])
  without a compression: used + the merge's rows (its rows with w > 0 plus, for a label seen
  before, the old mean's pseudo-row), padded to whole blocks, would exceed the capacity.
  `xp` = numpy gives the host's answer (`gas.plan_server_update`), the same as the device's."""
  n = xp.sum((labels[:, None] == xp.arange(used.shape[0])[None, :]) & (w > 0)[:, None], 0)
  rows = n + (seen & (n > 0))
  return used + (-(-rows // block)) * block > cap


def compress_label(stats: SqrtStats, y, rank: int = 0) -> SqrtStats:
  """Compresses (rank 0: exact, `_compressed_r`) or truncates (rank k: `lowrank.truncate`)
  label y's factor: afterwards it uses min(cap, D) (or k) rows. y may be traced."""
  m, cap, d = stats.rows.shape
  min_rows = min(cap, d) if not rank else min(rank, cap, d)
  rows, jit, done = stats.rows, stats.jitter, stats.compressed
  if rank or cap <= d:
    g = jax.lax.dynamic_index_in_dim(rows, y, keepdims=False)
    if rank:
      # Sigma ~ G_k^T G_k / W + (r + e_bar / W) I; a merge then scales r by W / W'.
      g, e_bar = lowrank.truncate(g, rank)
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


def make_room(stats: SqrtStats, labels: jax.Array, w: jax.Array, *, block: int = 16,
              rank: int = 0) -> SqrtStats:
  """Compresses (`compress_label`) the factor of every label whose next merge of (labels, w)
  would overflow its capacity (`overflowing`). `merge` does this first unless `room_made`:
  the runners call `compress_label` from the host instead, only when a label overflows
  (`gas.plan_server_update`), so that the server update holds no loop over the factor (on a
  GPU the loop's carry cost two transposes of every label's factor at every update:
  docs/benchmarks.md, "GPU: where a CIFAR-10 iteration goes")."""
  todo = overflowing(stats.used, stats.seen, labels, w, block, stats.rows.shape[1])

  def compress(carry):
    st, todo = carry
    y = jnp.argmax(todo)
    return compress_label(st, y, rank), todo.at[y].set(False)

  # One overflowing label per iteration (usually none): a loop over all labels with a
  # `lax.cond` each cost time per label even when nothing was compressed (docs/benchmarks.md,
  # "CPU formulations").
  return jax.lax.while_loop(lambda c: jnp.any(c[1]), compress, (stats, todo))[0]


def merge(stats: SqrtStats, x, labels, w, *, jitter, block, rank=0, room_made=False):
  """Eq. (11)-(12): appends the merge's centred rows to each label's factor (after
  `make_room`, unless `room_made`; rank > 0: full labels are truncated, `lowrank`)."""
  if not room_made:
    stats = make_room(stats, labels, w, block=block, rank=rank)
  m, cap, d = stats.rows.shape
  mean_new, w_new, jit_new, _, merged, blocks, block_label = welford.merge_rows(
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


def refresh(stats: SqrtStats, need: jax.Array):
  """Nothing to factorise and nothing ever substituted: the same state, 0 fallbacks."""
  del need
  return stats, jnp.zeros((), jnp.int32)


KIND = Kind(name="sqrt", merge=merge, sample=sqrt_sampling.sample, refresh=refresh,
            covariance=covariance, compress=compress_label, make_room=make_room,
            compressible=True)
