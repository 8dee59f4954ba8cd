"""FL baselines on the unsplit model: FedAvg, FedBuff and CA2FL (spec §2.0-2.3), REF semantics.

Papers: FedAvg - McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017; FedBuff - Nguyen et al., "Federated Learning with Buffered
Asynchronous Aggregation", AISTATS 2022; CA2FL - Wang et al., "Tackling the Data Heterogeneity in
Asynchronous Federated Learning with Cached Update Calibration", ICLR 2024. The GAS paper (Yang &
Liu, AAAI 2025) compares against the authors' scripts (`baseline/*.py`, "REF").

The model is the split model's (client, server) params pair trained end to end (server(client(x)));
there is no logit adjustment (plain mean CE). `build` returns a pure local SGD step with REF's
optimiser (clip 10 on the FULL model, weight decay 5e-4, momentum 0.9); the runner keeps ONE
optimiser state shared by all clients and rounds (spec §0 quirk) unless
`clients.momentum="per_client"` (then a fresh state per local training). The aggregation rules are
pure functions over parameter pytrees:

- FedAvg: w <- sum_k p_k w_k, p_k = |D_k| / sum_S |D_j| (data-size weights).
- FedBuff REF: the buffer averages the C uploaded *models* uniformly and the average replaces w
  (`fedbuff_ref_add`); the published rule (`fedbuff_paper_add` / `fedbuff_paper_flush`) buffers
  client deltas Delta = w_end - w_start, optionally scaled by 1/sqrt(1 + staleness), and applies
  w <- w + eta_g * mean(Delta). REF equals the published rule only if every buffered client
  started from the current global and eta_g = 1.
- CA2FL REF: each client keeps its latest update h_k = w_end - w_start (kept forever) and a flush
  applies w <- w + sum_{k=1..K} P_k h_k over ALL K caches, P_k = |D_k| / sum_all |D|. The
  published rule: v = hbar + mean_{i in S}(Delta_i - h_i^old), w <- w + eta v, h_i <- Delta_i,
  hbar = mean_k h_k (`CacheState`, `ca2fl_arrive`, `ca2fl_*_flush`). REF's aliasing
  (re-dispatched clients train from the live global) is the runner's business
  (`gas_jax.runners.fl_runner`).
"""
import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from gas_jax import losses, optim
from gas_jax.errors import ConfigError

tree_map = jax.tree_util.tree_map


@dataclasses.dataclass(frozen=True)
class FLHParams:
  """Optimiser settings shared by the FL and SFL baselines (spec §0)."""
  lr: float = 0.01
  lr_decay: str = "none"       # "none" (REF) | "sqrt"
  optimizer: str = "sgd"
  momentum: float = 0.9
  weight_decay: float = 5e-4
  clip_norm: float = 10.0


@dataclasses.dataclass(frozen=True)
class FLAlgorithm:
  init: Callable         # rng -> (params, opt_state); params = (client_params, server_params)
  init_opt: Callable     # params -> a fresh optimiser state (of the trainable part)
  local_step: Callable   # (params, opt_state, batch, rng) -> (params, opt_state, metrics)
  hparams: FLHParams


def hparams_from_config(config) -> FLHParams:
  o = config.optimizer
  return FLHParams(lr=o.lr, lr_decay=o.decay, optimizer=o.name, momentum=o.momentum,
                   weight_decay=o.weight_decay, clip_norm=o.clip_norm)


def make_tx(hp: FLHParams):
  return optim.make_transform(hp.optimizer, hp.momentum, hp.weight_decay, hp.clip_norm)


def finite(tree) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(tree)]))


def build(model, hp: FLHParams) -> FLAlgorithm:
  """Pure local SGD step of the unsplit model (clipping over the whole (client, server) pair)."""
  tx = make_tx(hp)

  trainable = lambda pair: tuple(model.trainable(p) for p in pair)
  with_trainable = lambda pair, ps: tuple(model.with_trainable(p, q) for p, q in zip(pair, ps))
  init_opt = lambda params: tx.init(trainable(params))

  def init(rng):
    params = model.init(rng)
    return params, init_opt(params)

  def local_step(params, opt_state, batch, rng):
    """batch: x [B, ...], y [B], mask [B] (padded rows False), global_iter (for lr decay).
    Training mode: BatchNorm over the unmasked rows (running stats updated), dropout by rng."""
    def loss_fn(p):
      logits, new = model.full_train(with_trainable(params, p), batch["x"], rng, batch["mask"])
      return losses.masked_mean_ce(logits, batch["y"], batch["mask"]), new

    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable(params))
    lr = optim.learning_rate(hp.lr, batch["global_iter"], hp.lr_decay)
    p, opt_state = optim.apply(tx, trainable(new), grads, opt_state, lr)
    return with_trainable(new, p), opt_state, dict(loss=loss, grad_finite=finite(grads))

  return FLAlgorithm(init=init, init_opt=init_opt, local_step=local_step, hparams=hp)


# ----------------------------------------------------------------------------------------------
# Aggregation rules (pure; pytrees of arrays in, pytree out).

def weighted_sum(trees: Sequence[Any], weights) -> Any:
  """sum_i weights[i] * trees[i]."""
  w = jnp.asarray(weights, jnp.float32)
  return tree_map(lambda *xs: jnp.tensordot(w, jnp.stack(xs), axes=1), *trees)


def fedavg_weights(sizes) -> jax.Array:
  """p_k = |D_k| / sum_S |D_j| over the selected clients."""
  sizes = jnp.asarray(sizes, jnp.float32)
  return sizes / jnp.sum(sizes)


def fedavg_aggregate(models: Sequence[Any], sizes) -> Any:
  """FedAvg (spec §2.1): the data-size weighted average of the selected clients' models."""
  return weighted_sum(models, fedavg_weights(sizes))


def zeros_like(tree) -> Any:
  return tree_map(jnp.zeros_like, tree)


def fedbuff_ref_add(acc, model, buffer_size: int):
  """REF FedBuff buffer: acc += w_k / C; after C arrivals acc *replaces* the global model."""
  return tree_map(lambda a, w: a + w / buffer_size, acc, model)


def staleness_scale(staleness, mode: str):
  """'none': 1; 'sqrt': 1 / sqrt(1 + tau), tau = global updates since the client's dispatch."""
  if mode == "none":
    return jnp.ones((), jnp.float32)
  if mode == "sqrt":
    return 1.0 / jnp.sqrt(1.0 + jnp.asarray(staleness, jnp.float32))
  raise ConfigError(f"fedbuff.staleness={mode!r} is unknown; allowed: none, sqrt")


def fedbuff_paper_add(acc, start, end, staleness, mode: str):
  """Published FedBuff buffer: acc += s(tau) * (w_end - w_start)."""
  s = staleness_scale(staleness, mode)
  return tree_map(lambda a, w0, w1: a + s * (w1 - w0), acc, start, end)


def fedbuff_paper_flush(glob, acc, buffer_size: int, server_lr):
  """Published FedBuff server step: w <- w + eta_g * acc / C."""
  return tree_map(lambda w, a: w + server_lr * a / buffer_size, glob, acc)


@struct.dataclass
class CacheState:
  """CA2FL caches: h_k for all K clients (stacked on axis 0) and the published rule's window."""
  caches: Any        # [K, ...] latest update of each client (0 until it first arrives)
  hbar: Any          # published rule: mean_k h_k at the start of the buffer window
  acc: Any           # published rule: sum over this window's arrivals of (Delta_i - h_i^old)
  count: jax.Array   # arrivals in this window


def ca2fl_init(params, num_clients: int) -> CacheState:
  return CacheState(caches=tree_map(lambda p: jnp.zeros((num_clients,) + p.shape, p.dtype), params),
                    hbar=zeros_like(params), acc=zeros_like(params),
                    count=jnp.zeros((), jnp.int32))


def ca2fl_arrive(state: CacheState, k, delta) -> CacheState:
  """Client k arrives with Delta = w_end - w_start: acc += Delta - h_k^old; h_k <- Delta."""
  acc = tree_map(lambda a, c, d: a + d - c[k], state.acc, state.caches, delta)
  caches = tree_map(lambda c, d: c.at[k].set(d), state.caches, delta)
  return state.replace(caches=caches, acc=acc, count=state.count + 1)


def _new_window(state: CacheState, caches) -> CacheState:
  return state.replace(hbar=tree_map(lambda c: jnp.mean(c, 0), caches),
                       acc=zeros_like(state.acc), count=jnp.zeros((), jnp.int32))


def ca2fl_ref_flush(glob, state: CacheState, data_weights):
  """REF CA2FL: w <- w + sum_{k=1..K} P_k h_k over ALL cached updates (data weights P_k)."""
  p = jnp.asarray(data_weights, jnp.float32)
  new = tree_map(lambda w, c: w + jnp.tensordot(p, c, axes=1), glob, state.caches)
  return new, _new_window(state, state.caches)


def ca2fl_paper_flush(glob, state: CacheState, server_lr):
  """Published CA2FL: v = hbar + acc / |S|; w <- w + eta v; hbar <- mean_k h_k."""
  n = jnp.maximum(state.count, 1).astype(jnp.float32)
  new = tree_map(lambda w, hb, a: w + server_lr * (hb + a / n), glob, state.hbar, state.acc)
  return new, _new_window(state, state.caches)
