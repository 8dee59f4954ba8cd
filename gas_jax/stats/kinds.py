"""The one table of statistics kinds, and the interface that dispatches through it.

`KINDS` maps each state class to its `base.Kind` record; `merge`, `sample`, `refresh_factors`,
`covariance`, `factored`, `compress_label` and `make_room` look the kind up there
(`kind_of`). The kinds (paper eq. 11-12, spec §1.5):
- square-root factor (`sqrt_factor.SqrtStats`, default, `stats.method="sqrt"`): exact, no
  Cholesky; also its low-rank truncation (`stats.covariance="lowrank"`, `lowrank`);
- dense scatter with cached Cholesky factors (`dense.GaussianStats`, REF-literal,
  `stats.method="cholesky"`);
- per-dimension variances (`diagonal.DiagStats`, `stats.covariance="diag"`, spec §3.5).
A new kind is a module with its state class and `KIND` record, plus one line in `KINDS`.
"""
import functools

import jax
import numpy as np
from absl import logging

from gas_jax.stats import dense, diagonal, sqrt_factor
from gas_jax.stats.base import Kind
from gas_jax.stats.welford import REF_JITTER

KINDS = {
    sqrt_factor.SqrtStats: sqrt_factor.KIND,
    dense.GaussianStats: dense.KIND,
    diagonal.DiagStats: diagonal.KIND,
}


def kind_of(stats) -> Kind:
  """The `Kind` record of a statistics state (by its class, `KINDS`)."""
  try:
    return KINDS[type(stats)]
  except KeyError:
    raise TypeError(f"{type(stats).__name__} is not a statistics kind of gas_jax.stats.KINDS "
                    f"({', '.join(t.__name__ for t in KINDS)})") from None


def merge(stats, x: jax.Array, labels: jax.Array, w: jax.Array, *,
          jitter: float = REF_JITTER, block: int = 16, rank: int = 0, room_made: bool = False):
  """Merges rows x [N, D] with labels [N] and weights w [N] (0 = ignore) into the statistics
  (eq. 11-12; REF's jitter r I on labels seen before, spec §1.5).

  rank > 0 (square-root factor only; `stats.covariance="lowrank"`): when a label's factor is
  full it is truncated to its top `rank` directions plus an isotropic rest (`lowrank.truncate`)
  instead of compressed exactly (memory M x (rank + one merge) x D). room_made: the caller
  already ran `make_room` (the square-root factor then skips it)."""
  return kind_of(stats).merge(stats, x, labels, w, jitter=jitter, block=block, rank=rank,
                              room_made=room_made)


@functools.partial(jax.jit, static_argnames=("jitter", "block", "rank"))
def merge_jit(stats, x, labels, w, jitter=REF_JITTER, block=16, rank=0):
  return merge(stats, x, labels, w, jitter=jitter, block=block, rank=rank)


def sample(stats, key: jax.Array, num: int, need=None, impl: str = "",
           rows=None, diag_eps: float = 0.0) -> jax.Array:
  """num samples per label ([M, num, D]): mu_y + L_y z with the cached Cholesky factors, or
  mu_y + G_y^T z1 / sqrt(W_y) + sqrt(r_y) z2 with the square-root factor, or
  mu_y + sqrt(var_y + r_y + diag_eps) z with the diagonal statistics (diag_eps: REF's
  commented-out diagonal variant adds `diagonal.DIAG_SAMPLE_EPS` = 1e-5 here,
  `stats.diag_rule="ref"`; ignored by the other kinds).

  need [M] bool (optional): labels whose samples are used; rows [M] int (optional): only label
  y's first rows[y] samples are used (the square-root factor's "loop" sampler,
  `sqrt_sampling.sample`, computes only those)."""
  return kind_of(stats).sample(stats, key, num, need=need, impl=impl, rows=rows,
                               diag_eps=diag_eps)


def refresh_factors(stats, need: jax.Array, *, report: bool = False):
  """Prepares the samplers of the labels with need[y]: refactorises a stale Cholesky factor
  (`dense.refresh`); nothing for the other kinds.

  report=True returns (stats, fallbacks): fallbacks (int32 scalar) counts the needed labels
  whose sampler falls back to a substitute this time (`dense.refresh`: REF's jitter ladder
  failed; `diagonal.refresh`: a negative variance clamped; the square-root factor, full or
  low-rank: never, so always 0)."""
  stats, fallbacks = kind_of(stats).refresh(stats, need)
  return (stats, fallbacks) if report else stats


def covariance(stats) -> jax.Array:
  """Sigma_y for every label ([M, D, D]; zeros for unseen labels). Explicit: for tests/debug."""
  return kind_of(stats).covariance(stats)


def factored(stats) -> jax.Array:
  """[M] bool: the label has a Cholesky factor (possibly stale); all True for the kinds that
  need none."""
  return kind_of(stats).factored(stats)


def compress_label(stats, y, rank: int = 0):
  """Makes room in label y's factor (square-root factor: exact compression, or rank k: the
  low-rank truncation); the other kinds are returned unchanged. y may be traced."""
  return kind_of(stats).compress(stats, y, rank)


def make_room(stats, labels: jax.Array, w: jax.Array, *, block: int = 16, rank: int = 0):
  """Compresses every label whose next merge of (labels, w) would overflow its factor
  (`sqrt_factor.make_room`); the other kinds are returned unchanged."""
  return kind_of(stats).make_room(stats, labels, w, block=block, rank=rank)


def compressible(stats) -> bool:
  """The kind's factor has a bounded number of rows per label (`sqrt_factor.SqrtStats`: its
  `used` rows of `rows.shape[1]`), which the host keeps from overflowing."""
  return kind_of(stats).compressible


def nbytes(stats) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(stats))


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
