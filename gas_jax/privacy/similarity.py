"""Image similarity of reconstructions: MSE, PSNR and SSIM (spec/privacy.md §1, paper eq. 44).

All functions take NHWC batches with values in [0, data_range] (the attack works in [0, 1], see
`gas_jax.privacy.images.to_unit`), are pure jnp, differentiable and jit-able.

  MSE  = mean((x - y)^2)
  PSNR = 10 log10(L^2 / MSE)                     (L = data_range; per image, then averaged)
  SSIM (Wang et al. 2004), per channel, with Gaussian-weighted local statistics:
      mu_x = G * x,  sigma_x^2 = G * x^2 - mu_x^2,  sigma_xy = G * (x y) - mu_x mu_y
      S = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
      C1 = (0.01 L)^2, C2 = (0.03 L)^2
  and the mean of S over the 'valid' positions, the channels and (for `ssim`) the batch. The public
functions are jitted (one compilation per shape; nested in another jit they simply inline).

Conventions, as scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=L)`: G is the Gaussian of sigma 1.5 truncated at radius
r = int(3.5 sigma + 0.5) = 5 (11 taps, renormalised to sum 1), applied separably; the population
(not sample) covariance; S is averaged only where the whole window lies inside the image
(scikit-image filters with 'reflect' and then crops (win - 1) / 2 pixels on each side: the same
numbers as 'valid' filtering).

Small images (the digits are 8x8): scikit-image refuses images smaller than the window. Here the
window shrinks to the largest odd size <= min(H, W) (8x8 -> 7x7, radius 3), keeping sigma = 1.5:
the Gaussian is truncated to that window and renormalised, and S is averaged over the valid
positions (2x2 for 8x8). Images of 11 pixels or more use the standard 11x11 window.
"""
import jax
import jax.numpy as jnp
import numpy as np

SIGMA = 1.5
TRUNCATE = 3.5      # scikit-image: an 11-tap filter for sigma 1.5
K1, K2 = 0.01, 0.03


def window_radius(height: int, width: int, sigma: float = SIGMA) -> int:
  """Radius r of the (2r+1)-tap window: int(3.5 sigma + 0.5), shrunk to fit min(H, W)."""
  r = int(TRUNCATE * sigma + 0.5)
  return max(0, min(r, (min(height, width) - 1) // 2))


def gaussian_taps(radius: int, sigma: float = SIGMA) -> np.ndarray:
  """The 1-D Gaussian exp(-t^2 / 2 sigma^2), t = -r..r, normalised to sum 1 (float32)."""
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  g = np.exp(-0.5 * (t / sigma) ** 2)
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x, taps):
  """Separable 'valid' correlation of every channel of x [N, H, W, C] with `taps` along H, then
  W (two depthwise convolutions at float32 precision: they compile far faster than shifted
  sums, gradients included)."""
  c, k = x.shape[-1], len(taps)
  g = jnp.asarray(taps, jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  for kernel in (jnp.broadcast_to(g[:, None, None, None], (k, 1, 1, c)),
                 jnp.broadcast_to(g[None, :, None, None], (1, k, 1, c))):
    x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=dn,
                                     feature_group_count=c,
                                     precision=jax.lax.Precision.HIGHEST)
  return x


def ssim_map(x, y, data_range: float = 1.0, sigma: float = SIGMA):
  """S at every valid position: [N, H - 2r, W - 2r, C] (see the module docstring)."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"ssim needs two NHWC batches of one shape, got {x.shape} and {y.shape}")
  taps = gaussian_taps(window_radius(x.shape[1], x.shape[2], sigma), sigma)
  c = x.shape[-1]
  maps = _filter_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), taps)
  mu_x, mu_y, xx, yy, xy = (maps[..., i * c:(i + 1) * c] for i in range(5))
  var_x = xx - mu_x * mu_x
  var_y = yy - mu_y * mu_y
  cov = xy - mu_x * mu_y
  c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
  num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
  den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
  return num / den


@jax.jit
def ssim_per_image(x, y, data_range: float = 1.0):
  """SSIM of each image pair: the mean of S over positions and channels, [N]."""
  return jnp.mean(ssim_map(x, y, data_range), axis=(1, 2, 3))


@jax.jit
def ssim(x, y, data_range: float = 1.0):
  """Mean SSIM over the images, positions and channels of two NHWC batches (a scalar)."""
  return jnp.mean(ssim_per_image(x, y, data_range))


@jax.jit
def mse_per_image(x, y):
  """mean((x - y)^2) of each image pair, [N]."""
  d = jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)
  return jnp.mean(d * d, axis=tuple(range(1, d.ndim)))


@jax.jit
def mse(x, y):
  """mean((x - y)^2) over the whole batch (a scalar)."""
  d = jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)
  return jnp.mean(d * d)


@jax.jit
def psnr_per_image(x, y, data_range: float = 1.0):
  """10 log10(L^2 / MSE) of each image pair, [N] (inf for identical images)."""
  return 10.0 * jnp.log10(data_range ** 2 / mse_per_image(x, y))


@jax.jit
def psnr(x, y, data_range: float = 1.0):
  """10 log10(L^2 / MSE) with the MSE of the whole batch (a scalar)."""
  return 10.0 * jnp.log10(data_range ** 2 / mse(x, y))


def window_size(height: int, width: int) -> int:
  """The SSIM window's side for an image of this size (11, or less for small images)."""
  return 2 * window_radius(height, width) + 1

