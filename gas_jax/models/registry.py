"""Split models: a client/server pair of linen modules plus derived cost constants.

Model families register a builder ``builder(split, num_classes, input_shape) ->
SplitModel`` in ``gas_jax.registry.MODELS`` through ``register_model``, which
also records the splits the family allows. ``get_model`` looks the family up
and validates the split before calling the builder.

Each part's "model pytree" is what the algorithms carry, aggregate and checkpoint:
  * stateless modules (AlexNet, cnn_small, ViT): the plain ``params`` pytree;
  * stateful modules (BatchNorm in VGG16-BN, ResNet18): the whole variables dict
    ``{'params': ..., 'batch_stats': ...}``, so the running statistics travel,
    are averaged and are checkpointed together with the parameters (spec §3.3).
``trainable`` / ``with_trainable`` pick out / put back the part that gradients
and optimisers act on. ``client_apply`` / ``server_apply`` / ``full_apply`` run
the evaluation mode (running statistics, no dropout); ``client_train`` /
``server_train`` / ``full_train`` the training mode (batch statistics over the
rows of ``mask``, dropout keyed by ``rng``) and also return the model pytree
with updated running statistics.

A module opts into the training mode with ``__call__(self, x, train=False,
mask=None)``; modules without a ``train`` argument are deterministic.
"""
import dataclasses
import functools
import inspect
import math
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gas_jax.errors import ConfigError
from gas_jax.models import flops
from gas_jax.registry import MODELS

BITS_PER_FLOAT = 32


@dataclasses.dataclass(frozen=True)
class SplitModel:
  """A network cut into a client part and a server part.

  Attributes:
    name: registered model name (``model.name``).
    split: split point (``model.split``).
    client: x [N, H, W, C] -> activation [N, *activation_shape].
    server: activation -> logits [N, num_classes].
    input_shape: (H, W, C) of one image.
    activation_shape: per-image shape of the client output.
    num_classes: number of logits.
    client_macs / server_macs: fvcore MACs of one forward pass on ONE image.
    client_params / server_params: parameter counts.
    activation_bits: prod(activation_shape) * 32.
    client_model_bits: client_params * 32.
    full_model_bits: (client_params + server_params) * 32.
    stateful: the model pytree holds collections besides ``params``.
    compute_dtype: "float32", or "bfloat16" for mixed precision (`execution.precision=bf16`):
      every apply casts the parameters and the input to it and returns float32 outputs (running
      statistics are kept and updated in float32), so parameters, optimiser states, losses and
      everything downstream of an activation (GAS's statistics, eq. 11-12) stay float32.
  """
  name: str
  split: str
  client: nn.Module
  server: nn.Module
  input_shape: Tuple[int, ...]
  activation_shape: Tuple[int, ...]
  num_classes: int
  compute_dtype: str = "float32"
  client_macs: int = dataclasses.field(init=False)
  server_macs: int = dataclasses.field(init=False)
  client_params: int = dataclasses.field(init=False)
  server_params: int = dataclasses.field(init=False)
  activation_bits: int = dataclasses.field(init=False)
  client_model_bits: int = dataclasses.field(init=False)
  full_model_bits: int = dataclasses.field(init=False)
  stateful: bool = dataclasses.field(init=False)

  def __post_init__(self):
    setf = lambda k, v: object.__setattr__(self, k, v)
    setf("input_shape", tuple(int(d) for d in self.input_shape))
    setf("activation_shape", tuple(int(d) for d in self.activation_shape))
    x = jax.ShapeDtypeStruct((1,) + self.input_shape, jnp.float32)
    key = jax.random.PRNGKey(0)
    c_vars = jax.eval_shape(self.client.init, key, x)
    act = jax.eval_shape(self.client.apply, c_vars, x)
    if tuple(act.shape[1:]) != self.activation_shape:
      raise ValueError(
          f"{self.name}/{self.split}: client output {tuple(act.shape[1:])} != "
          f"declared activation_shape {self.activation_shape}")
    s_vars = jax.eval_shape(self.server.init, key, act)
    logits = jax.eval_shape(self.server.apply, s_vars, act)
    if tuple(logits.shape) != (1, self.num_classes):
      raise ValueError(f"{self.name}/{self.split}: server output {tuple(logits.shape)} "
                       f"!= (1, {self.num_classes})")
    setf("client_macs", flops.count_macs(self.client.apply, c_vars, x))
    setf("server_macs", flops.count_macs(self.server.apply, s_vars, act))
    setf("client_params", flops.count_params(c_vars["params"]))
    setf("server_params", flops.count_params(s_vars["params"]))
    setf("activation_bits", math.prod(self.activation_shape) * BITS_PER_FLOAT)
    setf("client_model_bits", self.client_params * BITS_PER_FLOAT)
    setf("full_model_bits", (self.client_params + self.server_params) * BITS_PER_FLOAT)
    setf("stateful", set(c_vars) != {"params"} or set(s_vars) != {"params"})

  @property
  def full_macs(self) -> int:
    """MACs of one forward pass of the unsplit network on one image."""
    return self.client_macs + self.server_macs

  def init(self, rng) -> Tuple[Any, Any]:
    """Returns (client_params, server_params) from independent keys fold_in(rng, 0/1)."""
    return _init_pair(self, rng)

  # -- model pytrees ---------------------------------------------------------------------------
  def trainable(self, part):
    """The parameters of a client or server model pytree (what gradients are taken of)."""
    return part["params"] if self.stateful else part

  def with_trainable(self, part, params):
    """The model pytree ``part`` with its parameters replaced by ``params``."""
    return {**part, "params": params} if self.stateful else params

  def _variables(self, part):
    return part if self.stateful else {"params": part}

  def _apply(self, module, variables, x, **kwargs):
    """module.apply in the compute dtype (see `compute_dtype`)."""
    if self.compute_dtype == "float32":
      return module.apply(variables, x, **kwargs)
    dt = jnp.dtype(self.compute_dtype)
    # Only the parameters are cast: BatchNorm's running statistics stay float32, so their
    # moving averages accumulate in float32 (flax promotes the update, and its output follows
    # the input and parameters: bfloat16).
    low = {k: (_cast(v, dt) if k == "params" else v) for k, v in variables.items()}
    out = module.apply(low, _cast(x, dt), **kwargs)
    return _cast(out, jnp.float32)

  # -- evaluation mode ---------------------------------------------------------------------------
  def client_apply(self, client_part, x):
    """x [N, H, W, C] -> activation [N, *activation_shape] (evaluation mode)."""
    return self._apply(self.client, self._variables(client_part), x)

  def server_apply(self, server_part, activation):
    """activation [N, *activation_shape] -> logits [N, num_classes] (evaluation mode)."""
    return self._apply(self.server, self._variables(server_part), activation)

  def full_apply(self, params_pair, x):
    """server(client(x)) for the unsplit FL baselines; params_pair = (client, server)."""
    client_params, server_params = params_pair
    return self.server_apply(server_params, self.client_apply(client_params, x))

  @property
  def server_rowwise(self) -> bool:
    """The server part's training forward treats rows independently and deterministically (no
    batch statistics, no dropout: its module takes no `train` argument), so a batch split into
    chunks gives the same logits and summed gradients as one pass."""
    return "train" not in inspect.signature(type(self.server).__call__).parameters

  # -- training mode -----------------------------------------------------------------------------
  def _train(self, module, part, x, rng, mask):
    if "train" not in inspect.signature(type(module).__call__).parameters:
      return self._apply(module, self._variables(part), x), part
    variables = self._variables(part)
    mutable = [c for c in variables if c != "params"]
    kwargs = dict(train=True, mask=mask, rngs={"dropout": rng} if rng is not None else {})
    if not mutable:
      return self._apply(module, variables, x, **kwargs), part
    y, updates = self._apply(module, variables, x, mutable=mutable, **kwargs)
    return y, {**variables, **updates}

  def client_train(self, client_part, x, rng=None, mask=None):
    """Training-mode client forward: (activation, client part with updated running stats).

    mask [N] bool: the rows BatchNorm's batch statistics are taken over (padding excluded)."""
    return self._train(self.client, client_part, x, rng, mask)

  def server_train(self, server_part, activation, rng=None, mask=None):
    """Training-mode server forward: (logits, server part with updated running stats)."""
    return self._train(self.server, server_part, activation, rng, mask)

  def full_train(self, params_pair, x, rng=None, mask=None):
    """Training-mode server(client(x)): (logits, updated (client, server) pair)."""
    client_part, server_part = params_pair
    k_c, k_s = (None, None) if rng is None else (jax.random.fold_in(rng, 0),
                                                 jax.random.fold_in(rng, 1))
    act, client_part = self.client_train(client_part, x, k_c, mask)
    logits, server_part = self.server_train(server_part, act, k_s, mask)
    return logits, (client_part, server_part)


def _cast(tree, dtype):
  """The floating leaves of `tree` as `dtype` (integer leaves, e.g. counters, unchanged)."""
  return jax.tree_util.tree_map(
      lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)


def with_precision(model: SplitModel, precision: str) -> SplitModel:
  """The model computing in `execution.precision`'s dtype: bf16 -> bfloat16, else float32
  (tf32 is a matmul precision, set by `ExecutionPlan.active`, not a dtype)."""
  dtype = "bfloat16" if precision == "bf16" else "float32"
  return model if model.compute_dtype == dtype else dataclasses.replace(model, compute_dtype=dtype)


@functools.partial(jax.jit, static_argnums=0)
def _init_pair(model: SplitModel, rng):
  """Jitted body of SplitModel.init (one compile per model instead of one per op)."""
  x = jnp.zeros((1,) + model.input_shape, jnp.float32)
  a = jnp.zeros((1,) + model.activation_shape, jnp.float32)
  client = model.client.init(jax.random.fold_in(rng, 0), x)
  server = model.server.init(jax.random.fold_in(rng, 1), a)
  if not model.stateful:
    return client["params"], server["params"]
  return dict(client), dict(server)


def make_split_model(name: str, split: str, client: nn.Module, server: nn.Module,
                     input_shape: Sequence[int], num_classes: int) -> SplitModel:
  """Builds a SplitModel, inferring activation_shape from the client module."""
  input_shape = tuple(int(d) for d in input_shape)
  x = jax.ShapeDtypeStruct((1,) + input_shape, jnp.float32)
  c_vars = jax.eval_shape(client.init, jax.random.PRNGKey(0), x)
  act = jax.eval_shape(client.apply, c_vars, x)
  return SplitModel(name=name, split=split, client=client, server=server,
                    input_shape=input_shape, activation_shape=tuple(act.shape[1:]),
                    num_classes=int(num_classes))


def register_model(name: str, splits: Sequence[str]) -> Callable:
  """Decorator: registers a builder under ``name`` in MODELS with its allowed splits."""
  def deco(builder):
    builder.splits = tuple(splits)
    return MODELS.register(name)(builder)
  return deco


def check_split(name: str, split: str, allowed: Sequence[str]) -> None:
  """Raises ValueError naming model.split, the value and the allowed splits."""
  if split not in allowed:
    raise ConfigError(f"model.split={split!r} is unknown for model.name={name!r}; "
                     f"allowed: {', '.join(allowed)}")


def get_model(name: str, split: str, num_classes: int, input_shape: Sequence[int]) -> SplitModel:
  """Builds the registered model ``name`` cut at ``split``.

  Raises:
    ValueError: unknown model name (names ``model.name``) or unknown split for
      that model (names ``model.split``, the value and the allowed splits).
  """
  builder = MODELS.get(name)
  allowed = getattr(builder, "splits", None)
  if allowed is not None:
    check_split(name, split, allowed)
  return builder(split, int(num_classes), tuple(int(d) for d in input_shape))
