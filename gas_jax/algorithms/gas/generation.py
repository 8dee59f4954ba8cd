"""The server update's statistics and generated activations (paper eq. 11-12, Algorithm 1
lines 7-9; spec §1.5, §3.5).

`make_generate` builds the step that merges a buffer's real rows into the per-label statistics
(`gas_jax.stats`) and tops every label up to B rows (REF; `stats.gen_rows`, or an equal
count for every label with `stats.gen_balance="equal"`, the paper's rule) with samples once all
labels have statistics; `init_stats` picks the statistics kind from the hyperparameters. On the host,
`generated_rows` gives the packed number of generated rows a server update needs, one of a few
static sizes (`generated_row_sizes`).
"""
import jax
import jax.numpy as jnp
import numpy as np

from gas_jax import stats as stats_lib
from gas_jax import weighting
from gas_jax.algorithms.gas.state import (ActivationBuffer, GasHParams, buffer_size, gen_samples,
                                          gen_target)


def init_stats(hp: GasHParams, dim: int):
  """Empty statistics of the kind the hyperparameters choose (`stats.method`,
  `stats.covariance`); without generation a small unused placeholder."""
  c, b, m = buffer_size(hp), hp.batch_size, hp.num_classes
  if not hp.generate:
    return stats_lib.init(m, 1)       # unused placeholder
  if hp.stats_covariance == "diag":
    return stats_lib.init_diag(m, dim)
  if hp.stats_covariance == "lowrank":
    return stats_lib.init_sqrt(m, dim, stats_lib.lowrank_capacity(
        hp.stats_rank, dim, c * b, m, hp.stats_block))
  if hp.stats_method == "cholesky":
    return stats_lib.init(m, dim)
  return stats_lib.init_sqrt(m, dim, stats_lib.sqrt_capacity(dim, c * b, m, hp.stats_block))


def merge_rank(hp: GasHParams) -> int:
  """The factor's rank for `stats.merge` / `stats.compress_label`: 0 = exact."""
  return hp.stats_rank if hp.stats_covariance == "lowrank" else 0


def make_generate(hp: GasHParams, dim: int):
  """The statistics-and-generation step of a server update for activations of `dim` values."""
  c, b, m = buffer_size(hp), hp.batch_size, hp.num_classes
  target, s = gen_target(hp), gen_samples(hp)    # REF: B and B (spec §1.5)
  equal = hp.gen_balance == "equal"

  def generate(st, buf: ActivationBuffer, key, server_updates, gen_rows=None, room_made=False):
    """Statistics and generation of a server update (eq. 11-12, Algorithm 1): merges the
    buffer's real rows into the per-label statistics, refreshes what the sampler needs and
    tops every label up to B rows (`gen_target`; "equal": to the largest label count if that
    is more) with generated activations once all labels have statistics.

    Returns (stats, (x, y, valid) generated rows, number generated, overflow, info). gen_rows
    None: M*B rows, label y's first B - n_y valid; an int: packed into gen_rows rows (labels in
    order), overflow = more were needed. room_made: the caller already compressed every label
    that needed it (`compress`), so the merge skips `stats.make_room`. info: "fallbacks", the
    labels whose sampler fell back to a substitute (`stats.refresh_factors`, report=True), and
    "real_valid" [C*B], the buffer's rows that enter the server batch: all valid ones, except
    with diagonal statistics under `stats_diag_rule="ref"` (REF's commented-out diagonal
    variant, spec §3.5), where once every label has statistics each label keeps only its
    first B real rows (buffer order), so that every label has exactly B rows; that variant
    also samples mu + sqrt(var + r + 1e-5) eps (`stats.DIAG_SAMPLE_EPS`)."""
    rows = buf.acts.reshape(c * b, dim)
    labels = buf.labels.reshape(-1)
    mask = buf.row_mask.reshape(-1)
    tags = buf.tags
    if hp.relative_tags:    # bring the tags and the stored weights to the newest reference
      tags, factor = weighting.window_weights(buf.tags, buf.tag_shift)
      st = weighting.rescale_stats(st, factor)
    weights = jnp.where(mask, jnp.repeat(tags, b), 0.0)
    st = stats_lib.merge(st, rows, labels, weights, jitter=hp.stats_jitter,
                         block=hp.stats_block, rank=merge_rank(hp), room_made=room_made)
    counts = jnp.sum(jax.nn.one_hot(labels, m, dtype=jnp.int32) * mask[:, None], 0)
    all_seen = jnp.all(st.seen)
    ref_diag = hp.stats_covariance == "diag" and hp.stats_diag_rule == "ref"
    # Every label is topped up to `level` rows: REF B; "equal": the largest label count.
    level = jnp.maximum(target, jnp.max(counts)) if equal and not ref_diag else target
    # REF builds a sampler for every label with n_y <= B; samples top each label up to B.
    need = (counts <= level) & all_seen
    if hp.stats_refresh_every > 1:   # amortised: stale factors between refreshes
      need &= (server_updates % hp.stats_refresh_every == 0) | ~stats_lib.factored(st)
    st, fallbacks = stats_lib.refresh_factors(st, need, report=True)
    n_gen = jnp.where(all_seen, jnp.clip(level - counts, 0, s), 0)   # label y's first n_gen[y]
    fake = stats_lib.sample(st, key, s, need=n_gen > 0, rows=n_gen, impl=hp.sampler,
                            diag_eps=stats_lib.DIAG_SAMPLE_EPS if ref_diag else 0.0)
    real_valid = mask
    if ref_diag:    # each label's first B real rows (REF: label_features[:batchsize])
      onehot = jax.nn.one_hot(labels, m, dtype=jnp.int32) * mask[:, None]
      rank = jnp.take_along_axis(jnp.cumsum(onehot, 0), labels[:, None], 1)[:, 0] - 1
      real_valid = mask & (~all_seen | (rank < target))
    overflow = jnp.zeros((), bool)
    if gen_rows is None:    # M*S rows, masked
      gx = fake.reshape(m * s, dim)
      gy = jnp.repeat(jnp.arange(m, dtype=labels.dtype), s)
      gvalid = (jnp.arange(s)[None, :] < n_gen[:, None]).reshape(-1)
    else:                   # packed: row r is sample j of label gy, labels in order
      ends = jnp.cumsum(n_gen)
      r = jnp.arange(gen_rows)
      gy = jnp.minimum(jnp.searchsorted(ends, r, side="right"), m - 1).astype(labels.dtype)
      gx = fake[gy, jnp.clip(r - (ends - n_gen)[gy], 0, s - 1)]
      gvalid = r < ends[-1]
      overflow = ends[-1] > gen_rows
    return (st, (gx, gy, gvalid), jnp.sum(n_gen), overflow,
            dict(fallbacks=fallbacks, real_valid=real_valid))

  return generate


def generated_rows(hp: GasHParams, labels, row_mask, seen) -> int:
  """Host side: the packed size for a server update's generated activations (`server_step`'s
  "gen_rows"), from the buffer's labels [C, B] / row_mask and the labels seen before it: the
  smallest of `generated_row_sizes` that holds sum_y max(B - n_y, 0) (0 before every label has
  statistics)."""
  return next(size for size in generated_row_sizes(hp)
              if size >= int(np.sum(generated_per_label(hp, labels, row_mask, seen))))


def generated_per_label(hp: GasHParams, labels, row_mask, seen) -> np.ndarray:
  """Host side: the generated rows [M] of each label in a server update (spec §1.5): none
  before every label has statistics, then max(level - n_y, 0) with level = the target (REF: B,
  `stats.gen_rows`) or, with "equal" balance, max(target, max_y n_y)."""
  m = hp.num_classes
  labels, row_mask = np.asarray(labels).reshape(-1), np.asarray(row_mask).reshape(-1)
  counts = np.bincount(labels[row_mask], minlength=m)[:m]
  if not np.all(np.asarray(seen) | (counts > 0)):
    return np.zeros(m, np.int64)
  level = gen_target(hp)
  if hp.gen_balance == "equal" and not (hp.stats_covariance == "diag"
                                         and hp.stats_diag_rule == "ref"):
    level = max(level, int(counts.max()))
  return np.clip(level - counts, 0, gen_samples(hp))


def generated_row_sizes(hp: GasHParams) -> list:
  """Every packed size `generated_rows` can return, with S = `gen_samples` (REF: B). One pass:
  multiples of ceil(M*S/5) up to M*S (at most 6 sizes, so at most 6 compilations). In chunks
  (`server_chunk`): M*S only, as the chunked forward/backward skips the chunks past the last
  generated row anyway."""
  m, s = hp.num_classes, gen_samples(hp)
  if hp.server_chunk:
    return [m * s]
  unit = -(-m * s // 5)
  return sorted({min(k * unit, m * s) for k in range(6)})
