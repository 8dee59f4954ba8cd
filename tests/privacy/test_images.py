"""Normalised dataset images back to [0, 1] (gas_jax/privacy/images.py)."""
import types

import numpy as np

from gas_jax.privacy import image_range, to_unit


def test_recovers_raw_pixels_per_channel():
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, size=(50, 6, 6, 3)).astype(np.float32) / 255.0
  raw[0, 0, 0] = 0.0        # the darkest and brightest values occur in every channel
  raw[1, 0, 0] = 1.0
  mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.3, 0.25])
  norm = ((raw - mean) / std).astype(np.float32)
  ds = types.SimpleNamespace(x_train=norm)
  lo, hi = image_range(ds)
  np.testing.assert_allclose(lo, -mean / std, rtol=1e-6)
  np.testing.assert_allclose(hi, (1 - mean) / std, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(to_unit(norm, lo, hi)), raw, atol=1e-6)
  # test images outside the train range are clipped into [0, 1]
  out = np.asarray(to_unit(np.stack([lo - 1, hi + 1])[:, None, None, :], lo, hi))
  assert out.min() == 0.0 and out.max() == 1.0 and np.all(out[0] == 0) and np.all(out[1] == 1)


def test_constant_channel_maps_to_zero():
  x = np.zeros((4, 2, 2, 2), np.float32)
  x[..., 1] = np.arange(16, dtype=np.float32).reshape(4, 2, 2)
  lo, hi = image_range(types.SimpleNamespace(x_train=x))
  y = np.asarray(to_unit(x, lo, hi))
  assert np.all(y[..., 0] == 0) and y[..., 1].min() == 0 and y[..., 1].max() == 1
