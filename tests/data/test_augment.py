"""Tests of gas_jax.data.augment: random crop with constant padding and horizontal flip."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax.data import augment as aug

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# Jitted once per static configuration (eager dispatch of the vmapped ops is slow on CPU).
_augment = jax.jit(aug.augment, static_argnames=("pad", "flip"))
_params = jax.jit(aug.augment_params, static_argnums=(1, 2))


def _batch(b=16, h=8, w=6, c=3, seed=0):
  return np.random.default_rng(seed).standard_normal((b, h, w, c)).astype(np.float32)


def _numpy_augment(x, offsets, flips, pad, pad_value, flip=True):
  """Reference: pad with pad_value, crop at the offsets, mirror the flagged samples."""
  b, h, w, c = x.shape
  padded = np.empty((b, h + 2 * pad, w + 2 * pad, c), x.dtype)
  padded[...] = np.asarray(pad_value, x.dtype).reshape(1, 1, 1, -1)
  padded[:, pad:pad + h, pad:pad + w] = x
  out = np.empty_like(x)
  for i in range(b):
    r, s = offsets[i]
    crop = padded[i, r:r + h, s:s + w]
    out[i] = np.flip(crop, axis=1) if (flip and flips[i]) else crop
  return out


def test_output_shape_and_dtype():
  x = _batch()
  y = _augment(jnp.asarray(x), jax.random.key(0))
  assert y.shape == x.shape
  assert y.dtype == jnp.float32


def test_params_shapes_and_ranges():
  offsets, flips = _params(jax.random.key(3), 2000, 4)
  offsets, flips = np.asarray(offsets), np.asarray(flips)
  assert offsets.shape == (2000, 2) and flips.shape == (2000,)
  assert offsets.min() == 0 and offsets.max() == 8
  # Every offset value occurs, and about half the samples are flipped.
  assert set(np.unique(offsets)) == set(range(9))
  assert 0.4 < flips.mean() < 0.6


def test_params_per_sample_independent_of_batch_size():
  key = jax.random.key(7)
  o_small, f_small = _params(key, 5, 4)
  o_big, f_big = _params(key, 50, 4)
  np.testing.assert_array_equal(o_small, np.asarray(o_big)[:5])
  np.testing.assert_array_equal(f_small, np.asarray(f_big)[:5])


@pytest.mark.parametrize("pad,flip", [(4, True), (2, False), (0, True)])
def test_matches_numpy_reference(pad, flip):
  x = _batch(b=32)
  pad_value = aug.zero_pixel_value(CIFAR_MEAN, CIFAR_STD)
  key = jax.random.key(11)
  got = _augment(jnp.asarray(x), key, pad=pad, flip=flip, pad_value=jnp.asarray(pad_value))
  offsets, flips = jax.device_get(_params(key, x.shape[0], pad))
  want = _numpy_augment(x, offsets, flips, pad, pad_value, flip=flip)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_flipped_samples_are_mirrored_crops():
  x = _batch(b=64)
  key = jax.random.key(5)
  pad = 3
  offsets, flips = jax.device_get(_params(key, 64, pad))
  assert flips.any() and (~flips).any()
  unflipped = np.asarray(_augment(jnp.asarray(x), key, pad=pad, flip=False))
  flipped = np.asarray(_augment(jnp.asarray(x), key, pad=pad, flip=True))
  for i in range(64):
    if flips[i]:
      np.testing.assert_array_equal(flipped[i], np.flip(unflipped[i], axis=1))
    else:
      np.testing.assert_array_equal(flipped[i], unflipped[i])


def test_no_pad_no_flip_is_identity():
  x = _batch()
  y = _augment(jnp.asarray(x), jax.random.key(1), pad=0, flip=False)
  np.testing.assert_array_equal(np.asarray(y), x)


def test_padding_takes_pad_value():
  # Constant images far from the pad values: every output pixel is either the image value or
  # its channel's pad value, and some crops reach into the padding.
  b, h, w, c, pad = 64, 8, 8, 3, 4
  x = np.full((b, h, w, c), 100.0, np.float32)
  pad_value = aug.zero_pixel_value(CIFAR_MEAN, CIFAR_STD)
  np.testing.assert_allclose(pad_value, -np.array(CIFAR_MEAN) / np.array(CIFAR_STD), rtol=1e-6)
  key = jax.random.key(2)
  y = np.asarray(_augment(jnp.asarray(x), key, pad=pad, pad_value=jnp.asarray(pad_value)))
  is_pad = y != 100.0
  assert is_pad.any()
  for ch in range(c):
    np.testing.assert_array_equal(y[..., ch][is_pad[..., ch]], pad_value[ch])
  # The padded area of sample i is exactly where its crop window leaves the image.
  offsets, flips = jax.device_get(_params(key, b, pad))
  for i in range(b):
    r, s = offsets[i]
    rows = (np.arange(h) + r < pad) | (np.arange(h) + r >= pad + h)
    cols = (np.arange(w) + s < pad) | (np.arange(w) + s >= pad + w)
    if flips[i]:
      cols = cols[::-1]
    np.testing.assert_array_equal(is_pad[i, ..., 0], rows[:, None] | cols[None, :])


def test_default_pad_value_is_zero():
  x = np.full((32, 4, 4, 2), 5.0, np.float32)
  y = np.asarray(_augment(jnp.asarray(x), jax.random.key(4), pad=2))
  assert set(np.unique(y)) == {0.0, 5.0}


def test_different_keys_give_different_crops():
  x = jnp.asarray(_batch(b=16))
  a = np.asarray(_augment(x, jax.random.key(0)))
  b = np.asarray(_augment(x, jax.random.key(1)))
  assert not np.array_equal(a, b)
  o_a, _ = _params(jax.random.key(0), 16, 4)
  o_b, _ = _params(jax.random.key(1), 16, 4)
  assert not np.array_equal(np.asarray(o_a), np.asarray(o_b))
  # Samples of one batch get different crops too.
  assert len({tuple(o) for o in np.asarray(o_a)}) > 1


def test_compiles_once_for_repeated_calls():
  fn = jax.jit(chex.assert_max_traces(aug.augment, n=1), static_argnames=("pad", "flip"))
  pad_value = jnp.asarray(aug.zero_pixel_value(CIFAR_MEAN, CIFAR_STD))
  outs = []
  for i in range(5):
    x = jnp.asarray(_batch(seed=i))
    outs.append(fn(x, jax.random.key(i), pad_value=pad_value))
  jax.block_until_ready(outs)
  with pytest.raises(AssertionError):
    # A new static argument retraces; chex counts it (the guard is live).
    fn(x, jax.random.key(0), pad=2, pad_value=pad_value)


def test_rejects_bad_input():
  with pytest.raises(ValueError, match="B, H, W, C"):
    aug.augment(jnp.zeros((4, 4, 3)), jax.random.key(0))
  with pytest.raises(ValueError, match="pad"):
    aug.augment(jnp.zeros((1, 4, 4, 3)), jax.random.key(0), pad=-1)
