"""Tests for gas_jax.data.partition: iid, REF shard and REF Dirichlet partitions."""
import numpy as np
import pytest

from gas_jax.data import partition as partition_lib
from gas_jax.data import sources

M = 10


@pytest.fixture(scope="module")
def labels():
  return sources.load_dataset("digits", None).y_train


def _assert_disjoint(parts, n):
  flat = np.concatenate(parts)
  assert flat.dtype == np.int64
  assert np.unique(flat).size == flat.size, "an index is used twice"
  assert flat.min() >= 0 and flat.max() < n


def test_shard_two_labels_per_client_and_exact_shard_sizes(labels):
  k, s = 20, 2
  parts = partition_lib.partition(labels, k, "shard", num_classes=M, seed=0, shards=s)
  assert len(parts) == k
  _assert_disjoint(parts, labels.size)
  per_class = s * k // M  # S = 4.
  shard_size = np.bincount(labels, minlength=M) // per_class  # floor(n_i / S), by hand.
  shards_used = np.zeros(M, np.int64)
  for p in parts:
    counts = np.bincount(labels[p], minlength=M)
    assert np.count_nonzero(counts) <= 2
    # Each label's count is a whole number of that class's shards, 2 shards per client.
    assert np.all(counts % shard_size == 0)
    n_shards = counts // shard_size
    assert n_shards.sum() == s
    assert p.size == (n_shards * shard_size).sum()
    shards_used += n_shards
  # All M*S shards handed out; the remainder of each class is dropped.
  np.testing.assert_array_equal(shards_used, np.full(M, per_class))
  assert sum(p.size for p in parts) == per_class * shard_size.sum()


def test_shard_samples_are_shuffled_within_client(labels):
  parts = partition_lib.partition(labels, 20, "shard", num_classes=M, seed=1)
  # Concatenated shards would be label-sorted blocks; the final permutation mixes them.
  mixed = [p for p in parts if np.unique(labels[p]).size == 2]
  assert mixed
  assert any(np.count_nonzero(np.diff(labels[p])) > 1 for p in mixed)


def test_shard_indivisible_raises(labels):
  with pytest.raises(ValueError, match=r"data\.shards=2.*divisible by the number of classes"):
    partition_lib.partition(labels, 3, "shard", num_classes=M, seed=0, shards=2)
  with pytest.raises(ValueError, match=r"data\.shards"):
    partition_lib.partition(labels, 10, "shard", num_classes=M, seed=0, shards=0)


@pytest.mark.parametrize("alpha,k", [(0.1, 10), (0.1, 20), (0.5, 20), (5.0, 10)])
def test_dirichlet_min_size_cap_and_disjoint(labels, alpha, k):
  parts = partition_lib.partition(labels, k, "dirichlet", num_classes=M, seed=0, alpha=alpha)
  assert len(parts) == k
  _assert_disjoint(parts, labels.size)
  assert sum(p.size for p in parts) == labels.size  # Dirichlet drops nothing.
  cap = labels.size / k
  class_sizes = np.bincount(labels, minlength=M)
  capped_slots = 0
  for p in parts:
    assert p.size >= 10
    assert p.size < cap + class_sizes.max()
    # REF cap: classes are dealt in order 0..M-1; once a client holds >= N/K samples it
    # receives nothing from any later class.
    counts = np.bincount(labels[p], minlength=M)
    held_before = np.concatenate([[0], np.cumsum(counts)[:-1]])
    assert np.all(counts[held_before >= cap] == 0)
    capped_slots += np.count_nonzero(held_before >= cap)
  if alpha < 1:
    assert capped_slots > 0  # The cap was actually exercised.


def test_dirichlet_alpha_controls_skew(labels):
  def mean_max_share(alpha):
    parts = partition_lib.partition(labels, 10, "dirichlet", num_classes=M, seed=0,
                                    alpha=alpha)
    return np.mean([np.bincount(labels[p], minlength=M).max() / p.size for p in parts])
  assert mean_max_share(0.1) > 0.4
  assert mean_max_share(1000.0) < 0.2


def test_dirichlet_bad_alpha_raises(labels):
  for alpha in (0.0, -1.0):
    with pytest.raises(ValueError, match=r"data\.alpha"):
      partition_lib.partition(labels, 10, "dirichlet", num_classes=M, seed=0, alpha=alpha)


def test_dirichlet_unreachable_min_size_raises(labels):
  with pytest.raises(ValueError, match=r"data\.alpha"):
    partition_lib.partition(labels, 200, "dirichlet", num_classes=M, seed=0, alpha=0.5,
                            min_size=10)


def test_dirichlet_retry_bound_raises():
  # 100 samples of one class over 5 clients with min 20 each: feasible only if the draw
  # splits exactly 20/20/20/20/20, which essentially never happens with alpha=0.01.
  y = np.zeros(100, np.int64)
  with pytest.raises(ValueError, match=r"data\.alpha=0\.01"):
    partition_lib.partition(y, 5, "dirichlet", num_classes=1, seed=0, alpha=0.01,
                            min_size=20)


def test_iid_sizes_and_cover(labels):
  parts = partition_lib.partition(labels, 7, "iid", num_classes=M, seed=0)
  sizes = np.array([p.size for p in parts])
  assert sizes.max() - sizes.min() <= 1
  assert sizes.sum() == labels.size
  _assert_disjoint(parts, labels.size)
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))
  assert not np.array_equal(np.concatenate(parts), np.arange(labels.size))


@pytest.mark.parametrize("scheme", ["iid", "shard", "dirichlet"])
def test_seed_determinism(labels, scheme):
  def run(seed):
    return partition_lib.partition(labels, 20, scheme, num_classes=M, seed=seed)
  a, b, c = run(0), run(0), run(1)
  assert len(a) == len(b) == len(c)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert any(x.shape != z.shape or not np.array_equal(x, z) for x, z in zip(a, c))


def test_no_global_numpy_state(labels):
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  a = partition_lib.partition(labels, 20, "dirichlet", num_classes=M, seed=5)
  np.testing.assert_array_equal(np.random.get_state()[1], before)
  np.random.seed(999)
  b = partition_lib.partition(labels, 20, "dirichlet", num_classes=M, seed=5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_unknown_scheme_raises(labels):
  with pytest.raises(ValueError, match=r"data\.partition.*iid.*shard.*dirichlet"):
    partition_lib.partition(labels, 10, "pathological", num_classes=M, seed=0)


def test_iid_and_shard_follow_documented_rng_sequence():
  # Independent re-simulation of spec section 4.3 with the documented generator.
  y = np.repeat(np.arange(4), [9, 10, 11, 12])
  seed, k, s = 7, 4, 2
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
  per_class = s * k // 4
  shards = []
  for c in range(4):
    perm = rng.permutation(np.where(y == c)[0])
    size = len(perm) // per_class
    shards += [perm[j * size:(j + 1) * size] for j in range(per_class)]
  order = rng.permutation(4 * per_class)
  expected = [rng.permutation(np.concatenate([shards[i] for i in order[j * s:(j + 1) * s]]))
              for j in range(k)]
  got = partition_lib.partition(y, k, "shard", num_classes=4, seed=seed, shards=s)
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g, e)

  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
  expected = np.array_split(rng.permutation(y.size), 5)
  got = partition_lib.partition(y, 5, "iid", num_classes=4, seed=seed)
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g, e)
