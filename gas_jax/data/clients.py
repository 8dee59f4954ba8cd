"""Per-client minibatch order, padded batches with masks, and label histograms.

`ClientData` mirrors REF's per-client torch DataLoader (shuffle=True, drop_last=False) whose
iterator persists across participations: each client walks through a permutation of its
indices in chunks of B; after the last (possibly short) chunk the next call starts a fresh
permutation. Each client has its own generator, so a client's batch sequence does not depend
on when other clients train. Short chunks are padded to B with their first index and masked.

The whole iteration state is exported by `state_dict` as fixed-shape numpy arrays so it can be
checkpointed and restored exactly.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

_BATCH_TAG = 0xBA7C


def _client_rng(seed: int, k: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, _BATCH_TAG, k]))


def _u128_to_u32(v: int) -> List[int]:
  return [(v >> (32 * i)) & 0xFFFFFFFF for i in range(4)]


def _u32_to_u128(limbs: Sequence[int]) -> int:
  return sum(int(x) << (32 * i) for i, x in enumerate(limbs))


class ClientData:
  """Client-side view of a partitioned train set.

  Attributes:
    num_clients: K.
    num_classes: M.
    batch_size: B.
    sizes: int64 [K], samples per client.
    label_counts: int64 [K, M], label histogram of each client's full local data.
  """

  def __init__(self, parts: List[np.ndarray], labels: np.ndarray, num_classes: int,
               batch_size: int, seed: int):
    """Builds the per-client iterators.

    Args:
      parts: K int arrays of train indices (from `partition`).
      labels: int [N] train labels.
      num_classes: M.
      batch_size: B, the minibatch size of every client.
      seed: seed of the per-client batch-order generators.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labels = np.asarray(labels)
    self._parts = [np.asarray(p, dtype=np.int64) for p in parts]
    self.num_classes = int(num_classes)
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.sizes = np.array([p.size for p in self._parts], dtype=np.int64)
    self.label_counts = np.stack(
        [np.bincount(labels[p], minlength=num_classes) for p in self._parts]
    ).astype(np.int64) if self._parts else np.zeros((0, num_classes), np.int64)
    self._rngs = [_client_rng(self.seed, k) for k in range(self.num_clients)]
    self._perms: List[np.ndarray] = [p.copy() for p in self._parts]  # Replaced on first use.
    self._started = np.zeros(self.num_clients, dtype=bool)
    self._pos = np.zeros(self.num_clients, dtype=np.int64)

  @property
  def num_clients(self) -> int:
    return len(self._parts)

  def indices(self, k: int) -> np.ndarray:
    """All train indices of client k (a copy, in partition order)."""
    return self._parts[k].copy()

  def num_batches(self, k: int) -> int:
    """Batches in one pass over client k's data: ceil(n_k / B)."""
    return -(-int(self.sizes[k]) // self.batch_size)

  def logit_adjustment(self) -> np.ndarray:
    """float32 [K, M] log prior of each client's labels, log(n_{k,m}/n_k + 1e-12) (eq. 6)."""
    prior = self.label_counts / np.maximum(self.sizes, 1)[:, None].astype(np.float64)
    return np.log(prior + 1e-12).astype(np.float32)

  def next_batch(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Client k's next minibatch.

    Args:
      k: client id.

    Returns:
      idx: int32 [B] train indices; a short last chunk is padded with its first index.
      mask: bool [B], False at padded positions.
    """
    if self.sizes[k] == 0:
      raise ValueError(f"client {k} holds no samples")
    if not self._started[k] or self._pos[k] >= self.sizes[k]:
      self._perms[k] = self._rngs[k].permutation(self._parts[k])
      self._started[k] = True
      self._pos[k] = 0
    start = int(self._pos[k])
    chunk = self._perms[k][start:start + self.batch_size]
    self._pos[k] = start + chunk.size
    idx = np.full(self.batch_size, chunk[0], dtype=np.int32)
    idx[:chunk.size] = chunk
    mask = np.arange(self.batch_size) < chunk.size
    return idx, mask

  def state_dict(self) -> Dict[str, object]:
    """Iteration state as fixed-shape numpy arrays and python ints.

    Keys: "seed", "batch_size" (ints, checked on load); "rng" uint32 [K, 10] (PCG64 state and
    increment as four little-endian 32-bit limbs each, then has_uint32 and uinteger);
    "perm" int64 [sum(sizes)] (current permutations concatenated in client order);
    "started" bool [K]; "pos" int64 [K].
    """
    rng = np.zeros((self.num_clients, 10), dtype=np.uint32)
    for k, g in enumerate(self._rngs):
      st = g.bit_generator.state
      rng[k, 0:4] = _u128_to_u32(st["state"]["state"])
      rng[k, 4:8] = _u128_to_u32(st["state"]["inc"])
      rng[k, 8] = st["has_uint32"]
      rng[k, 9] = st["uinteger"]
    perm = (np.concatenate(self._perms).astype(np.int64) if self._perms
            else np.zeros(0, np.int64))
    return {
        "seed": self.seed,
        "batch_size": self.batch_size,
        "rng": rng,
        "perm": perm,
        "started": self._started.copy(),
        "pos": self._pos.copy(),
    }

  def load_state_dict(self, d: Dict[str, object]) -> None:
    """Restores the state saved by `state_dict` on an object built with the same arguments."""
    if int(d["seed"]) != self.seed or int(d["batch_size"]) != self.batch_size:
      raise ValueError("ClientData state was saved with a different seed or batch_size")
    rng = np.asarray(d["rng"], dtype=np.uint32)
    perm = np.asarray(d["perm"], dtype=np.int64)
    if rng.shape != (self.num_clients, 10) or perm.size != int(self.sizes.sum()):
      raise ValueError("ClientData state does not match this partition")
    bounds = np.cumsum(self.sizes)[:-1]
    perms = np.split(perm, bounds) if self.num_clients else []
    for k, p in enumerate(perms):
      if not np.array_equal(np.sort(p), np.sort(self._parts[k])):
        raise ValueError(f"ClientData state: client {k} permutation does not match its data")
    for k, g in enumerate(self._rngs):
      g.bit_generator.state = {
          "bit_generator": "PCG64",
          "state": {"state": _u32_to_u128(rng[k, 0:4]), "inc": _u32_to_u128(rng[k, 4:8])},
          "has_uint32": int(rng[k, 8]),
          "uinteger": int(rng[k, 9]),
      }
    self._perms = [p.copy() for p in perms]
    self._started = np.asarray(d["started"], dtype=bool).copy()
    self._pos = np.asarray(d["pos"], dtype=np.int64).copy()
