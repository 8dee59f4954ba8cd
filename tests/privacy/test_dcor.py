"""Distance correlation (gas_jax/privacy/dcor.py) against a float64 numpy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax.privacy import distance_correlation


def ref_dcor(x, z, eps=1e-7):
  """Straight from the formula (spec/privacy.md §3), float64, distances from differences."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  z = np.asarray(z, np.float64).reshape(len(z), -1)
  n = len(x)

  def centred(v):
    d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1) + eps)
    return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

  A, B = centred(x), centred(z)
  dcov2, vx2, vz2 = (A * B).sum() / n ** 2, (A * A).sum() / n ** 2, (B * B).sum() / n ** 2
  if vx2 * vz2 == 0:
    return 0.0
  return np.sqrt(max(dcov2, 0.0)) / np.sqrt(np.sqrt(vx2) * np.sqrt(vz2))


@pytest.mark.parametrize("n,dx,dz", [(2, 5, 3), (3, 7, 2), (16, 64, 32), (32, 8 * 8, 4 * 4 * 8)])
def test_matches_reference(n, dx, dz):
  rng = np.random.default_rng(n * 100 + dx)
  x = rng.normal(size=(n, dx)).astype(np.float32)
  w = rng.normal(size=(dx, dz)).astype(np.float32)
  for z in (rng.normal(size=(n, dz)), np.tanh(x @ w), np.maximum(x @ w, 0) + 0.3 * rng.normal(
      size=(n, dz))):
    z = z.astype(np.float32)
    got = float(distance_correlation(x, z))
    assert abs(got - ref_dcor(x, z)) < 2e-5, (got, ref_dcor(x, z))
    assert 0.0 <= got <= 1.0 + 1e-6


def test_images_and_conv_activations_are_flattened():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(8, 8, 8, 1)).astype(np.float32)
  z = rng.normal(size=(8, 4, 4, 64)).astype(np.float32)
  assert abs(float(distance_correlation(x, z)) - ref_dcor(x, z)) < 2e-5


def test_n_equals_two_is_one():
  rng = np.random.default_rng(2)
  x, z = rng.normal(size=(2, 10)), rng.normal(size=(2, 4))
  assert abs(float(distance_correlation(x, z)) - 1.0) < 1e-5
  assert abs(ref_dcor(x, z) - 1.0) < 1e-9


def test_scale_invariance_and_affine_maps():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(24, 30)).astype(np.float32)
  z = np.sin(x[:, :6] * 2.0).astype(np.float32) + 0.1 * rng.normal(size=(24, 6)).astype(np.float32)
  base = float(distance_correlation(x, z))
  assert 0.1 < base < 0.99
  for s in (0.5, 3.0, 50.0):      # distances >> sqrt(eps) (the module docstring)
    assert abs(float(distance_correlation(s * x, z)) - base) < 1e-4
    assert abs(float(distance_correlation(x, s * z)) - base) < 1e-4
  for a, b in ((2.0, 1.0), (-0.5, 3.0), (7.0, -2.0)):
    assert abs(float(distance_correlation(x, a * x + b)) - 1.0) < 1e-4
  assert abs(float(distance_correlation(x, x)) - 1.0) < 1e-5


def test_constant_inputs_give_zero_with_finite_gradients():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
  const = jnp.ones((6, 5), jnp.float32)
  assert float(distance_correlation(x, const)) == 0.0
  assert float(distance_correlation(const, x)) == 0.0
  assert float(distance_correlation(const, const)) == 0.0
  assert ref_dcor(np.asarray(x), np.asarray(const)) == 0.0
  grad = jax.jit(jax.grad(distance_correlation, argnums=(0, 1)))
  for gx, gz in (grad(x, const), grad(const, const)):
    assert bool(jnp.all(jnp.isfinite(gx))) and bool(jnp.all(jnp.isfinite(gz)))
  # duplicated rows: distances of 0 inside the sqrt, gradients still finite
  dup = jnp.concatenate([x[:3], x[:3]])
  gx, gz = grad(dup, jnp.tanh(dup * 2.0))
  assert bool(jnp.all(jnp.isfinite(gx))) and bool(jnp.all(jnp.isfinite(gz)))


def test_independent_is_small_and_jit_grad():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(256, 4)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(256, 4)), jnp.float32)
  assert float(distance_correlation(x, z)) < 0.25
  assert float(distance_correlation(x, x ** 2)) > 0.3
  grad = jax.jit(jax.grad(distance_correlation, argnums=1))
  g = grad(x, z)
  assert g.shape == z.shape and bool(jnp.all(jnp.isfinite(g)))
  # a gradient step on z lowers the correlation with x of a dependent z
  zd = x + 0.1 * z
  gd = grad(x, zd)
  assert float(distance_correlation(x, zd - 0.5 * gd / jnp.abs(gd).max())) < float(
      distance_correlation(x, zd))
