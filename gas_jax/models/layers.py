"""Conv and Dense layers with PyTorch-default initialisation (spec §3.4), NHWC layout.

PyTorch initialises conv and linear weights with ``kaiming_uniform(a=sqrt(5))``,
i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases with the same bound. Flax's
defaults (lecun_normal kernel, zero bias) differ, so these wrappers replicate
the PyTorch behaviour. ``fan_in`` is ``kh * kw * cin`` for a conv and
``in_features`` for a dense layer.
"""
import math
from typing import Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

# variance_scaling(1/3, fan_in, uniform) has bound sqrt(3 * (1/3) / fan_in).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  """Returns an initialiser drawing U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


PaddingLike = Union[int, str, Sequence[Tuple[int, int]]]


def _conv_padding(padding: PaddingLike, ndim: int):
  if isinstance(padding, str):
    return padding
  if isinstance(padding, int):
    return [(padding, padding)] * ndim
  return [tuple(p) for p in padding]


class Conv(nn.Module):
  """2-D convolution (NHWC input, HWIO kernel) with PyTorch-default init.

  Attributes:
    features: number of output channels.
    kernel: spatial kernel size (kh, kw).
    padding: int (symmetric, as torch ``padding=``), "SAME"/"VALID", or
      explicit ((lo, hi), (lo, hi)) pairs.
    stride: spatial stride.
    use_bias: whether to add a bias.
  """
  features: int
  kernel: Tuple[int, int] = (3, 3)
  padding: PaddingLike = 1
  stride: Tuple[int, int] = (1, 1)
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    kh, kw = self.kernel
    fan_in = kh * kw * cin
    kernel = self.param("kernel", torch_kernel_init, (kh, kw, cin, self.features))
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=tuple(self.stride),
        padding=_conv_padding(self.padding, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", torch_bias_init(fan_in), (self.features,))
      y = y + bias.astype(y.dtype)
    return y


class Dense(nn.Module):
  """Fully connected layer over the last axis with PyTorch-default init."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_kernel_init, (fan_in, self.features))
    y = jnp.dot(x, kernel.astype(x.dtype))
    if self.use_bias:
      bias = self.param("bias", torch_bias_init(fan_in), (self.features,))
      y = y + bias.astype(y.dtype)
    return y


def max_pool(x, window: int, stride: int):
  """NHWC max pooling with VALID padding (torch ``MaxPool2d(window, stride)``)."""
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")


def flatten(x):
  """Flattens all but the leading (batch) axis."""
  return x.reshape((x.shape[0], -1))


def batch_norm(x, train: bool, mask, name: str):
  """BatchNorm with PyTorch's defaults (gamma 1, beta 0, momentum 0.1 = Flax 0.9, eps 1e-5).

  Normalises over all axes but the last. Training mode uses the batch statistics of the rows
  where mask [N] is true (padding excluded) and updates the running statistics in the
  ``batch_stats`` collection: mean <- 0.9 mean + 0.1 batch_mean, var <- 0.9 var + 0.1
  batch_var. Flax uses the biased batch variance there; PyTorch the unbiased one (a factor
  n/(n-1) = 32/31 on the running variance only, which only affects evaluation).
  Evaluation mode normalises with the running statistics.
  """
  if mask is not None:
    mask = jnp.broadcast_to(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      name=name)(x, mask=mask if train else None)
