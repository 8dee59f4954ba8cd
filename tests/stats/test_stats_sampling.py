"""The square-root factor's two samplers (gas_jax.stats.sample, impl "loop" | "batched").

"loop" (the CPU default) visits only the labels that need samples and only the factor's row
chunks in use; "batched" (accelerators) multiplies every label's whole capacity. They draw the
same normals, so they must give the same samples; the distribution itself is checked against
float64 numpy in tests/stats/test_stats.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax import stats
from gas_jax.stats import sqrt_sampling

M, D = 4, 6


def _stats(cap, merges=3, seed=0):
  """Labels 0-2 merged a different number of times (different rows in use), label 3 never."""
  st = stats.init_sqrt(M, D, cap)
  rng = np.random.default_rng(seed)
  merge = jax.jit(lambda s, x, l, w: stats.merge(s, x, l, w, jitter=1e-5, block=4))
  for i in range(merges):
    labels = np.array([0] * 5 + [1] * 3 + [2] * (2 if i == 0 else 0) + [0] * (0 if i == 0 else 2))
    x = rng.normal(size=(10, D)) * np.arange(1, D + 1) + labels[:, None]
    st = merge(st, jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.int32),
               jnp.asarray(rng.uniform(0.5, 2.0, 10), jnp.float32))
  return st


def test_capacity_is_a_multiple_of_the_chunk():
  assert stats.sqrt_capacity(1024, 320, 10, 16) == 2560       # 2*1024 + 496, rounded to 256
  assert sqrt_sampling._chunk(2560) == 256
  assert stats.lowrank_capacity(64, 4096, 320, 10, 16) == 576  # 64 + 496, rounded to 64
  assert sqrt_sampling._chunk(576) == 64
  assert sqrt_sampling._chunk(40) == 8 and sqrt_sampling._chunk(18) == 2


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("cap", [40, 48, 64])
def test_loop_sampler_equals_batched_sampler(cap):
  st = _stats(cap)
  used = np.asarray(st.used)
  assert len(set(used[:3].tolist())) == 3 and used[3] == 0     # three different fill levels
  key = jax.random.key(7)
  loop = jax.jit(lambda s, k: stats.sample(s, k, 5, impl="loop"))(st, key)
  batched = jax.jit(lambda s, k: stats.sample(s, k, 5, impl="batched"))(st, key)
  np.testing.assert_allclose(np.asarray(loop)[:3], np.asarray(batched)[:3], rtol=1e-5,
                             atol=1e-6)
  assert np.all(np.isfinite(np.asarray(loop)))


def test_loop_sampler_skips_labels_without_need():
  st = _stats(48)
  need = jnp.asarray([True, False, True, False])
  out = np.asarray(jax.jit(lambda s, k, n: stats.sample(s, k, 5, need=n, impl="loop"))(
      st, jax.random.key(3), need))
  full = np.asarray(jax.jit(lambda s, k: stats.sample(s, k, 5, impl="loop"))(
      st, jax.random.key(3)))
  np.testing.assert_array_equal(out[[0, 2]], full[[0, 2]])
  np.testing.assert_array_equal(out[1], np.broadcast_to(np.asarray(st.mean)[1], (5, D)))


def test_loop_sampler_after_a_compression():
  """A factor compressed to D rows (rows in use no longer a multiple of the chunk)."""
  st = _stats(16, merges=4)
  # Label 0 was compressed to D rows, then took 7 rows + the old mean's pseudo-row (2 blocks).
  assert int(st.used[0]) == D + 8
  key = jax.random.key(1)
  loop = jax.jit(lambda s, k: stats.sample(s, k, 4, impl="loop"))(st, key)
  batched = jax.jit(lambda s, k: stats.sample(s, k, 4, impl="batched"))(st, key)
  np.testing.assert_allclose(np.asarray(loop)[:3], np.asarray(batched)[:3], rtol=1e-5,
                             atol=1e-6)


def test_loop_sampler_computes_only_the_rows_used():
  """rows [M]: label y's first rows[y] samples are those of the full draw (the normals do not
  depend on how many rows are drawn); the sampler computes rows[y] rounded up to a multiple of
  8 (or to num), and the rows past that, like labels with no rows, hold the mean."""
  st = _stats(48)
  key = jax.random.key(4)
  num, rows = 20, np.array([3, 0, 17, 9])
  assert sqrt_sampling._row_sizes(num) == [8, 16, 20] and sqrt_sampling._row_sizes(5) == [5]
  assert sqrt_sampling._row_sizes(32) == [8, 16, 24, 32]
  assert sqrt_sampling._row_sizes(20000) == [5000, 10000, 15000, 20000]
  out = np.asarray(jax.jit(lambda s, k, r: stats.sample(s, k, num, rows=r, impl="loop"))(
      st, key, jnp.asarray(rows)))
  full = np.asarray(jax.jit(lambda s, k: stats.sample(s, k, num, impl="batched"))(st, key))
  mean = np.asarray(st.mean)
  for y, (n, computed) in enumerate(zip(rows, [8, 0, 20, 16])):
    np.testing.assert_allclose(out[y, :n], full[y, :n], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[y, computed:], np.broadcast_to(mean[y], (num - computed, D)))
  assert not np.allclose(out[0, 3:8], mean[0])          # computed rows past rows[y] are samples
