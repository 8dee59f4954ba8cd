"""Low-rank truncation of the square-root factor (`stats.covariance="lowrank"`).

For splits too wide for the full factor: when a label's factor G (`sqrt_factor.SqrtStats`,
G^T G / W + r I = Sigma of paper eq. 11-12) is full, it is truncated to its top `rank`
directions plus an isotropic rest (probabilistic PCA, `truncate`) instead of compressed
exactly, so the factor needs only `rank` rows plus the room of one merge (`lowrank_capacity`):
memory M x (rank + one merge) x D. The truncation is a mode of the square-root factor kind
(`merge(..., rank=k)`, `compress_label(..., rank=k)`), not a kind of its own.
"""
import jax.numpy as jnp

from gas_jax.stats import sqrt_sampling, welford


def lowrank_capacity(rank: int, dim: int, batch_rows: int, num_labels: int, block: int) -> int:
  """Rows per label of the low-rank factor: `rank` after a compression plus one merge."""
  per_merge = welford.rows_per_merge(batch_rows, num_labels, block)
  return sqrt_sampling.round_capacity(min(rank, dim) + per_merge)


def truncate(g, rank: int):
  """Probabilistic-PCA truncation of G [cap, D] (G^T G = V diag(s^2) V^T) to rank k.

  Returns (rows, e_bar): the first k rows are diag(sqrt(s_i^2 - e_bar)) V_k^T and e_bar is the
  mean discarded energy sum_{i>k} s_i^2 / (D - k), to be added isotropically. G_k^T G_k + e_bar I
  keeps the top-k eigenpairs of G^T G exactly, replaces the others by their mean, and keeps
  the trace (the maximum-likelihood rank-k + isotropic fit, Tipping & Bishop 1999). The clamp
  of s_i^2 - e_bar at 0 only absorbs rounding (e_bar <= s_k^2 <= s_i^2), so nothing is ever
  substituted (no fallbacks)."""
  d = g.shape[1]
  _, sv, vt = jnp.linalg.svd(g, full_matrices=False)
  k = min(rank, sv.shape[0])
  e_bar = jnp.sum(jnp.square(sv[k:])) / max(d - k, 1)
  top = jnp.sqrt(jnp.maximum(jnp.square(sv[:k]) - e_bar, 0.0))[:, None] * vt[:k]
  return jnp.zeros_like(g).at[:k].set(top), e_bar
