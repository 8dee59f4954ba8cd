"""The inversion decoder res_normN{N}C{C} (gas_jax/privacy/decoder.py): shapes, range, state."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax.models import get_model
from gas_jax.privacy import Decoder, decoder_name, make_decoder
from gas_jax.privacy.decoder import upsampling_steps

CASES = [("cnn_small", "default", (8, 8, 1)), ("alexnet", "L1", (28, 28, 1)),
         ("alexnet", "L2", (28, 28, 1)), ("alexnet", "L3", (28, 28, 1))]


def _activation_shape(name, split, image_shape):
  return get_model(name, split, 10, image_shape).activation_shape


@pytest.mark.parametrize("name,split,image_shape", CASES)
def test_output_shape_for_the_split_models(name, split, image_shape):
  """The default attacker res_normN4C64 on each split's activations: shapes only."""
  act = _activation_shape(name, split, image_shape)
  module, init_fn, apply_fn = make_decoder(act, image_shape)
  params = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((5,) + act, jnp.float32))
  assert out.shape == (5,) + image_shape and module.blocks == 4 and module.channels == 64


def _check_range(act, image_shape):
  _, init_fn, apply_fn = make_decoder(act, image_shape, blocks=0, channels=8)
  params = init_fn(jax.random.PRNGKey(1))
  z = jnp.asarray(3.0 * np.random.default_rng(2).normal(size=(3,) + tuple(act)), jnp.float32)
  y = np.asarray(jax.jit(apply_fn)(params, z))
  assert y.shape == (3,) + image_shape
  assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0 and y.std() > 0


def test_output_range_digits():
  _check_range(_activation_shape(*CASES[0]), CASES[0][2])


@pytest.mark.slow
@pytest.mark.parametrize("name,split,image_shape", CASES[1:])
def test_output_range_alexnet(name, split, image_shape):
  _check_range(_activation_shape(name, split, image_shape), image_shape)


def test_flat_activations_and_sizes_that_do_not_divide():
  for act, image in (((100,), (28, 28, 1)), ((13, 13, 8), (28, 28, 1)), ((6, 16), (32, 32, 3))):
    _, init_fn, apply_fn = make_decoder(act, image, blocks=0, channels=8)
    out = jax.eval_shape(apply_fn, jax.eval_shape(init_fn, jax.random.PRNGKey(0)),
                         jax.ShapeDtypeStruct((2,) + act, jnp.float32))
    assert out.shape == (2,) + image
  assert [upsampling_steps(a, 28) for a in (28, 14, 13, 7, 4)] == [0, 1, 1, 2, 3]
  assert upsampling_steps(4, 8) == 1 and upsampling_steps(8, 32) == 2


def test_state_is_params_only_and_names():
  module, init_fn, _ = make_decoder((4, 4, 64), (8, 8, 1), blocks=2, channels=16)
  variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 64)))
  assert set(variables) == {"params"}          # GroupNorm: no running statistics
  params = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  assert {"input_block", "block0", "block1", "up0", "to_image"} <= set(params)
  assert "block2" not in params
  assert decoder_name(4, 64) == "res_normN4C64"
  assert isinstance(module, Decoder)


def test_upconv_is_a_transposed_convolution():
  """UpConv = XLA's input-dilated convolution (the definition of a stride-2 transposed conv)."""
  from gas_jax.privacy.decoder import UpConv   # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 5, 6)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
  got = jax.jit(UpConv(6).apply)({"params": {"Conv_0": {"kernel": kernel, "bias": bias}}}, x)
  want = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 2), (1, 2)), lhs_dilation=(2, 2),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
  assert got.shape == (2, 6, 8, 6)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_initialisation_is_pytorchs_default():
  """torch_init: the tree of module.init, kernels and biases U(+-1/sqrt(fan_in)), GroupNorm 1/0."""
  module, init_fn, _ = make_decoder((4, 4, 64), (8, 8, 1), blocks=1, channels=16)
  params = init_fn(jax.random.PRNGKey(3))
  want = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 64)))["params"]
  assert jax.tree.structure(params) == jax.tree.structure(want)
  assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(lambda a: a.shape, want)
  conv = params["block0"]["Conv_0"]
  bound = 1 / np.sqrt(3 * 3 * 16)
  for leaf in (conv["kernel"], conv["bias"]):
    assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound
  assert 0.5 * bound < np.asarray(conv["kernel"]).std() < 0.65 * bound   # U(-b, b): b / sqrt(3)
  skip = params["input_block"]["Conv_2"]["kernel"]        # 1x1 from 64 channels
  assert np.abs(skip).max() <= 1 / np.sqrt(64) + 1e-7
  gn = params["block0"]["GroupNorm_0"]
  assert np.all(np.asarray(gn["scale"]) == 1) and np.all(np.asarray(gn["bias"]) == 0)
  other = init_fn(jax.random.PRNGKey(4))
  assert not np.allclose(np.asarray(other["to_image"]["kernel"]),
                         np.asarray(params["to_image"]["kernel"]))
