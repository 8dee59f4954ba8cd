"""ViT-small for CIFAR ("vit_small"; paper Table 5, spec §3.5).

The paper gives 6 Transformer layers, 8 heads, MLP dim 512, dropout 0.1 (layers and embedding),
a split after the first Transformer layer and Adam with lr 1e-4; patch size and width are not
stated. We use the common CIFAR "vit_small" sizes: 4x4 patches, width 512, 64 dims per head,
a class token, learned position embeddings (65 tokens for 32x32 inputs), pre-norm blocks
x + Attn(LN(x)), x + MLP(LN(x)) with exact GELU, and LayerNorm + Linear on the class token.
The activation at split Lk (after block k; L1 is the paper's) is 65x512 = 33,280 values.
Linear layers use PyTorch's default initialisation; the class token and position embeddings
are N(0, 1) as in lucidrains' vit-pytorch.
"""
import flax.linen as nn
import jax.numpy as jnp

from gas_jax.errors import ConfigError
from gas_jax.models import layers
from gas_jax.models.registry import check_split, make_split_model, register_model

NAME = "vit_small"
DEPTH, WIDTH, HEADS, HEAD_DIM, MLP_DIM, PATCH, DROPOUT = 6, 512, 8, 64, 512, 4, 0.1
SPLIT_BLOCK = {f"L{k}": k for k in range(1, DEPTH)}
LN_EPS = 1e-5   # torch.nn.LayerNorm


class Block(nn.Module):
  """Pre-norm Transformer block (multi-head self-attention, then the MLP)."""

  @nn.compact
  def __call__(self, x, train: bool):
    drop = lambda y: nn.Dropout(DROPOUT, deterministic=not train)(y)
    n, t, _ = x.shape
    y = nn.LayerNorm(epsilon=LN_EPS, name="ln1")(x)
    qkv = layers.Dense(3 * HEADS * HEAD_DIM, use_bias=False, name="qkv")(y)
    q, k, v = jnp.split(qkv.reshape(n, t, 3, HEADS, HEAD_DIM), 3, axis=2)
    q, k, v = (a[:, :, 0] for a in (q, k, v))                        # [N, T, H, Dh]
    att = jnp.einsum("nqhd,nkhd->nhqk", q, k) * HEAD_DIM ** -0.5
    att = nn.softmax(att, axis=-1)
    y = jnp.einsum("nhqk,nkhd->nqhd", att, v).reshape(n, t, HEADS * HEAD_DIM)
    x = x + drop(layers.Dense(WIDTH, name="proj")(y))
    y = nn.LayerNorm(epsilon=LN_EPS, name="ln2")(x)
    y = drop(nn.gelu(layers.Dense(MLP_DIM, name="mlp1")(y), approximate=False))
    return x + drop(layers.Dense(WIDTH, name="mlp2")(y))


class ViTPart(nn.Module):
  """Embedding (if first == 0), blocks max(first, 1)..last, then the head (if `head`)."""
  first: int
  last: int
  head: bool
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    del mask   # no batch statistics in a ViT
    if self.first == 0:
      n, h, w, c = x.shape
      x = x.reshape(n, h // PATCH, PATCH, w // PATCH, PATCH, c).transpose(0, 1, 3, 2, 4, 5)
      x = layers.Dense(WIDTH, name="patch_embed")(x.reshape(n, -1, PATCH * PATCH * c))
      cls = self.param("cls_token", nn.initializers.normal(1.0), (1, 1, WIDTH))
      x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, WIDTH)), x], axis=1)
      pos = self.param("pos_embed", nn.initializers.normal(1.0), (1,) + x.shape[1:])
      x = nn.Dropout(DROPOUT, deterministic=not train)(x + pos)
    for i in range(max(self.first, 1), self.last + 1):
      x = Block(name=f"block{i}")(x, train)
    if self.head:
      x = nn.LayerNorm(epsilon=LN_EPS, name="head_ln")(x[:, 0])
      x = layers.Dense(self.num_classes, name="head")(x)
    return x


@register_model(NAME, tuple(SPLIT_BLOCK))
def build(split: str, num_classes: int, input_shape: tuple):
  """ViT-small cut after Transformer block k (Lk; the paper's split is L1)."""
  check_split(NAME, split, tuple(SPLIT_BLOCK))
  if input_shape[0] % PATCH or input_shape[1] % PATCH:
    raise ConfigError(f"model.name='vit_small' needs image sides divisible by {PATCH}; the "
                     f"dataset's images are {input_shape[0]}x{input_shape[1]}")
  k = SPLIT_BLOCK[split]
  client = ViTPart(first=0, last=k, head=False, num_classes=num_classes)
  server = ViTPart(first=k + 1, last=DEPTH, head=True, num_classes=num_classes)
  return make_split_model(NAME, split, client, server, input_shape, num_classes)
