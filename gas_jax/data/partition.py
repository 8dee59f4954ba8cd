"""Splits a train set over clients: iid, label shards (REF default) or Dirichlet.

`partition` returns, for each of the K clients, an int64 array of indices into the train set.
All randomness comes from one explicitly seeded numpy Generator, so a (labels, scheme, seed)
triple always yields the same partition and no global numpy state is touched.

Schemes (spec/algorithms.md section 4):
  * "iid": a random permutation cut into K nearly equal parts.
  * "shard" (section 4.3): S = s*K/M shards per class, each of floor(n_i/S) samples of one
    class (the remainder of each class is dropped); every client gets s random shards.
  * "dirichlet" (section 4.4): per class, proportions q ~ Dir(alpha*1_K); clients that already
    hold at least N/K samples get no share of later classes; the whole draw is repeated until
    every client holds at least `min_size` samples.
"""
from typing import List

import numpy as np

from gas_jax.errors import ConfigError

SCHEMES = ("iid", "shard", "dirichlet")
_MAX_DIRICHLET_TRIES = 1000


def partition(labels: np.ndarray,
              num_clients: int,
              scheme: str,
              *,
              num_classes: int,
              seed: int,
              shards: int = 2,
              alpha: float = 0.5,
              min_size: int = 10) -> List[np.ndarray]:
  """Assigns train examples to clients.

  Args:
    labels: int [N] train labels in [0, num_classes).
    num_clients: K.
    scheme: "iid", "shard" or "dirichlet" (config `data.partition`).
    num_classes: M.
    seed: seed of the partition generator.
    shards: s, shards per client (scheme "shard"; config `data.shards`).
    alpha: Dirichlet concentration (scheme "dirichlet"; config `data.alpha`).
    min_size: fewest samples a client may hold (scheme "dirichlet").

  Returns:
    K int64 arrays of train indices; they are pairwise disjoint.

  Raises:
    ValueError: naming the config field for an unknown scheme, a shard count that does not
      divide evenly, a non-positive alpha, or a Dirichlet draw that never satisfies min_size.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
  if num_clients < 1:
    raise ValueError(f"clients.num must be >= 1, got {num_clients}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes})")
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
  if scheme == "iid":
    parts = _iid(labels.size, num_clients, rng)
  elif scheme == "shard":
    parts = _shard(labels, num_clients, num_classes, shards, rng)
  elif scheme == "dirichlet":
    parts = _dirichlet(labels, num_clients, num_classes, alpha, min_size, rng)
  else:
    raise ConfigError(f"data.partition={scheme!r} is unknown; allowed: {', '.join(SCHEMES)}")
  return [np.asarray(p, dtype=np.int64) for p in parts]


def _iid(n: int, num_clients: int, rng: np.random.Generator) -> List[np.ndarray]:
  """Random permutation split into nearly equal consecutive parts."""
  return np.array_split(rng.permutation(n), num_clients)


def _shard(labels: np.ndarray, num_clients: int, num_classes: int, shards: int,
           rng: np.random.Generator) -> List[np.ndarray]:
  """REF shard partition (spec section 4.3)."""
  if shards < 1:
    raise ConfigError(f"data.shards={shards} must be >= 1")
  if (shards * num_clients) % num_classes:
    raise ConfigError(
        f"data.shards={shards}: shards*clients.num ({shards}*{num_clients}="
        f"{shards * num_clients}) must be divisible by the number of classes ({num_classes})")
  per_class = shards * num_clients // num_classes  # S
  shard_list = []  # Global shard id i*S + j.
  for c in range(num_classes):
    perm = rng.permutation(np.flatnonzero(labels == c))
    size = perm.size // per_class
    shard_list.extend(perm[j * size:(j + 1) * size] for j in range(per_class))
  order = rng.permutation(num_classes * per_class)
  parts = []
  for k in range(num_clients):
    ids = order[k * shards:(k + 1) * shards]
    parts.append(rng.permutation(np.concatenate([shard_list[i] for i in ids])))
  return parts


def _dirichlet(labels: np.ndarray, num_clients: int, num_classes: int, alpha: float,
               min_size: int, rng: np.random.Generator) -> List[np.ndarray]:
  """REF Dirichlet partition with the N/K cap and the min-size retry (spec section 4.4)."""
  if not alpha > 0:
    raise ConfigError(f"data.alpha={alpha} must be > 0")
  n = labels.size
  if min_size * num_clients > n:
    raise ConfigError(f"data.alpha={alpha}: {num_clients} clients with at least {min_size} "
                     f"samples each need more than the {n} train samples")
  cap = n / num_clients
  by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
  for _ in range(_MAX_DIRICHLET_TRIES):
    bins = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, np.int64)
    for idx in by_class:
      idx = idx.copy()
      rng.shuffle(idx)
      q = rng.dirichlet(np.full(num_clients, alpha))
      q = q * (sizes < cap)
      total = q.sum()
      if not total > 0:  # All mass underflowed onto capped clients; REF would produce NaNs.
        break
      q = q / total
      cut = (np.cumsum(q) * idx.size).astype(np.int64)[:-1]
      for j, chunk in enumerate(np.split(idx, cut)):
        bins[j].extend(chunk.tolist())
        sizes[j] += chunk.size
    else:
      if sizes.min() >= min_size:
        break
  else:
    raise ConfigError(
        f"data.alpha={alpha}: no Dirichlet draw gave every one of {num_clients} clients at "
        f"least {min_size} samples in {_MAX_DIRICHLET_TRIES} tries; raise data.alpha or "
        "lower clients.num")
  parts = []
  for b in bins:
    b = np.asarray(b, dtype=np.int64)
    rng.shuffle(b)
    parts.append(rng.permutation(b))
  return parts
