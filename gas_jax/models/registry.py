"""Split models: a client/server pair of linen modules plus derived cost constants.

Model families register a builder ``builder(split, num_classes, input_shape) ->
SplitModel`` in ``gas_jax.registry.MODELS`` through ``register_model``, which
also records the splits the family allows. ``get_model`` looks the family up
and validates the split before calling the builder.

Parameters are handled as plain ``params`` pytrees (the content of the linen
``'params'`` collection): ``SplitModel.init`` returns ``(client_params,
server_params)`` and ``client_apply`` / ``server_apply`` / ``full_apply`` wrap
them in ``{'params': ...}`` for ``Module.apply``.
"""
import dataclasses
import functools
import math
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

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
  """
  name: str
  split: str
  client: nn.Module
  server: nn.Module
  input_shape: Tuple[int, ...]
  activation_shape: Tuple[int, ...]
  num_classes: int
  client_macs: int = dataclasses.field(init=False)
  server_macs: int = dataclasses.field(init=False)
  client_params: int = dataclasses.field(init=False)
  server_params: int = dataclasses.field(init=False)
  activation_bits: int = dataclasses.field(init=False)
  client_model_bits: int = dataclasses.field(init=False)
  full_model_bits: int = dataclasses.field(init=False)

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

  @property
  def full_macs(self) -> int:
    """MACs of one forward pass of the unsplit network on one image."""
    return self.client_macs + self.server_macs

  def init(self, rng) -> Tuple[Any, Any]:
    """Returns (client_params, server_params) from independent keys fold_in(rng, 0/1)."""
    return _init_pair(self, rng)

  def client_apply(self, client_params, x):
    """x [N, H, W, C] -> activation [N, *activation_shape]."""
    return self.client.apply({"params": client_params}, x)

  def server_apply(self, server_params, activation):
    """activation [N, *activation_shape] -> logits [N, num_classes]."""
    return self.server.apply({"params": server_params}, activation)

  def full_apply(self, params_pair, x):
    """server(client(x)) for the unsplit FL baselines; params_pair = (client, server)."""
    client_params, server_params = params_pair
    return self.server_apply(server_params, self.client_apply(client_params, x))


@functools.partial(jax.jit, static_argnums=0)
def _init_pair(model: SplitModel, rng):
  """Jitted body of SplitModel.init (one compile per model instead of one per op)."""
  x = jnp.zeros((1,) + model.input_shape, jnp.float32)
  a = jnp.zeros((1,) + model.activation_shape, jnp.float32)
  client_params = model.client.init(jax.random.fold_in(rng, 0), x)["params"]
  server_params = model.server.init(jax.random.fold_in(rng, 1), a)["params"]
  return client_params, server_params


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
    raise ValueError(f"model.split={split!r} is unknown for model.name={name!r}; "
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
