"""Tests for gas_jax.data.clients.ClientData: batch order, padding, priors, checkpointing."""
import json

import chex
import numpy as np
import pytest

from gas_jax.data import clients as clients_lib

M = 5


def _setup(batch_size=8, seed=3):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, M, size=200)
  # Client 2 has no class-4 samples; sizes 37, 16 (exact multiple of B), 5 (< B).
  pool = rng.permutation(200)
  parts = [pool[:37], pool[37:53], None]
  rest = pool[53:]
  parts[2] = rest[labels[rest] != 4][:5]
  return clients_lib.ClientData(parts, labels, M, batch_size, seed), parts, labels


def test_sizes_and_label_counts():
  cd, parts, labels = _setup()
  assert cd.num_clients == 3
  chex.assert_trees_all_equal(cd.sizes, np.array([37, 16, 5], np.int64))
  expected = np.array([[np.sum(labels[p] == m) for m in range(M)] for p in parts])
  chex.assert_trees_all_equal(cd.label_counts, expected.astype(np.int64))
  assert cd.label_counts[2, 4] == 0


def test_logit_adjustment():
  cd, parts, labels = _setup()
  la = cd.logit_adjustment()
  assert la.dtype == np.float32 and la.shape == (3, M)
  expected = np.array(
      [[np.log(np.mean(labels[p] == m) + 1e-12) for m in range(M)] for p in parts])
  chex.assert_trees_all_close(la, expected.astype(np.float32), rtol=1e-6)
  assert la[2, 4] < -27  # log(1e-12) for the missing class.


@pytest.mark.parametrize("k", [0, 1, 2])
def test_each_pass_covers_client_exactly_once(k):
  cd, parts, _ = _setup()
  b = cd.batch_size
  n = len(parts[k])
  n_batches = -(-n // b)
  assert cd.num_batches(k) == n_batches
  orders = []
  for _ in range(3):
    seen = []
    for i in range(n_batches):
      idx, mask = cd.next_batch(k)
      assert idx.shape == (b,) and idx.dtype == np.int32
      assert mask.shape == (b,) and mask.dtype == np.bool_
      expected_valid = min(b, n - i * b)
      np.testing.assert_array_equal(mask, np.arange(b) < expected_valid)
      # Padding repeats the chunk's first index.
      assert np.all(idx[~mask] == idx[0])
      seen.extend(idx[mask].tolist())
    assert len(seen) == n
    np.testing.assert_array_equal(np.sort(seen), np.sort(parts[k]))
    orders.append(seen)
  # A fresh shuffle on every pass.
  assert orders[0] != orders[1] and orders[1] != orders[2]


def test_first_pass_uses_documented_generator():
  cd, parts, _ = _setup(batch_size=8, seed=11)
  rng = np.random.default_rng(np.random.SeedSequence([11, 0xBA7C, 0]))
  first = rng.permutation(np.asarray(parts[0], np.int64))
  second = rng.permutation(np.asarray(parts[0], np.int64))
  got = np.concatenate([cd.next_batch(0)[0][:8] for _ in range(5)])[:37]
  np.testing.assert_array_equal(got, first)
  got = np.concatenate([cd.next_batch(0)[0][:8] for _ in range(5)])[:37]
  np.testing.assert_array_equal(got, second)


def test_clients_are_independent_of_each_other():
  a, _, _ = _setup()
  b, _, _ = _setup()
  seq_a = [a.next_batch(0)[0] for _ in range(12)]
  seq_b = []
  for _ in range(12):
    b.next_batch(1)
    b.next_batch(2)
    seq_b.append(b.next_batch(0)[0])
  chex.assert_trees_all_equal(seq_a, seq_b)


def test_short_last_batch_and_tiny_client():
  cd, parts, _ = _setup(batch_size=8)
  idx, mask = cd.next_batch(2)  # 5 samples < B.
  np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
  np.testing.assert_array_equal(np.sort(idx[:5]), np.sort(parts[2]))
  np.testing.assert_array_equal(idx[5:], np.full(3, idx[0]))


def test_empty_client_raises():
  cd = clients_lib.ClientData([np.arange(4), np.zeros(0, np.int64)], np.zeros(4, np.int64),
                              2, 2, 0)
  with pytest.raises(ValueError, match="client 1"):
    cd.next_batch(1)


def _advance(cd, steps):
  for t in range(steps):
    cd.next_batch(t % cd.num_clients)
    cd.next_batch(0)


def _future(cd, steps):
  return [cd.next_batch(k) for _ in range(steps) for k in range(cd.num_clients)]


@pytest.mark.parametrize("steps", [0, 1, 7])
def test_state_dict_round_trip(steps):
  cd, parts, labels = _setup()
  _advance(cd, steps)
  state = cd.state_dict()
  assert set(state) == {"seed", "batch_size", "rng", "perm", "started", "pos"}
  for key, value in state.items():
    assert isinstance(value, (int, np.ndarray)), key
  # Survives JSON (lists of python ints) as a stand-in for any serialiser.
  as_json = json.loads(json.dumps(
      {key: v.tolist() if isinstance(v, np.ndarray) else v for key, v in state.items()}))
  restored = {key: np.asarray(v, dtype=state[key].dtype) if isinstance(state[key], np.ndarray)
              else v for key, v in as_json.items()}
  expected = _future(cd, 20)
  fresh = clients_lib.ClientData(parts, labels, M, 8, 3)
  fresh.load_state_dict(restored)
  chex.assert_trees_all_equal(_future(fresh, 20), expected)


def test_state_dict_differs_after_progress_and_is_validated():
  cd, parts, labels = _setup()
  s0 = cd.state_dict()
  _advance(cd, 3)
  s1 = cd.state_dict()
  assert not np.array_equal(s0["rng"], s1["rng"]) or not np.array_equal(s0["pos"], s1["pos"])
  other_seed = clients_lib.ClientData(parts, labels, M, 8, 4)
  with pytest.raises(ValueError):
    other_seed.load_state_dict(s1)
  other_parts = clients_lib.ClientData([parts[0], parts[1]], labels, M, 8, 3)
  with pytest.raises(ValueError):
    other_parts.load_state_dict(s1)
