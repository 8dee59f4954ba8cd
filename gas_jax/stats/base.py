"""What every statistics kind is and provides (paper eq. 11-12, spec §1.5).

A statistics kind is one representation of the per-label weighted Gaussian N(mu_y, Sigma_y) of
the activations the server received: a `flax.struct` state whose class derives from `PerLabel`,
and a `Kind` record of the operations on it. `gas_jax.stats.kinds.KINDS` maps each state class
to its record; the interface (`gas_jax.stats.merge`, `sample`, ...) dispatches through that one
table, so a new kind is one new module (its state, its operations, its `KIND`) plus one line
there.
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


class PerLabel:
  """Shape accessors shared by the statistics' representations (all hold `mean` [M, D])."""

  @property
  def num_labels(self) -> int:
    return self.mean.shape[0]

  @property
  def dim(self) -> int:
    return self.mean.shape[1]


def unchanged(stats, *args, **kwargs):
  """`Kind.compress` / `Kind.make_room` of a kind without a bounded factor: nothing to do."""
  del args, kwargs
  return stats


def all_factored(stats) -> jax.Array:
  """`Kind.factored` of a kind that samples without a factorisation: every label is ready."""
  return jnp.ones((stats.num_labels,), bool)


@dataclasses.dataclass(frozen=True)
class Kind:
  """The operations of one statistics kind (M labels, D dimensions, N rows per merge).

  merge(stats, x [N, D], labels [N], w [N], *, jitter, block, rank, room_made) -> stats:
    eq. (11)-(12) for a batch of rows with weight tags w (0 = ignore), REF's `jitter` r I added
    to labels seen before (spec §1.5, §6.3); `block`, `rank` and `room_made` are read only by
    the kinds they concern.
  sample(stats, key, num, *, need, impl, rows, diag_eps) -> [M, num, D]: num samples per label.
  refresh(stats, need [M] bool) -> (stats, fallbacks int32): prepares the sampler of the needed
    labels; fallbacks counts the labels sampled from a substitute (see each kind).
  covariance(stats) -> [M, D, D]: Sigma_y, explicit (tests, debugging).
  factored(stats) -> [M] bool: the label's sampler has a factor (possibly stale).
  compress(stats, y, rank) -> stats: makes room in label y's factor (bounded kinds).
  make_room(stats, labels, w, *, block, rank) -> stats: compresses every label whose next
    merge would overflow its factor (bounded kinds).
  compressible: the kind's factor has a bounded number of rows per label, which the host
    keeps from overflowing (`gas_jax.algorithms.gas.planning`).
  """
  name: str
  merge: Callable
  sample: Callable
  refresh: Callable
  covariance: Callable
  factored: Callable = all_factored
  compress: Callable = unchanged
  make_room: Callable = unchanged
  compressible: bool = False
