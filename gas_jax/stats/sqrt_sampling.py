"""Sampling the square-root factor: mu_y + G_y^T z1 / sqrt(W_y) + sqrt(r_y) z2.

With Sigma_y = G_y^T G_y / W_y + r_y I (`sqrt_factor.SqrtStats`, paper eq. 11-12) and z1, z2
standard normal, these samples have exactly REF's covariance (spec §1.5) with BLAS-3 work only:
no Cholesky, no jitter ladder, never NaN. Two samplers draw the same normals (`_z1`, `_z2`), so
they give the same samples up to float rounding (`sampler_impl`). The factor's capacity is a
multiple of the row chunk the "loop" sampler visits (`round_capacity`, `_chunk`).
"""
import functools

import jax
import jax.numpy as jnp

from gas_jax.stats.base import HIGHEST


def round_capacity(cap: int) -> int:
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


def sampler_impl() -> str:
  """How the square-root factor is sampled: "loop" on the CPU, "batched" elsewhere.

  "batched" is one batched matmul over every label and the factor's whole capacity (best on
  accelerators); "loop" visits only the labels that need samples and, per label, only the
  row chunks in use (about half the capacity on average), which on the CPU costs a fraction
  of "batched" (docs/benchmarks.md, "Statistics: figures"). Both draw the same normals
  (`_z1`, `_z2`), so they give the same samples up to float rounding
  (tests/stats/test_stats_sampling.py)."""
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


def sample(stats, key, num, *, need=None, impl="", rows=None, diag_eps=0.0):
  """num samples per label ([M, num, D]); diag_eps: not used.

  need [M] bool (optional): labels whose samples are used; rows [M] int (optional): only label
  y's first rows[y] samples are used. The "loop" sampler (`sampler_impl`, impl "" = the
  backend's default) returns the mean for the others, and computes label y's samples for
  rows[y] rounded up to one of a few sizes (`_row_sizes`); the samples it computes are the
  same whatever rows says."""
  del diag_eps
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
  # a matmul's cost here grows with its rows (docs/benchmarks.md, "Statistics: figures").
  # Rows not computed hold the mean.
  branches = [lambda y, o: o] + [functools.partial(one_label, n) for n in sizes]
  which = jnp.where(need & (rows > 0),
                    jnp.searchsorted(jnp.asarray(sizes), rows, side="left") + 1, 0)
  out = jnp.broadcast_to(stats.mean[:, None, :], (m, num, d))
  return jax.lax.fori_loop(0, m, lambda y, o: jax.lax.switch(which[y], branches, y, o), out)
