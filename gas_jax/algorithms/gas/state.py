"""GAS hyperparameters and states (spec §1.1), frozen: every step is a pure function of them.

`GasHParams` holds the run's static choices (C, B, M, the optimiser of spec §1.7, the
statistics kind of paper eq. 11-12); the states are `flax.struct` pytrees: the client side
(`ClientState`: the C in-flight client models, theta_glob and the model buffer of eq. 9-10),
the server side (`ServerState`: phi, its optimiser, the per-label statistics) and the
activation buffer of eq. (4) (`ActivationBuffer`).
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from gas_jax import stats as stats_lib
from gas_jax import weighting
from gas_jax.execution import ExecutionPlan

tree_map = jax.tree_util.tree_map


@dataclasses.dataclass(frozen=True)
class GasHParams:
  participating: int            # C: concurrency (and, by default, the activation buffer)
  batch_size: int               # B
  num_classes: int              # M
  generate: bool = True
  lr: float = 0.01
  lr_decay: str = "none"        # "none" (REF) | "sqrt" (paper: eta_0 / sqrt(t))
  optimizer: str = "sgd"
  momentum: float = 0.9
  weight_decay: float = 5e-4
  clip_norm: float = 10.0
  shared_momentum: bool = True  # REF: one client momentum buffer shared by all clients
  stats_jitter: float = stats_lib.REF_JITTER
  stats_block: int = 16
  stats_method: str = "sqrt"    # "sqrt" (square-root factor, default) | "cholesky" (REF-literal)
  stats_covariance: str = "full"  # "full" | "diag" | "lowrank" (high-dimensional splits)
  stats_rank: int = 64          # rows kept per label by "lowrank"
  stats_refresh_every: int = 1  # "cholesky": refactorise every N server updates (mean exact)
  stats_diag_rule: str = "ref"  # "diag" generation: "ref" (REF's diagonal variant) | "topup"
  keep_last_batch: bool = False   # keep the server's last batch (gradient dissimilarity, Fig. 2a)
  server_chunk: int = 0         # server forward/backward in chunks of this many rows (0: one pass)
  sampler: str = ""             # square-root statistics sampler: "loop" | "batched" | "" (backend)
  relative_tags: bool = False   # tags relative to a running maximum ("exp"/"poly", `weighting`)
  server_bn_client_steps: bool = True  # REF: client-gradient forwards update phi's BN running stats
  privacy: Any = None           # `privacy.regularisers.PrivacyHParams`; None: no regulariser (REF)
  activation_buffer: int = 0    # Q_s minibatches per server update (0: C, REF)
  la_tau: float = 1.0           # logit adjustment strength tau of eq. (6) (1: REF; 0: plain CE)
  gen_rows: int = 0             # generation tops each label up to this many rows (0: B, REF)
  gen_balance: str = "topup"    # "topup" (REF, spec §1.5) | "equal" (paper: equal rows per label)


def buffer_size(hp: GasHParams) -> int:
  """Q_s: minibatches the activation buffer holds before a server update (REF: C)."""
  return hp.activation_buffer or hp.participating


def gen_target(hp: GasHParams) -> int:
  """The rows per label generation tops up to (REF: B, spec §1.5)."""
  return hp.gen_rows or hp.batch_size


def gen_samples(hp: GasHParams) -> int:
  """The most generated rows one label can need in a server update: its target, or with
  "equal" balance the largest label count a buffer can hold (Q_s B, all its rows one label)."""
  t = gen_target(hp)
  return t if hp.gen_balance == "topup" else max(t, buffer_size(hp) * hp.batch_size)


@struct.dataclass
class ClientState:
  """Everything on the client side of the split (small: C copies of the client model)."""
  slots: Any             # client params of the C in-flight clients, stacked on axis 0
  global_client: Any     # theta_glob, the newest aggregate
  model_sum: Any         # model buffer: running weighted sum of uploaded client models
  model_weight: jax.Array
  client_opt: Any        # shared (REF) or stacked per slot
  global_iter: jax.Array
  decoder: Any = None    # privacy "inversion": `privacy.regularisers.GasDecoders`, else None


@struct.dataclass
class ServerState:
  server: Any            # phi
  server_opt: Any
  stats: stats_lib.GaussianStats   # any kind of `gas_jax.stats.KINDS`
  server_updates: jax.Array
  last_batch: Any = None  # (x, y, valid) of the last server update, for gradient dissimilarity


@struct.dataclass
class ActivationBuffer:
  acts: jax.Array        # [Q_s, B, D] (Q_s = C in REF)
  labels: jax.Array      # [Q_s, B]
  row_mask: jax.Array    # [Q_s, B] bool (partial minibatches are padded)
  tags: jax.Array        # [Q_s] weight tag of each buffered minibatch
  tag_shift: jax.Array = None  # [Q_s] growth of the tags' reference at each (relative tags only)


@struct.dataclass
class GasState:
  client: ClientState
  server: ServerState
  buffer: ActivationBuffer


@dataclasses.dataclass(frozen=True)
class Algorithm:
  init: Callable
  client_step: Callable    # (ClientState, batch, rng) -> (ClientState, outputs)
  server_step: Callable    # (ServerState, batch, rng) -> (ServerState, metrics)
  hparams: Any
  cohort_step: Callable = None   # (ClientState, batch[L], rng) -> (ClientState, outputs[L])
  generate: Callable = None      # the server update's statistics and sampling (benchmarks)
  compress: Callable = None      # (ServerState, label) -> ServerState: one factor compression
  client_objective: Callable = None  # (p, theta, batch, rng, dec) -> (loss, aux): the client loss
  restart_slot: Callable = None  # (ClientState, slot) -> ClientState: a lost model's slot refilled


def stack(tree, n):
  return tree_map(lambda p: jnp.broadcast_to(p, (n,) + p.shape), tree)


def index(tree, i):
  return tree_map(lambda p: p[i], tree)


def set_at(tree, i, value):
  return tree_map(lambda p, v: p.at[i].set(v), tree, value)


def finite(tree):
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(tree)]))


def hparams_from_config(config, num_classes: int, generate: bool, plan=None) -> GasHParams:
  """GAS's hyperparameters from the config; `plan` (`gas_jax.execution.ExecutionPlan`, default
  resolved from the config for this machine) gives the server chunk and the sampler."""
  plan = plan or ExecutionPlan.resolve(config)
  return GasHParams(
      participating=config.clients.participating, batch_size=config.clients.batch_size,
      num_classes=num_classes, generate=generate, lr=config.optimizer.lr,
      lr_decay=config.optimizer.decay, optimizer=config.optimizer.name,
      momentum=config.optimizer.momentum, weight_decay=config.optimizer.weight_decay,
      clip_norm=config.optimizer.clip_norm,
      shared_momentum=config.clients.momentum == "shared",
      stats_jitter=config.stats.jitter, stats_block=config.stats.block,
      stats_method=config.stats.method, stats_covariance=config.stats.covariance,
      stats_rank=config.stats.rank, stats_refresh_every=config.stats.refresh_every,
      stats_diag_rule=config.stats.diag_rule,
      keep_last_batch=bool(config.grad_dissimilarity.enabled),
      server_chunk=plan.server_chunk, sampler=plan.sampler,
      relative_tags=config.weighting.fn in weighting.RELATIVE,
      server_bn_client_steps=bool(config.model.server_bn_client_steps),
      activation_buffer=config.clients.get("activation_buffer", 0),
      la_tau=float(config.clients.get("la_tau", 1.0)),
      gen_rows=config.stats.get("gen_rows", 0),
      gen_balance=config.stats.get("gen_balance", "topup"))
