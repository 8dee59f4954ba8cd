"""Tests for gas_jax.models: shapes, cost constants (spec §3.1/§3.2/§2.0), init, errors."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gas_jax.models  # noqa: F401  (registers the model families)
from gas_jax.models import flops
from gas_jax.models import layers
from gas_jax.models.registry import get_model

# Spec §3.1: split -> (activation shape, client MACs, client params, client bits,
# activation bits).
ALEXNET_CIFAR = {
    "L1": ((16, 16, 32), 884_736, 896, 28_672, 262_144),
    "L2": ((8, 8, 64), 5_603_328, 19_392, 620_544, 131_072),
    "L3": ((8, 8, 128), 10_321_920, 93_248, 2_983_936, 262_144),
    "L4": ((3, 3, 256), 66_945_024, 978_496, 31_311_872, 73_728),
}
ALEXNET_FULL_MACS = 69_833_728   # spec §2.0
ALEXNET_FULL_PARAMS = 3_868_746  # spec §2.0


def test_cnn_small_shapes_and_params():
  model = get_model("cnn_small", "default", 10, (8, 8, 1))
  assert model.activation_shape == (4, 4, 64)
  assert model.activation_bits == 1024 * 32
  rng = jax.random.PRNGKey(0)
  cp, sp = model.init(rng)
  # Client and server are drawn from fold_in(rng, 0) and fold_in(rng, 1).
  ref_cp = jax.jit(model.client.init)(jax.random.fold_in(rng, 0), jnp.zeros((1, 8, 8, 1)))
  chex.assert_trees_all_close(cp, ref_cp["params"])
  ref_sp = jax.jit(model.server.init)(jax.random.fold_in(rng, 1), jnp.zeros((1, 4, 4, 64)))
  chex.assert_trees_all_close(sp, ref_sp["params"])
  x = jnp.ones((5, 8, 8, 1))
  act = model.client_apply(cp, x)
  chex.assert_shape(act, (5, 4, 4, 64))
  chex.assert_shape(model.server_apply(sp, act), (5, 10))
  chex.assert_shape(model.full_apply((cp, sp), x), (5, 10))
  client = 320 + 18_496
  server = 73_856 + 512 * 256 + 256 + 256 * 10 + 10
  assert flops.count_params(cp) == client == model.client_params == 18_816
  assert flops.count_params(sp) == server == model.server_params
  assert model.client_model_bits == client * 32
  assert model.full_model_bits == (client + server) * 32


def test_cnn_small_input_channels_from_shape():
  model = get_model("cnn_small", "default", 7, (8, 8, 3))
  cp, _ = model.init(jax.random.PRNGKey(0))
  chex.assert_shape(cp["conv1"]["kernel"], (3, 3, 3, 32))
  assert model.client_params == 3 * 9 * 32 + 32 + 18_496
  assert model.num_classes == 7


@pytest.mark.parametrize("split", sorted(ALEXNET_CIFAR))
def test_alexnet_cifar_split_constants(split):
  act_shape, macs, params, bits, act_bits = ALEXNET_CIFAR[split]
  model = get_model("alexnet", split, 10, (32, 32, 3))
  assert model.activation_shape == act_shape
  assert model.client_macs == macs
  assert model.client_params == params == bits // 32
  assert model.client_model_bits == bits
  assert model.activation_bits == act_bits
  assert model.client_macs + model.server_macs == ALEXNET_FULL_MACS
  assert model.client_params + model.server_params == ALEXNET_FULL_PARAMS
  assert model.full_model_bits == ALEXNET_FULL_PARAMS * 32


def test_alexnet_apply_and_init_split_l2():
  model = get_model("alexnet", "L2", 10, (32, 32, 3))
  cp, sp = model.init(jax.random.PRNGKey(1))
  assert flops.count_params(cp) == 19_392
  assert flops.count_params(sp) == ALEXNET_FULL_PARAMS - 19_392
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
  act = model.client_apply(cp, x)
  chex.assert_shape(act, (2, 8, 8, 64))
  assert float(jnp.min(act)) >= 0.0  # ends in ReLU
  logits = model.full_apply((cp, sp), x)
  chex.assert_shape(logits, (2, 10))
  chex.assert_tree_all_finite(logits)
  cp0, _ = model.init(jax.random.PRNGKey(1))
  chex.assert_trees_all_equal(cp, cp0)
  cp2, _ = model.init(jax.random.PRNGKey(2))
  assert not np.allclose(cp["conv1"]["kernel"], cp2["conv1"]["kernel"])


def test_alexnet_one_channel_variant():
  model = get_model("alexnet", "L2", 10, (28, 28, 1))
  assert model.activation_shape == (7, 7, 64)
  assert math.prod(model.activation_shape) == 3136
  assert model.client_macs == 3_838_464
  assert model.client_params == 18_816
  l4 = get_model("alexnet", "L4", 10, (28, 28, 1))
  assert l4.activation_shape == (3, 3, 256)


def test_count_macs_toy():
  conv = layers.Conv(8, kernel=(3, 3), padding=1)
  dense = layers.Dense(5)
  x = jnp.zeros((2, 6, 6, 4))
  cv = conv.init(jax.random.PRNGKey(0), x)
  h = jnp.zeros((2, 6 * 6 * 8))
  dv = dense.init(jax.random.PRNGKey(0), h)

  @jax.jit  # a pjit sub-jaxpr must be recursed into
  def fn(cv, dv, x):
    y = jax.nn.relu(conv.apply(cv, x))  # relu is a custom_jvp call
    return dense.apply(dv, y.reshape((y.shape[0], -1)))

  conv_macs = 2 * 6 * 6 * 8 * (3 * 3 * 4)
  dense_macs = 2 * 5 * (6 * 6 * 8)
  assert flops.count_macs(fn, cv, dv, x) == conv_macs + dense_macs
  # Per-batch: one image is half of that.
  assert flops.count_macs(fn, cv, dv, x[:1]) == (conv_macs + dense_macs) // 2


def test_count_macs_grouped_conv_and_batched_dot():
  x = jnp.zeros((1, 5, 5, 6))
  w = jnp.zeros((3, 3, 2, 9))  # 3 groups: cin/groups = 2

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=3)

  assert flops.count_macs(conv, x, w) == 3 * 3 * 9 * (3 * 3 * 2)
  a, b = jnp.zeros((4, 3, 7)), jnp.zeros((4, 7, 2))
  assert flops.count_macs(jnp.matmul, a, b) == 4 * 3 * 2 * 7


def test_init_statistics_match_pytorch_defaults():
  cin, kh, kw = 16, 3, 3
  fan_in = kh * kw * cin
  bound = 1.0 / math.sqrt(fan_in)
  conv = layers.Conv(64, kernel=(kh, kw), padding=1)
  p = conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, cin)))["params"]
  k, b = np.asarray(p["kernel"]), np.asarray(p["bias"])
  assert k.shape == (kh, kw, cin, 64)
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
  assert np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound

  dense_in = 1000
  dense = layers.Dense(1000)
  p = dense.init(jax.random.PRNGKey(1), jnp.zeros((1, dense_in)))["params"]
  k, b = np.asarray(p["kernel"]), np.asarray(p["bias"])
  dbound = 1.0 / math.sqrt(dense_in)
  assert abs(k.std() / (1.0 / math.sqrt(3 * dense_in)) - 1.0) < 0.05
  assert abs(k.mean()) < 0.05 * dbound
  assert np.abs(k).max() <= dbound
  assert np.abs(b).max() <= dbound and np.abs(b).max() > 0.5 * dbound
  assert abs(b.std() / (dbound / math.sqrt(3)) - 1.0) < 0.15


def test_get_model_unknown_name():
  with pytest.raises(ValueError, match=r"model\.name.*'nope'.*alexnet"):
    get_model("nope", "L2", 10, (32, 32, 3))


def test_get_model_unknown_split():
  with pytest.raises(ValueError, match=r"model\.split.*'L9'.*L1, L2, L3, L4"):
    get_model("alexnet", "L9", 10, (32, 32, 3))
  with pytest.raises(ValueError, match=r"model\.split.*'L2'.*default"):
    get_model("cnn_small", "L2", 10, (8, 8, 1))
