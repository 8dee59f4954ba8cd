"""Synchronous split-FL baselines: MiniBatch-SFL and S2FL (spec §2.4-2.5), REF semantics.

Papers: MiniBatch-SFL - Huang et al., "Distributed Mini-Batch SGD ... for Split Federated
Learning" (mini-batch SFL: the server trains on the concatenated activations of all clients);
S2FL - Yan et al., "Have Your Cake and Eat It Too: Toward Efficient and Accurate Split Federated
Learning" (2023). Both are run as the GAS authors' scripts do (`baseline/Minibatch-SFL.py`,
`baseline/S2FL.py`, "REF").

Pure pieces used by `gas_jax.runners.sfl_runner`:
- `build(model, hp)`: a client step (forward through the client part, gradient of the *plain* CE
  through a given server snapshot phi_snap, SGD on theta; returns the activation) and a server
  step (one SGD step on the concatenated activations, masked mean CE). REF optimiser (spec §0):
  client and server parts clipped to 10 separately; one client and one server momentum buffer.
- `s2fl_groups`: REF's deterministic grouping search over full-dataset label counts.

Where REF deviates from the papers (replicated here): the intended per-client batch size
max(int(p_k * C * B), 1) is a no-op (every client keeps B); S2FL's adaptive split point only
changes the simulated clock (the runner), never the trained split; S2FL's per-group server
copies all start from phi_snap and share one momentum buffer that carries over from one group's
step into the next, and the group models are averaged uniformly. REF drops the remainder
clients when C is not a multiple of the number of groups; here that is a config error.

With `privacy` (paper eq. 44, `gas_jax.privacy.regularisers`) the client loss gains gamma R; for
"inversion" the client step also takes the client's decoder copy (params, Adam state) and returns
it after its one step (out["dec"]); the runner averages the copies with the client models.
"""
import dataclasses
import math
from typing import Any, Callable, List, Sequence

import jax
import numpy as np

from gas_jax import losses, optim
from gas_jax.algorithms import fl
from gas_jax.privacy import regularisers


@dataclasses.dataclass(frozen=True)
class SflAlgorithm:
  init: Callable          # rng -> (theta, phi, client_opt, server_opt)
  init_opt: Callable      # params -> fresh optimiser state
  client_step: Callable   # (theta, client_opt, phi_snap, batch, rng, dec=None)
                          #   -> (theta, client_opt, out)
  server_step: Callable   # (phi, server_opt, batch, rng) -> (phi, server_opt, out)
  hparams: fl.FLHParams
  regulariser: Any = None   # `regularisers.Regulariser` (privacy), or None


def build(model, hp: fl.FLHParams, privacy=None) -> SflAlgorithm:
  """privacy: `regularisers.PrivacyHParams` or None (no regulariser, REF)."""
  tx = fl.make_tx(hp)
  reg = regularisers.make(model, privacy)

  init_opt = lambda part: tx.init(model.trainable(part))

  def init(rng):
    theta, phi = model.init(rng)
    return theta, phi, init_opt(theta), init_opt(phi)

  def step(part, opt, grads, batch):
    lr = optim.learning_rate(hp.lr, batch["global_iter"], hp.lr_decay)
    params, opt = optim.apply(tx, model.trainable(part), grads, opt, lr)
    return model.with_trainable(part, params), opt

  def client_step(theta, client_opt, phi, batch, rng, dec=None):
    """batch: x [B, ...], y [B], mask [B], global_iter. out: act (stop-gradient), loss (the
    CE); with a regulariser also privacy_score (R) and, for "inversion", dec: the decoder copy
    `dec` = (params, Adam state) after its step. Training mode (BatchNorm over the unmasked
    rows, dropout keyed by rng)."""
    def loss_fn(p):
      a, th = model.client_train(model.with_trainable(theta, p), batch["x"],
                                 jax.random.fold_in(rng, 0), batch["mask"])
      logits, _ = model.server_train(phi, a, jax.random.fold_in(rng, 1), batch["mask"])
      loss = losses.masked_mean_ce(logits, batch["y"], batch["mask"])
      if reg is None:
        return loss, (loss, a, th, None)
      penalty, score = reg.penalty(None if dec is None else dec[0], batch["x"], a,
                                   batch["mask"])
      return loss + penalty, (loss, a, th, score)

    (_, (loss, a, theta, score)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        model.trainable(theta))
    theta, client_opt = step(theta, client_opt, grads, batch)
    out = dict(act=jax.lax.stop_gradient(a), loss=loss, grad_finite=fl.finite(grads))
    if score is not None:
      out["privacy_score"] = score
    if reg is not None and reg.inversion:
      out["dec"] = reg.decoder_step(*dec, batch["x"], a, batch["mask"])
    return theta, client_opt, out

  def server_step(phi, server_opt, batch, rng):
    """batch: act [N, *activation_shape], y [N], mask [N], global_iter."""
    def loss_fn(p):
      logits, new = model.server_train(model.with_trainable(phi, p), batch["act"], rng,
                                       batch["mask"])
      return losses.masked_mean_ce(logits, batch["y"], batch["mask"]), new

    (loss, phi), grads = jax.value_and_grad(loss_fn, has_aux=True)(model.trainable(phi))
    phi, server_opt = step(phi, server_opt, grads, batch)
    return phi, server_opt, dict(loss=loss, grad_finite=fl.finite(grads))

  return SflAlgorithm(init=init, init_opt=init_opt, client_step=client_step,
                      server_step=server_step, hparams=hp, regulariser=reg)


def mean_trees(trees: Sequence):
  """Uniform average (S2FL's phi <- mean_g phi_g)."""
  return fl.weighted_sum(trees, np.full(len(trees), 1.0 / len(trees)))


# ----------------------------------------------------------------------------------------------
# S2FL grouping (REF `group_data`, spec §2.5). Host-side, pure numpy/Python floats in REF's order.

def group_distance(label_counts: np.ndarray, members: Sequence[int]) -> float:
  """D(g) = sqrt(sum_y (n_y / sum n - 1/M)^2), n_y = summed label counts of g's members."""
  m = label_counts.shape[1]
  n = [0] * m
  total = 0
  for k in members:
    for y in range(m):
      n[y] += int(label_counts[k, y])
      total += int(label_counts[k, y])
  dist = 0.0
  for y in range(m):
    frac = n[y] / total if total > 0 else 0.0
    dist += (frac - 1.0 / m) ** 2
  return math.sqrt(dist)


def group_objective(label_counts: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
  """Mean over groups of D(g)."""
  total = 0.0
  for g in groups:
    total += group_distance(label_counts, g)
  return total / len(groups)


def s2fl_groups(order: Sequence[int], label_counts: np.ndarray, num_groups: int = 2,
                passes: int = 100) -> List[List[int]]:
  """REF's local search: contiguous groups of C / num_groups, then `passes` swap passes.

  One pass iterates a snapshot of the group lists; for each member c of snapshot group gi (in
  order) it tries every swap of c with a member of another *current* group (skipped once c has
  left group gi) and keeps the strictly best; if that beats the current objective the swap is
  applied (the swapped members are appended at the ends of their lists) and the scan moves on
  to group gi + 1. A pass without any swap is a fixed point, so the search stops there (the
  remaining REF passes would change nothing).
  """
  order = [int(k) for k in order]
  per = len(order) // num_groups
  groups = [order[i * per:(i + 1) * per] for i in range(num_groups)]
  for _ in range(passes):
    snapshot = groups
    changed = False
    for gi, group in enumerate(snapshot):
      for c in list(group):
        best, best_obj = groups, group_objective(label_counts, groups)
        for gj, other in enumerate(groups):
          if gj == gi:
            continue
          for d in list(other):
            if c not in groups[gi]:
              break
            new = [list(g) for g in groups]
            new[gi].remove(c)
            new[gj].remove(d)
            new[gi].append(d)
            new[gj].append(c)
            obj = group_objective(label_counts, new)
            if obj < best_obj:
              best, best_obj = new, obj
        if best is not groups:
          groups, changed = best, True
          break
    if not changed:
      break
  return groups
