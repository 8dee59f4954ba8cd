"""Dataset images back in [0, 1], the range the attack's decoder and metrics work in.

The datasets are normalised (`gas_jax.data`: per-channel mean and standard deviation of the train
set), so a pixel value v maps back by the affine map

    to_unit(v) = clip((v - lo) / (hi - lo), 0, 1),   (lo, hi) = image_range(dataset),

with lo, hi the smallest and largest normalised value of the train set, per channel. When the
darkest and brightest raw pixel values of a channel occur in the train set (0 and 255 for the
image datasets) this recovers raw / 255 exactly (up to float32 rounding); values of the test set
outside the train range are clipped.
"""
from typing import Tuple

import jax.numpy as jnp
import numpy as np


def image_range(dataset) -> Tuple[np.ndarray, np.ndarray]:
  """(lo, hi): per-channel min and max of the train images, float32 [C] each."""
  x = np.asarray(dataset.x_train, np.float32)
  axes = tuple(range(x.ndim - 1))
  return x.min(axis=axes), x.max(axis=axes)


def to_unit(x, lo, hi):
  """clip((x - lo) / (hi - lo), 0, 1) per channel (hi == lo maps to 0)."""
  lo = jnp.asarray(lo, jnp.float32)
  span = jnp.asarray(hi, jnp.float32) - lo
  safe = jnp.where(span > 0, span, 1.0)
  return jnp.clip(jnp.where(span > 0, (jnp.asarray(x, jnp.float32) - lo) / safe, 0.0), 0.0, 1.0)
