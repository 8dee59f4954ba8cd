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


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
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


# Spec §3.3: VGG16-BN split -> (activation shape, client conv MACs, client params).
VGG16 = {
    "L1": ((8, 8, 128), 96_141_312, 260_928),
    "L2": ((4, 4, 256), 190_513_152, 1_737_792),
    "L3": ((2, 2, 512), 284_884_992, 7_640_640),
    "L4": ((1, 1, 512), 313_196_544, 14_723_136),
}


def _conv_macs(side, cin, cout, k=3):
  return side * side * cout * k * k * cin


@pytest.mark.parametrize("split", sorted(VGG16))
def test_vgg16_split_constants(split):
  shape, macs, params = VGG16[split]
  model = get_model("vgg16", split, 10, (32, 32, 3))
  assert model.stateful
  assert model.activation_shape == shape
  assert model.client_macs == macs
  assert model.client_params == params
  assert model.client_model_bits == params * 32
  assert model.activation_bits == math.prod(shape) * 32
  # Classifier 512->4096->4096->10 plus all 13 conv blocks (conv weights+bias, BN gamma+beta).
  conv = sum(9 * cin * cout + cout + 2 * cout for cin, cout in zip(
      (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512),
      (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)))
  fc = 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
  assert model.client_params + model.server_params == conv + fc
  assert model.server_macs == (_conv_macs(32, 3, 64) + _conv_macs(32, 64, 64)
                               + _conv_macs(16, 64, 128) + _conv_macs(16, 128, 128)
                               + 3 * _conv_macs(8, 256, 256) - _conv_macs(8, 256, 256)
                               + _conv_macs(8, 128, 256)
                               + _conv_macs(4, 256, 512) + 2 * _conv_macs(4, 512, 512)
                               + 3 * _conv_macs(2, 512, 512)
                               + 512 * 4096 + 4096 * 4096 + 4096 * 10 - macs)


def test_resnet18_split_constants():
  model = get_model("resnet18", "L1", 10, (32, 32, 3))
  assert model.stateful
  assert model.activation_shape == (32, 32, 64)                    # 65,536 dims (spec §3.5)
  # stem conv 3->64 + stage 1 (four 3x3 convs 64->64), all on 32x32, no bias.
  assert model.client_macs == _conv_macs(32, 3, 64) + 4 * _conv_macs(32, 64, 64)
  assert model.client_params == (27 * 64 + 2 * 64) + 4 * (9 * 64 * 64 + 2 * 64)
  assert model.client_params + model.server_params == 11_173_962  # CIFAR ResNet18
  assert [get_model("resnet18", s, 10, (32, 32, 3)).activation_shape
          for s in ("L2", "L3", "L4")] == [(16, 16, 128), (8, 8, 256), (4, 4, 512)]


def test_vit_small_split_constants():
  model = get_model("vit_small", "L1", 10, (32, 32, 3))
  assert not model.stateful
  assert model.activation_shape == (65, 512)                       # 33,280 dims (spec §3.5)
  block_params = 2 * 1024 + 512 * 1536 + 3 * (512 * 512 + 512)    # LNs, qkv, proj, MLP
  assert model.client_params == (48 * 512 + 512) + 512 + 65 * 512 + block_params
  block_macs = 65 * 512 * 1536 + 2 * 8 * 65 * 65 * 64 + 3 * 65 * 512 * 512
  assert model.client_macs == 64 * 48 * 512 + block_macs
  assert model.server_macs == 5 * block_macs + 512 * 10
  assert model.server_params == 5 * block_params + 1024 + 512 * 10 + 10


def test_vgg16_refuses_28x28_inputs():
  with pytest.raises(ValueError, match=r"model.name='vgg16' needs 32x32"):
    get_model("vgg16", "L1", 10, (28, 28, 1))


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("name", ["vgg16", "resnet18", "vit_small"])
def test_paper_models_train_and_eval_modes(name):
  """A tiny forward in both modes: finite, right shapes; training mode moves the running
  statistics (BN models) and depends on the dropout key where there is dropout."""
  model = get_model(name, "L1", 10, (32, 32, 3))
  cp, sp = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  mask = jnp.array([True, True])
  fwd = jax.jit(lambda cp, sp, k: model.full_train((cp, sp), x, k, mask))
  logits, (cp2, sp2) = fwd(cp, sp, jax.random.key(2))
  chex.assert_shape(logits, (2, 10))
  chex.assert_tree_all_finite(logits)
  chex.assert_shape(jax.jit(model.full_apply)((cp, sp), x), (2, 10))
  if model.stateful:
    assert set(cp) == {"params", "batch_stats"}
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), cp["batch_stats"],
                                   cp2["batch_stats"])
    assert all(jax.tree_util.tree_leaves(moved))
  other, _ = fwd(cp, sp, jax.random.key(3))
  has_dropout = name in ("vgg16", "vit_small")
  assert bool(jnp.any(other != logits)) == has_dropout
