"""AlexNet of the GAS reference code ("alexnet"; spec §3.1 CIFAR, §3.2 1-channel).

Layer list (index = the paper's layer count); no ReLU after conv3/conv4 or
between the fully connected layers:

   1 conv 3->32 k3 p1     2 maxpool 2/2     3 ReLU        -- split L1
   4 conv 32->64 k3 p1    5 maxpool 2/2     6 ReLU        -- split L2 (default)
   7 conv 64->128 k3 p1                                   -- split L3
   8 conv 128->256 k3 p1  9 conv 256->256 k3 p1
  10 maxpool 3/2 VALID   11 ReLU                          -- split L4
  12 Linear ->1024       13 Linear 1024->512   14 Linear 512->num_classes

The 1-channel variant (FMNIST/MNIST, 28x28) only differs in conv1's input
channels, which are taken from the input, so both variants share this code.
The client runs layers 1..k for split Lk's k, the server the rest.
"""
from typing import Tuple

import flax.linen as nn

from gas_jax.models import layers
from gas_jax.models.registry import check_split, make_split_model, register_model

NAME = "alexnet"
# split name -> last client layer (paper layer count).
SPLIT_LAYER = {"L1": 3, "L2": 6, "L3": 7, "L4": 11}
NUM_LAYERS = 14

# (kind, argument) for layers 1..14.
LAYERS: Tuple[Tuple[str, int], ...] = (
    ("conv", 32), ("pool2", 0), ("relu", 0),
    ("conv", 64), ("pool2", 0), ("relu", 0),
    ("conv", 128), ("conv", 256), ("conv", 256),
    ("pool3", 0), ("relu", 0),
    ("fc", 1024), ("fc", 512), ("fc", -1),  # -1: num_classes
)


class AlexNetPart(nn.Module):
  """Layers first..last (1-based, inclusive) of the AlexNet layer list.

  Submodules are named after their paper layer index (``conv1``, ``fc12``, ...),
  so the same layer has the same name whichever part it ends up in.
  """
  first: int
  last: int
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    for idx in range(self.first, self.last + 1):
      kind, arg = LAYERS[idx - 1]
      if kind == "conv":
        x = layers.Conv(arg, kernel=(3, 3), padding=1, name=f"conv{idx}")(x)
      elif kind == "pool2":
        x = layers.max_pool(x, 2, 2)
      elif kind == "pool3":
        x = layers.max_pool(x, 3, 2)
      elif kind == "relu":
        x = nn.relu(x)
      elif kind == "fc":
        if x.ndim > 2:
          x = layers.flatten(x)
        features = self.num_classes if arg < 0 else arg
        x = layers.Dense(features, name=f"fc{idx}")(x)
      else:  # pragma: no cover - table is static
        raise ValueError(f"unknown layer kind {kind!r}")
    return x


@register_model(NAME, tuple(SPLIT_LAYER))
def build(split: str, num_classes: int, input_shape: tuple):
  """Builds AlexNet cut at ``split``; the variant follows input_shape[-1] (1 or 3 channels)."""
  check_split(NAME, split, tuple(SPLIT_LAYER))
  k = SPLIT_LAYER[split]
  client = AlexNetPart(first=1, last=k, num_classes=num_classes)
  server = AlexNetPart(first=k + 1, last=NUM_LAYERS, num_classes=num_classes)
  return make_split_model(NAME, split, client, server, input_shape, num_classes)
