"""On-device train-time augmentation of CIFAR-like batches (spec §4.1).

torchvision's CIFAR pipeline is RandomCrop(32, padding=4) on the uint8 image (zero padding in
pixel space) -> ToTensor -> Normalize -> RandomHorizontalFlip(0.5). The batches here are already
normalised, so a pixel-space zero becomes `-mean / std` per channel (`zero_pixel_value`): padding
the normalised image with that value and then cropping gives exactly the same numbers as cropping
before the normalisation. A flip commutes with the (per-channel) normalisation.

Everything is drawn from one `key`: sample i uses `jax.random.fold_in(key, i)`, so its crop and
flip depend only on (key, i), never on the batch size. `augment_params` exposes those draws so
that tests (and anyone replaying a run) can recompute the same augmentation.
"""
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np


def zero_pixel_value(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """The normalised value of a black (all-zero) pixel: -mean / std, float32 [C]."""
  mean = np.asarray(mean, np.float64).reshape(-1)
  std = np.asarray(std, np.float64).reshape(-1)
  return (-mean / std).astype(np.float32)


def augment_params(key: jax.Array, batch: int, pad: int) -> Tuple[jax.Array, jax.Array]:
  """Draws each sample's crop offset and flip bit.

  Args:
    key: the PRNG key of this batch (e.g. folded from the event).
    batch: B, the number of samples.
    pad: the padding in pixels on every side; offsets lie in [0, 2 * pad].

  Returns:
    offsets: int32 [B, 2], the (row, column) of the crop's top-left corner in the padded image.
    flips: bool [B], whether the crop is mirrored left-right.
  """

  def one(i):
    k_crop, k_flip = jax.random.split(jax.random.fold_in(key, i))
    offset = jax.random.randint(k_crop, (2,), 0, 2 * pad + 1, dtype=jnp.int32)
    return offset, jax.random.bernoulli(k_flip, 0.5)

  return jax.vmap(one)(jnp.arange(batch, dtype=jnp.uint32))


def augment(x: jax.Array, key: jax.Array, pad: int = 4, flip: bool = True,
            pad_value: Optional[jax.Array] = None) -> jax.Array:
  """Random crop (after constant padding) plus a random horizontal flip, per sample.

  Pure and jittable; `pad` and `flip` must be static under `jax.jit`.

  Args:
    x: float32 [B, H, W, C], a normalised batch.
    key: the PRNG key of this batch.
    pad: pixels of padding on each side before the HxW crop (0: no crop).
    flip: whether to mirror each sample left-right with probability 0.5.
    pad_value: [C] (or scalar) value of the padding, in the normalised space of `x`; use
      `zero_pixel_value(mean, std)` for torchvision's zero padding. Default 0.

  Returns:
    The augmented batch, same shape and dtype as `x`.
  """
  if x.ndim != 4:
    raise ValueError(f"augment expects a [B, H, W, C] batch, got shape {x.shape}")
  if pad < 0:
    raise ValueError(f"pad must be >= 0, got {pad}")
  b, h, w, c = x.shape
  if pad_value is None:
    pad_value = jnp.zeros((c,), x.dtype)
  pad_value = jnp.broadcast_to(jnp.asarray(pad_value, x.dtype), (c,))
  offsets, flips = augment_params(key, b, pad)

  padded = jnp.broadcast_to(pad_value, (b, h + 2 * pad, w + 2 * pad, c))
  padded = padded.at[:, pad:pad + h, pad:pad + w, :].set(x)

  def one(img, offset, mirror):
    crop = jax.lax.dynamic_slice(img, (offset[0], offset[1], 0), (h, w, c))
    if flip:
      crop = jnp.where(mirror, crop[:, ::-1, :], crop)
    return crop

  return jax.vmap(one)(padded, offsets, flips)
