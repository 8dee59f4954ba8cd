"""VGG16-BN, CIFAR variant ("vgg16"; spec §3.3, the reference code's `utils/VGG16_split`).

13 blocks conv3x3(p1) + BatchNorm + ReLU with max-pool 2/2 after blocks 2, 4, 7, 10 and 13,
channels 64,64 | 128,128 | 256x3 | 512x3 | 512x3; then AvgPool(1) (the identity on 1x1 maps)
and the classifier Linear 512->4096, ReLU, Dropout(0.5), Linear 4096->4096, ReLU, Dropout(0.5),
Linear->classes. The paper counts conv, ReLU and pool layers (not BN), so its split layers
10/17/24/31 are after blocks 4/7/10/13 and their pools:

  L1: 8x8x128 = 8192    L2: 4x4x256 = 4096    L3: 2x2x512 = 2048    L4: 1x1x512 = 512

BatchNorm follows PyTorch's defaults (gamma 1, beta 0, momentum 0.1 = Flax 0.9, eps 1e-5;
training mode normalises with the batch statistics of the unmasked rows). The running
statistics live in the ``batch_stats`` collection of each part's model pytree, so they are
averaged together with the parameters wherever the algorithms aggregate models.
Needs 32x32 inputs (five 2x2 pools); the 1-channel 28x28 datasets use AlexNet (as REF does).
"""
import flax.linen as nn

from gas_jax.errors import ConfigError
from gas_jax.models import layers
from gas_jax.models.registry import check_split, make_split_model, register_model

NAME = "vgg16"
CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOL_AFTER = frozenset({2, 4, 7, 10, 13})
SPLIT_BLOCK = {"L1": 4, "L2": 7, "L3": 10, "L4": 13}
DROPOUT = 0.5


class VGGPart(nn.Module):
  """Conv blocks first..last (1-based, each followed by its pool), then the classifier if
  `classifier`. Submodules are named after their block (``conv3``, ``bn3``, ``fc1``)."""
  first: int
  last: int
  classifier: bool
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    for i in range(self.first, self.last + 1):
      x = layers.Conv(CHANNELS[i - 1], kernel=(3, 3), padding=1, name=f"conv{i}")(x)
      x = nn.relu(layers.batch_norm(x, train, mask, f"bn{i}"))
      if i in POOL_AFTER:
        x = layers.max_pool(x, 2, 2)
    if self.classifier:
      x = layers.flatten(x)     # AvgPool(1) on a 1x1 map is the identity
      for j, features in enumerate((4096, 4096), start=1):
        x = nn.relu(layers.Dense(features, name=f"fc{j}")(x))
        x = nn.Dropout(DROPOUT, deterministic=not train)(x)
      x = layers.Dense(self.num_classes, name="fc3")(x)
    return x


@register_model(NAME, tuple(SPLIT_BLOCK))
def build(split: str, num_classes: int, input_shape: tuple):
  """VGG16-BN cut after block 4/7/10/13 (L1-L4); input (32, 32, C)."""
  check_split(NAME, split, tuple(SPLIT_BLOCK))
  if tuple(input_shape[:2]) != (32, 32):
    raise ConfigError(f"model.name='vgg16' needs 32x32 images; the dataset's are "
                     f"{input_shape[0]}x{input_shape[1]} (use alexnet for 28x28 data)")
  k = SPLIT_BLOCK[split]
  client = VGGPart(first=1, last=k, classifier=False, num_classes=num_classes)
  server = VGGPart(first=k + 1, last=len(CHANNELS), classifier=True, num_classes=num_classes)
  return make_split_model(NAME, split, client, server, input_shape, num_classes)
