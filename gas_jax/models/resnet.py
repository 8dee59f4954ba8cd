"""ResNet18, CIFAR variant ("resnet18"; paper Table 5, spec §3.5).

The common CIFAR ResNet18 (He et al. 2016 as adapted for 32x32 inputs): stem conv3x3 64
stride 1 (no bias) + BatchNorm + ReLU and no max-pool; four stages of two BasicBlocks
(64, 128/2, 256/2, 512/2; a 1x1 conv + BN shortcut where the shape changes); global average
pool; Linear 512->classes. The paper splits after the first residual stage (L1, the default),
giving a 32x32x64 = 65,536-dim activation; L2-L4 split after stages 2-4
(16x16x128, 8x8x256, 4x4x512). BatchNorm as in `gas_jax.models.layers.batch_norm`.
The spec calls the variant a guess (no reference code): this is the usual one.
"""
import flax.linen as nn
import jax.numpy as jnp

from gas_jax.models import layers
from gas_jax.models.registry import check_split, make_split_model, register_model

NAME = "resnet18"
STAGES = (64, 128, 256, 512)
SPLIT_STAGE = {"L1": 1, "L2": 2, "L3": 3, "L4": 4}


class BasicBlock(nn.Module):
  features: int
  stride: int

  @nn.compact
  def __call__(self, x, train: bool, mask):
    s = (self.stride, self.stride)
    y = layers.Conv(self.features, (3, 3), 1, s, use_bias=False, name="conv1")(x)
    y = nn.relu(layers.batch_norm(y, train, mask, "bn1"))
    y = layers.Conv(self.features, (3, 3), 1, use_bias=False, name="conv2")(y)
    y = layers.batch_norm(y, train, mask, "bn2")
    if self.stride != 1 or x.shape[-1] != self.features:
      x = layers.Conv(self.features, (1, 1), 0, s, use_bias=False, name="shortcut_conv")(x)
      x = layers.batch_norm(x, train, mask, "shortcut_bn")
    return nn.relu(y + x)


class ResNetPart(nn.Module):
  """Stages first..last (0 = the stem); `head` adds the pool and the classifier."""
  first: int
  last: int
  head: bool
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    for stage in range(self.first, self.last + 1):
      if stage == 0:
        x = layers.Conv(64, (3, 3), 1, use_bias=False, name="stem_conv")(x)
        x = nn.relu(layers.batch_norm(x, train, mask, "stem_bn"))
        continue
      features = STAGES[stage - 1]
      for block in range(2):
        stride = 2 if (stage > 1 and block == 0) else 1
        x = BasicBlock(features, stride, name=f"stage{stage}_block{block}")(x, train, mask)
    if self.head:
      x = jnp.mean(x, axis=(1, 2))
      x = layers.Dense(self.num_classes, name="fc")(x)
    return x


@register_model(NAME, tuple(SPLIT_STAGE))
def build(split: str, num_classes: int, input_shape: tuple):
  """ResNet18 cut after residual stage 1 (L1, the paper's) .. 4."""
  check_split(NAME, split, tuple(SPLIT_STAGE))
  k = SPLIT_STAGE[split]
  client = ResNetPart(first=0, last=k, head=False, num_classes=num_classes)
  server = ResNetPart(first=k + 1, last=len(STAGES), head=True, num_classes=num_classes)
  return make_split_model(NAME, split, client, server, input_shape, num_classes)
