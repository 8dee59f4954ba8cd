"""The CPU-fast layer formulations equal the plain ones (gas_jax.models.layers).

`conv2d(impl="im2col")` (shifted slices + one matmul) against XLA's convolution, values and both
gradients; `max_pool` (strided slices, custom gradient) against Flax's reduce-window pooling and,
for ties, against PyTorch's rule (the first maximum of each window in row-major order gets the
whole gradient) written out in numpy.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax.models import layers

CONVS = [   # (input NHWC, kernel HWIO, stride, padding)
    ((2, 8, 8, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1))),      # AlexNet/VGG/cnn_small 3x3 p1
    ((2, 9, 7, 4), (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1))),      # ResNet downsampling 3x3 s2
    ((2, 8, 8, 4), (1, 1, 4, 6), (2, 2), ((0, 0), (0, 0))),      # ResNet shortcut 1x1 s2
    ((1, 6, 6, 2), (1, 1, 2, 3), (1, 1), ((0, 0), (0, 0))),
    ((2, 7, 7, 2), (3, 2, 2, 3), (1, 2), "SAME"),
    ((1, 10, 10, 2), (5, 5, 2, 4), (3, 3), "VALID"),
    ((2, 7, 6, 3), (3, 3, 3, 2), (2, 1), ((2, 0), (0, 3))),      # uneven padding
    ((1, 2, 2, 2), (3, 3, 2, 3), (3, 3), ((1, 1), (1, 1))),      # offsets that read only padding
    ((1, 3, 3, 2), (2, 2, 2, 2), (1, 1), ((3, 3), (3, 3))),      # padding wider than the kernel
]


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("xs,ks,stride,padding", CONVS)
def test_im2col_conv_equals_xla_conv(xs, ks, stride, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=xs), jnp.float32)
  k = jnp.asarray(rng.normal(size=ks), jnp.float32)

  def f(impl):
    def loss(x, k):
      y = layers.conv2d(x, k, stride, padding, impl=impl)
      return jnp.sum(jnp.sin(y)), y
    (_, y), (gx, gk) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, k)
    return y, gx, gk

  for a, b in zip(f("im2col"), f("xla")):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  # And against a float64 loop over output positions for the values.
  y = np.asarray(f("im2col")[0], np.float64)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(xs[1:3], ks[:2], stride, padding)
  xp = np.pad(np.asarray(x, np.float64), ((0, 0),) + tuple(map(tuple, padding)) + ((0, 0),))
  for i in range(y.shape[1]):
    for j in range(y.shape[2]):
      patch = xp[:, i * stride[0]:i * stride[0] + ks[0], j * stride[1]:j * stride[1] + ks[1]]
      np.testing.assert_allclose(y[:, i, j], np.einsum("nhwc,hwco->no", patch, k), rtol=1e-4,
                                 atol=1e-4)


def test_conv_impl_rejects_unknown_name():
  with pytest.raises(ValueError, match="conv impl 'fft'"):
    layers.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), impl="fft")


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("shape,window,stride", [((2, 8, 8, 3), 2, 2), ((2, 8, 8, 3), 3, 2),
                                                 ((3, 7, 7, 2), 3, 2), ((2, 9, 9, 2), 2, 2)])
def test_max_pool_equals_flax(shape, window, stride):
  x = jax.random.normal(jax.random.key(0), shape)
  flax_pool = lambda x: nn.max_pool(x, (window, window), (stride, stride), "VALID")  # noqa: E731
  y, vjp = jax.vjp(lambda x: layers.max_pool(x, window, stride), x)
  y_ref, vjp_ref = jax.vjp(flax_pool, x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
  g = jax.random.normal(jax.random.key(1), y.shape)
  np.testing.assert_allclose(np.asarray(vjp(g)[0]), np.asarray(vjp_ref(g)[0]), atol=1e-6)


def _torch_rule_grad(x, g, window, stride):
  """float64 numpy: each window's gradient goes to its first maximum (row-major)."""
  dx = np.zeros_like(x)
  n, oh, ow, c = g.shape
  for b in range(n):
    for i in range(oh):
      for j in range(ow):
        for ch in range(c):
          win = x[b, i * stride:i * stride + window, j * stride:j * stride + window, ch]
          a, bb = np.unravel_index(np.argmax(win), win.shape)    # argmax: first maximum
          dx[b, i * stride + a, j * stride + bb, ch] += g[b, i, j, ch]
  return dx


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2)])
def test_max_pool_ties_go_to_the_first_maximum(window, stride):
  """Zero backgrounds give tied maxima: one input gets the gradient, as in PyTorch."""
  rng = np.random.default_rng(1)
  x = np.round(rng.normal(size=(2, 7, 7, 2))).clip(0, 1)     # many ties (0s and 1s)
  y, vjp = jax.vjp(lambda x: layers.max_pool(x, window, stride), jnp.asarray(x, jnp.float32))
  g = rng.normal(size=y.shape)
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g, jnp.float32))[0]),
                             _torch_rule_grad(x, g, window, stride), rtol=1e-6, atol=1e-6)


def test_conv_scope_picks_the_convolution_at_trace_time():
  """`conv_scope` (used by the cohorts: `cohort_conv_impl`) switches `conv2d`'s default while
  tracing and restores it afterwards."""
  x, k = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4))

  def traced(impl):     # a new function each time: traces are cached per function
    with layers.conv_scope(impl):
      return str(jax.make_jaxpr(lambda x, k: layers.conv2d(x, k))(x, k))

  default = layers.conv_impl()
  assert "conv_general_dilated" in traced("xla")
  assert "conv_general_dilated" not in traced("im2col")
  assert layers.conv_impl() == default
  assert layers.cohort_conv_impl() == ("xla" if jax.default_backend() == "tpu" else "im2col")
