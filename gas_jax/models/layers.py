"""Conv and Dense layers with PyTorch-default initialisation (spec §3.4), NHWC layout.

PyTorch initialises conv and linear weights with ``kaiming_uniform(a=sqrt(5))``,
i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases with the same bound. Flax's
defaults (lecun_normal kernel, zero bias) differ, so these wrappers replicate
the PyTorch behaviour. ``fan_in`` is ``kh * kw * cin`` for a conv and
``in_features`` for a dense layer.
"""
import contextlib
import contextvars
import functools
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


_SCOPE = contextvars.ContextVar("conv_impl", default="")   # `conv_scope`
# The run's execution plan (`gas_jax.execution.ExecutionPlan.active`): (single, cohort) impls.
_DEFAULTS = contextvars.ContextVar("conv_defaults", default=("", ""))


def conv_impl() -> str:
  """The convolution used by `Conv`: the execution plan's choice (`ExecutionPlan.conv_impl`:
  "im2col" on the CPU, XLA's native one elsewhere; docs/benchmarks.md has the figures)."""
  return _SCOPE.get() or _DEFAULTS.get()[0] or (
      "im2col" if jax.default_backend() == "cpu" else "xla")


@contextlib.contextmanager
def conv_scope(impl: str):
  """Within it (at trace time), `conv2d` with no impl uses `impl` ("" = `conv_impl()`'s
  default)."""
  token = _SCOPE.set(impl)
  try:
    yield
  finally:
    _SCOPE.reset(token)


@contextlib.contextmanager
def conv_defaults(impl: str, cohort_impl: str):
  """The run's defaults for `conv_impl` and `cohort_conv_impl` ("" = the backend's)."""
  token = _DEFAULTS.set((impl, cohort_impl))
  try:
    yield
  finally:
    _DEFAULTS.reset(token)


def cohort_conv_impl() -> str:
  """The convolution of a cohort's vmapped client steps (`ExecutionPlan.cohort_conv_impl`):
  "im2col" except on TPUs. Vmapped over the clients' own kernels, XLA's convolution becomes a
  grouped one, which cuDNN runs with FFT and transposition kernels; as im2col it is one batched
  matmul (figures: docs/benchmarks.md)."""
  return _DEFAULTS.get()[1] or ("xla" if jax.default_backend() == "tpu" else "im2col")


def _window_span(size: int, offset: int, pad_lo: int, stride: int, out: int):
  """Along one spatial axis, the outputs r whose input index r*stride + offset - pad_lo is
  inside [0, size): (first input index, stop, zero rows before, zero rows after), or None if
  there are none."""
  r_lo = max(0, -(-(pad_lo - offset) // stride))
  r_hi = min(out - 1, (size - 1 - offset + pad_lo) // stride)
  if r_hi < r_lo:
    return None
  start = r_lo * stride + offset - pad_lo
  return start, (r_hi - r_lo) * stride + start + 1, r_lo, out - 1 - r_hi


def conv2d(x, kernel, stride=(1, 1), padding=((1, 1), (1, 1)), impl: str = ""):
  """NHWC x HWIO 2-D convolution (cross-correlation, as torch's Conv2d).

  impl "xla": `lax.conv_general_dilated`; "im2col": for each kernel offset, the (strided) slice
  of the input that it reads, zero-padded where it reads the padding, concatenated along
  channels in HWIO order, times the [kh*kw*cin, cout] kernel (the same sums in another order:
  equal up to float rounding, tests/models/test_layers.py). Slicing the unpadded input and padding
  each slice, rather than slicing a padded copy, lets XLA's CPU backend fuse each slice with
  its padding: the AlexNet L2 server update's im2col and col2im copies took half as long
  (about 4 % of its time; docs/benchmarks.md). "" = `conv_impl()`.
  """
  impl = impl or conv_impl()
  if impl == "xla":
    return jax.lax.conv_general_dilated(x, kernel, window_strides=tuple(stride), padding=padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if impl != "im2col":
    raise ValueError(f"conv impl {impl!r}: expected 'xla' or 'im2col'")
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads((h, w), (kh, kw), stride, padding)
  (pt, pb), (pl, pr) = padding
  sh, sw = stride
  oh = (h + pt + pb - kh) // sh + 1
  ow = (w + pl + pr - kw) // sw + 1
  zero = jnp.zeros((), x.dtype)
  patches = []
  for i in range(kh):
    for j in range(kw):
      rows, cols = _window_span(h, i, pt, sh, oh), _window_span(w, j, pl, sw, ow)
      if rows is None or cols is None:
        patches.append(jnp.zeros((n, oh, ow, cin), x.dtype))
        continue
      patch = jax.lax.slice(x, (0, rows[0], cols[0], 0), (n, rows[1], cols[1], cin),
                            (1, sh, sw, 1))
      patches.append(jax.lax.pad(patch, zero, ((0, 0, 0), (rows[2], rows[3], 0),
                                               (cols[2], cols[3], 0), (0, 0, 0))))
  cols = patches[0] if len(patches) == 1 else jnp.concatenate(patches, axis=-1)
  return jnp.dot(cols.reshape(n * oh * ow, kh * kw * cin),
                 kernel.reshape(kh * kw * cin, cout)).reshape(n, oh, ow, cout)


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
    y = conv2d(x, kernel.astype(x.dtype), tuple(self.stride), _conv_padding(self.padding, 2))
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


def _pool_windows(x, window: int, stride: int):
  """The window*window strided slices of x (NHWC, VALID), in row-major window order."""
  n, h, w, c = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  return [jax.lax.slice(x, (0, i, j, 0), (n, i + stride * (oh - 1) + 1,
                                          j + stride * (ow - 1) + 1, c), (1, stride, stride, 1))
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x, window: int, stride: int):
  """NHWC max pooling with VALID padding (torch ``MaxPool2d(window, stride)``).

  The gradient goes to one maximum per window, the first in row-major window order, as
  PyTorch's CPU kernel does (ties are common: zero-padded backgrounds give equal values). It is
  written out as strided slices, compares and pads: JAX's own gradient of `reduce_window` max
  builds index tensors and a variadic reduce-window, which cost ~2 ms per client step of the
  digits job on the CPU (more than the convolutions).
  """
  return functools.reduce(jnp.maximum, _pool_windows(x, window, stride))


def _max_pool_fwd(x, window, stride):
  y = max_pool(x, window, stride)
  return y, (x, y)


def _max_pool_bwd(window, stride, res, g):
  x, y = res
  n, h, w, c = x.shape
  oh, ow = y.shape[1:3]
  found = jnp.zeros(y.shape, bool)
  dx = jnp.zeros(x.shape, g.dtype)
  for k, xs in enumerate(_pool_windows(x, window, stride)):
    i, j = divmod(k, window)
    hit = (xs == y) & ~found
    found = found | hit
    # Transpose of the strided slice: interior padding puts each value back at its position.
    dx = dx + jax.lax.pad(jnp.where(hit, g, 0).astype(g.dtype), jnp.zeros((), g.dtype), (
        (0, 0, 0), (i, h - i - stride * (oh - 1) - 1, stride - 1),
        (j, w - j - stride * (ow - 1) - 1, stride - 1), (0, 0, 0)))
  return (dx,)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def flatten(x):
  """Flattens all but the leading (batch) axis."""
  return x.reshape((x.shape[0], -1))


BN_MOMENTUM = 0.9   # running = 0.9 running + 0.1 batch (PyTorch's momentum 0.1)


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
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5,
                      name=name)(x, mask=mask if train else None)
