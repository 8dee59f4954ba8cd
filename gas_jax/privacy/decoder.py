"""The model-inversion decoder g(z) ~ x of ResSFL (spec/privacy.md §1): `res_normN{N}C{C}`.

ResSFL's `res_normN{N}C{C}` (architectures_torch.py), as a flax module `Decoder(image_shape,
blocks=N, channels=C)`:
  1. an input residual block from the activation's channels to C channels;
  2. N residual blocks of C channels (3x3 conv - norm - ReLU - 3x3 conv - norm, identity
     shortcut, ReLU);
  3. k stride-2 3x3 transposed convolutions (norm, ReLU), k = round(log2(image side /
     activation side)) (ResSFL: log2(32 / z_spatial)), each doubling the side exactly (torch's
     ConvTranspose2d(3, stride=2, padding=1, output_padding=1); written as zero insertion and a
     3x3 convolution, `UpConv`); when the sides do not divide, the result is resized bilinearly
     to the image's H x W (e.g. a 13x13 activation -> 26x26 -> 28x28);
  4. a final 3x3 conv to the image's channels and a sigmoid: images in [0, 1].

Layers: the project's `models.layers.Conv` / `Dense` (PyTorch's default initialisation, as
ResSFL's decoder; im2col convolutions on the CPU, which XLA runs far faster than its own inside
`lax.scan`, and XLA's convolution on accelerators: the execution plan's choice); their
initialisation drawn by `torch_init` from one key (`make_decoder`'s init_fn).
Norm layers: GroupNorm (up to 8 groups) instead of ResSFL's BatchNorm, so the decoder has no
running statistics: its state is its `params` alone, which vmap, checkpoint and jit like any
pytree, and train and evaluation modes are the same function.

Activations: a conv activation [B, h, w, c] is used as it is. Any other activation shape (a flat
[B, D], ViT's tokens [B, T, D]) is flattened and projected by a dense layer to
[B, ceil(H/4), ceil(W/4), C] first, then upsampled as above.
"""
import math
from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gas_jax.models import layers


def _groups(channels: int) -> int:
  return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _norm(channels: int, name=None) -> nn.Module:
  return nn.GroupNorm(num_groups=_groups(channels), name=name)


class ResBlock(nn.Module):
  """conv3x3 - norm - ReLU - conv3x3 - norm, plus the shortcut (a 1x1 conv when the channels
  change), then ReLU."""
  channels: int

  @nn.compact
  def __call__(self, x):
    h = nn.relu(_norm(self.channels)(layers.Conv(self.channels)(x)))
    h = _norm(self.channels)(layers.Conv(self.channels)(h))
    skip = x if x.shape[-1] == self.channels else layers.Conv(self.channels, (1, 1), 0)(x)
    return nn.relu(h + skip)


class UpConv(nn.Module):
  """A stride-2 3x3 transposed convolution that doubles H and W: the input spread onto the even
  positions of a zero grid [2H-1, 2W-1], then a 3x3 convolution padded (1, 2) on each axis (the
  transposed convolution's kernel, flipped, is the learned kernel itself)."""
  channels: int

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    grid = jnp.zeros((n, 2 * h - 1, 2 * w - 1, c), x.dtype).at[:, ::2, ::2].set(x)
    return layers.Conv(self.channels, (3, 3), ((1, 2), (1, 2)))(grid)


def upsampling_steps(activation_side: int, image_side: int) -> int:
  """How many stride-2 ConvTranspose layers: round(log2(image / activation)), at least 0."""
  return max(0, int(round(math.log2(image_side / activation_side))))


class Decoder(nn.Module):
  """res_normN{blocks}C{channels}: activations [B, ...] -> images [B, H, W, C] in [0, 1]."""
  image_shape: Sequence[int]
  blocks: int = 4
  channels: int = 64

  @nn.compact
  def __call__(self, z):
    H, W, C_img = (int(d) for d in self.image_shape)
    C = self.channels
    if z.ndim != 4:
      h0, w0 = -(-H // 4), -(-W // 4)
      z = layers.Dense(h0 * w0 * C, name="project")(jnp.reshape(z, (z.shape[0], -1)))
      z = nn.relu(jnp.reshape(z, (z.shape[0], h0, w0, C)))
    x = ResBlock(C, name="input_block")(z)
    for i in range(self.blocks):
      x = ResBlock(C, name=f"block{i}")(x)
    k = upsampling_steps(min(x.shape[1], x.shape[2]), min(H, W))
    for i in range(k):
      x = UpConv(C, name=f"up{i}")(x)
      x = nn.relu(_norm(C, name=f"up_norm{i}")(x))
    if x.shape[1:3] != (H, W):
      x = jax.image.resize(x, (x.shape[0], H, W, x.shape[3]), method="bilinear")
    return nn.sigmoid(layers.Conv(C_img, name="to_image")(x))


def torch_init(rng, shapes):
  """The decoder's parameters drawn as `models.layers` does (PyTorch's defaults): every
  kernel and its bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = prod(kernel.shape[:-1]);
  GroupNorm scale 1, bias 0. All from ONE uniform draw of the total size, carved in the tree's
  order: flax's per-parameter keys cost XLA's CPU compiler 10-20 s for this small tree, one
  draw a second or two. `shapes`: the params tree of `module.init` (`jax.eval_shape`)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  bounds = []
  for path, _ in flat:
    node = shapes
    for k in path[:-1]:
      node = node[k.key]
    bounds.append(1.0 / math.sqrt(math.prod(node["kernel"].shape[:-1])) if "kernel" in node
                  else None)        # None: GroupNorm's scale / bias
  total = sum(leaf.size for (_, leaf), b in zip(flat, bounds) if b is not None)
  u = jax.random.uniform(rng, (total,), jnp.float32, -1.0, 1.0)
  values, start = [], 0
  for (path, leaf), b in zip(flat, bounds):
    if b is None:
      values.append(jnp.full(leaf.shape, 1.0 if path[-1].key == "scale" else 0.0, leaf.dtype))
    else:
      values.append(u[start:start + leaf.size].reshape(leaf.shape) * b)
      start += leaf.size
  return jax.tree_util.tree_unflatten(treedef, values)


def decoder_name(blocks: int, channels: int) -> str:
  """ResSFL's name of the decoder: res_normN{blocks}C{channels}."""
  return f"res_normN{blocks}C{channels}"


def make_decoder(activation_shape: Sequence[int], image_shape: Sequence[int], blocks: int = 4,
                 channels: int = 64) -> Tuple[Decoder, Callable, Callable]:
  """(module, init_fn(rng) -> params, apply_fn(params, z) -> images) for activations of
  per-example shape `activation_shape` and images of shape `image_shape` (H, W, C). `init_fn`
  is jitted; `apply_fn` is plain (jit the step that calls it)."""
  module = Decoder(tuple(int(d) for d in image_shape), blocks=blocks, channels=channels)
  dummy = jnp.zeros((1,) + tuple(int(d) for d in activation_shape), jnp.float32)

  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), dummy)["params"]

  @jax.jit
  def init_fn(rng):
    return torch_init(rng, shapes)

  def apply_fn(params, z):
    return module.apply({"params": params}, z)

  return module, init_fn, apply_fn
