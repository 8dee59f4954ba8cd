"""On-device train-time augmentation of CIFAR-like batches (spec §4.1).

torchvision's CIFAR pipeline is RandomCrop(32, padding=4) on the uint8 image (zero padding in
pixel space) -> ToTensor -> Normalize -> RandomHorizontalFlip(0.5). The batches here are already
normalised, so a pixel-space zero becomes `-mean / std` per channel (`zero_pixel_value`): padding
the normalised image with that value and then cropping gives exactly the same numbers as cropping
before the normalisation. A flip commutes with the (per-channel) normalisation.

Everything is drawn from one `key`: sample i uses `jax.random.fold_in(key, i)`, so its crop and
flip depend only on (key, i), never on the batch size. `augment_params` exposes those draws so
that tests (and anyone replaying a run) can recompute the same augmentation.

Every method gets its training minibatches from `train_batch` (GAS and GAS without generation
through `engine.client_event`/`cohort_event`, FedAvg/FedBuff/CA2FL through
`runners.fl_runner`, MiniBatch-SFL/S2FL through `runners.sfl_runner`), keyed the same way: the
n-th client step of a run (n counted from 0 over all its clients) augments with
`step_key(run_key(seed), n)`, whatever the method.
"""
import dataclasses
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


AUGMENT_SALT = 0xA6


def run_key(seed: int) -> jax.Array:
  """The root of a run's augmentation keys (the GAS runner's client-step key)."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def step_key(key: jax.Array, step_id) -> jax.Array:
  """The augmentation key of client step `step_id` under the root `key`."""
  return jax.random.fold_in(jax.random.fold_in(key, step_id), AUGMENT_SALT)


@dataclasses.dataclass(frozen=True)
class Augmenter:
  """spec §4.1's train-time augmentation with its static settings (hashable: it keys the
  runners' compilation caches). pad_value: per-channel normalised value of a black pixel."""
  pad: int = 4
  flip: bool = True
  pad_value: Optional[Tuple[float, ...]] = None

  def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
    pv = None if self.pad_value is None else jnp.asarray(self.pad_value, jnp.float32)
    return augment(x, key, pad=self.pad, flip=self.flip, pad_value=pv)


def from_config(config) -> Optional[Augmenter]:
  """RandomCrop(pad 4, zero padding in pixel space) + horizontal flip when config.data.augment
  (spec §4.1), else None."""
  if not config.data.augment:
    return None
  from gas_jax.data import real   # noqa: PLC0415  (real imports the sources registry)
  spec = real.SPECS.get(config.data.name)
  pad_value = (None if spec is None else
               tuple(float(v) for v in zero_pixel_value(spec.mean, spec.std)))
  return Augmenter(pad=4, flip=True, pad_value=pad_value)


def train_batch(data, idx, key, step_id, augmenter: Optional[Augmenter]):
  """The one way every method reads a training minibatch: (x, y) = the rows `idx` of the
  device-resident train set, x augmented with `step_key(key, step_id)` when `augmenter`."""
  x = data["x"][idx]
  if augmenter is not None:
    x = augmenter(x, step_key(key, step_id))
  return x, data["y"][idx]
