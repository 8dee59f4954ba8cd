"""The weighted merge of paper eq. (11)-(12) in row form, shared by the statistics kinds.

Merging a batch of rows a_i (tags w_i) into a label's statistics (mu, W) is the exact weighted
parallel (Chan/Welford) recurrence

    W' = W + W_b,   mu' = (W mu + sum_i w_i a_i) / W'
    W' Sigma' = W Sigma + W (mu - mu')(mu - mu')^T + sum_i w_i (a_i - mu')(a_i - mu')^T  [+ W' r I]

which equals eq. (11)-(12) applied row by row: the old statistics enter as one pseudo-row mu
with weight W. So every representation (`dense.GaussianStats`, `sqrt_factor.SqrtStats`) only
has to *add* the outer products of the rows sqrt(w_i)(a_i - mu') and of that pseudo-row
sqrt(W)(mu - mu') per label. `merge_rows` computes the new means, weights and REF's jitter, and
those rows sorted into label-pure blocks (`label_blocks`). REF adds r = 1e-5 (`REF_JITTER`) on
every merge after a label's first (spec §1.5, §6.3); the paper adds nothing (`jitter=0`).
"""
import chex
import jax
import jax.numpy as jnp

from gas_jax.stats.base import HIGHEST

REF_JITTER = 1e-5


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


def rows_per_merge(batch_rows: int, num_labels: int, block: int) -> int:
  """The most rows one merge of `batch_rows` rows adds to the blocks of `merge_rows` (its rows
  and one pseudo-row per label, `label_blocks`' static layout): a bound on what a label's
  square-root factor must have room for."""
  return (-(-(batch_rows + num_labels) // block) + num_labels) * block


def merge_rows(stats, x, labels, w, jitter, block):
  """Shared part of the merge: new mean/weight/jitter and the rows to add as outer products.

  Returns (mean, weight, jitter, added jitter, merged, blocks [nb, block, D], block_label [nb]).
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
  wsum_x = jnp.matmul(onehot.T, x, precision=HIGHEST)                   # [M, D]
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
