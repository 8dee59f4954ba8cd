"""SSIM, MSE and PSNR (gas_jax/privacy/similarity.py) against float64 references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from gas_jax.privacy import similarity


def ref_ssim_per_image(x, y, data_range=1.0, sigma=1.5):
  """Straight from the formula: scipy's Gaussian filter (radius r, 'reflect'), cropped by r."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n, h, w, c = x.shape
  r = min(int(3.5 * sigma + 0.5), (min(h, w) - 1) // 2)
  filt = lambda v: ndimage.gaussian_filter(v, sigma=sigma, truncate=r / sigma, mode="reflect")
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  out = np.zeros(n)
  for i in range(n):
    per_channel = []
    for k in range(c):
      a, b = x[i, :, :, k], y[i, :, :, k]
      ma, mb = filt(a), filt(b)
      va, vb, cov = filt(a * a) - ma ** 2, filt(b * b) - mb ** 2, filt(a * b) - ma * mb
      s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
      per_channel.append(s[r:h - r, r:w - r].mean())
    out[i] = np.mean(per_channel)
  return out


def structured(h, w, c):
  """Gradients, a checkerboard and stripes: [4, h, w, c] in [0, 1]."""
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  imgs = [i / (h - 1), j / (w - 1), ((i + j) % 2).astype(float),
          0.5 + 0.5 * np.sin(i / 2.0) * np.cos(j / 3.0)]
  return np.repeat(np.stack(imgs)[..., None], c, axis=-1).astype(np.float32)


@pytest.mark.parametrize("shape", [(3, 32, 32, 3), (4, 28, 28, 1), (4, 8, 8, 1), (2, 11, 14, 2),
                                   (2, 5, 9, 1)])
def test_ssim_matches_float64_reference_on_random_images(shape):
  rng = np.random.default_rng(sum(shape))
  x = rng.uniform(size=shape).astype(np.float32)
  y = np.clip(x + 0.2 * rng.normal(size=shape), 0, 1).astype(np.float32)
  for a, b in ((x, y), (x, rng.uniform(size=shape).astype(np.float32))):
    got = np.asarray(similarity.ssim_per_image(a, b))
    np.testing.assert_allclose(got, ref_ssim_per_image(a, b), atol=1e-5)
    assert abs(float(similarity.ssim(a, b)) - ref_ssim_per_image(a, b).mean()) < 1e-5


@pytest.mark.parametrize("hw", [(32, 32), (8, 8), (28, 28)])
def test_ssim_on_structured_images(hw):
  x = structured(*hw, 1)
  y = structured(*hw, 1)[::-1].copy()     # the images paired with other images
  np.testing.assert_allclose(np.asarray(similarity.ssim_per_image(x, y)),
                             ref_ssim_per_image(x, y), atol=1e-5)
  np.testing.assert_allclose(np.asarray(similarity.ssim_per_image(x, 0.7 * x + 0.1)),
                             ref_ssim_per_image(x, 0.7 * x + 0.1), atol=1e-5)
  np.testing.assert_allclose(np.asarray(similarity.ssim_per_image(x, x)), 1.0, atol=1e-6)


def test_small_images_shrink_the_window():
  assert similarity.window_size(32, 32) == 11
  assert similarity.window_size(11, 40) == 11
  assert similarity.window_size(10, 40) == 9
  assert similarity.window_size(8, 8) == 7
  assert similarity.ssim_map(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1))).shape == (1, 2, 2, 1)
  assert similarity.ssim_map(np.zeros((1, 32, 28, 3)),
                             np.zeros((1, 32, 28, 3))).shape == (1, 22, 18, 3)
  taps = similarity.gaussian_taps(3)
  assert taps.shape == (7,) and abs(taps.sum() - 1) < 1e-6 and taps[3] == taps.max()


def test_ssim_is_differentiable_and_jits():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(2, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(rng.uniform(size=(2, 8, 8, 1)), jnp.float32)
  g = jax.jit(jax.grad(lambda b: similarity.ssim(x, b)))(y)
  assert g.shape == y.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
  # gradient ascent on SSIM moves y towards x
  assert float(similarity.ssim(x, y + 0.5 * g / jnp.abs(g).max())) > float(similarity.ssim(x, y))


def test_mse_and_psnr():
  x = np.zeros((2, 4, 4, 1), np.float32)
  y = np.full((2, 4, 4, 1), 0.1, np.float32)
  y[1] = 0.01
  np.testing.assert_allclose(np.asarray(similarity.mse_per_image(x, y)), [0.01, 1e-4], rtol=1e-5)
  np.testing.assert_allclose(float(similarity.mse(x, y)), (0.01 + 1e-4) / 2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(similarity.psnr_per_image(x, y)), [20.0, 40.0], rtol=1e-5)
  np.testing.assert_allclose(float(similarity.psnr(x, y)), 10 * np.log10(2 / 0.0101), rtol=1e-5)
  np.testing.assert_allclose(float(similarity.psnr(x, y, data_range=255.0)),
                             10 * np.log10(255.0 ** 2 * 2 / 0.0101), rtol=1e-5)


def test_matches_scikit_image():
  metrics = pytest.importorskip("skimage.metrics")     # test-only dependency
  rng = np.random.default_rng(3)
  for shape in ((3, 32, 32, 3), (2, 28, 28, 1), (1, 11, 13, 1)):
    x = rng.uniform(size=shape).astype(np.float32)
    y = np.clip(x + 0.3 * rng.normal(size=shape), 0, 1).astype(np.float32)
    want = [metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0,
                                          channel_axis=-1) for a, b in zip(x, y)]
    np.testing.assert_allclose(np.asarray(similarity.ssim_per_image(x, y)), want, atol=1e-5)
  x = structured(32, 32, 1)
  want = [metrics.structural_similarity(a[..., 0], b[..., 0], gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=1.0)
          for a, b in zip(x, x[::-1])]
  np.testing.assert_allclose(np.asarray(similarity.ssim_per_image(x, x[::-1].copy())), want,
                             atol=1e-5)
