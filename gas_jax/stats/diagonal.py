"""Diagonal covariance (REF's commented-out variant, spec §3.5; `stats.covariance="diag"`).

For high-dimensional splits: per label the weighted mean and the per-dimension variances,
Sigma_y = diag(var_y) + r_y I, merged by the diagonal of paper eq. (11)-(12) (the weighted
Chan/Welford recurrence of `welford`, one column at a time). Samples are
mu_y + sqrt(var_y + r_y + diag_eps) z; REF's variant adds `DIAG_SAMPLE_EPS` there.
"""
import jax
import jax.numpy as jnp
from flax import struct

from gas_jax.stats.base import HIGHEST, Kind, PerLabel

# REF's commented-out diagonal variant samples mu + sqrt(var + 1e-5) eps (utils.py,
# `std = torch.sqrt(variance + 1e-5)`), on top of the 1e-5 its merges accumulate in var.
DIAG_SAMPLE_EPS = 1e-5


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


def covariance(stats: DiagStats) -> jax.Array:
  return jax.vmap(jnp.diag)(stats.var + stats.jitter[:, None]) * stats.seen[:, None, None]


def merge(stats: DiagStats, x, labels, w, *, jitter, block=16, rank=0, room_made=False):
  """Eq. (11)-(12) on the diagonal, REF's jitter r on labels seen before (block, rank and
  room_made: unused)."""
  del block, rank, room_made
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
                                         + jnp.matmul(onehot.T, x, precision=HIGHEST))
                       / w_safe[:, None], stats.mean)
  sq = jnp.matmul(onehot.T, jnp.square(x - mean_new[labels]), precision=HIGHEST)
  scatter = old_w[:, None] * (stats.var + jnp.square(stats.mean - mean_new)) + sq
  add_j = jnp.where(merged & stats.seen, jitter, 0.0)
  return stats.replace(
      mean=mean_new, var=jnp.where(merged[:, None], scatter / w_safe[:, None], stats.var),
      weight=jnp.where(merged, w_new, stats.weight),
      jitter=jnp.where(merged, old_w / w_safe * stats.jitter + add_j, stats.jitter),
      seen=stats.seen | merged)


def refresh(stats: DiagStats, need: jax.Array):
  """Nothing to factorise. Fallbacks: the needed labels with a negative per-dimension variance
  (`sample` clamps it to 0; by construction - sums of squares with non-negative weights - it
  never is, so any count is a bug or a negative weight tag)."""
  bad = jnp.any(stats.var < 0, axis=1) & need & stats.seen
  return stats, jnp.sum(bad.astype(jnp.int32))


def sample(stats: DiagStats, key, num, *, need=None, impl="", rows=None, diag_eps=0.0):
  """mu_y + sqrt(var_y + r_y + diag_eps) z for every label (need, impl, rows: not used)."""
  del need, impl, rows
  z = jax.random.normal(key, (stats.num_labels, num, stats.dim), stats.mean.dtype)
  sd = jnp.sqrt(jnp.maximum(stats.var, 0.0) + stats.jitter[:, None] + diag_eps)
  return stats.mean[:, None, :] + sd[:, None, :] * z


KIND = Kind(name="diag", merge=merge, sample=sample, refresh=refresh, covariance=covariance)
