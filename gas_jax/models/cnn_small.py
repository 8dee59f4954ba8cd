"""A small CNN for fast tests and smoke runs ("cnn_small", single split "default").

Client: conv3x3 C->32, ReLU, conv3x3 32->64, maxpool 2/2, ReLU.
Server: conv3x3 64->128, ReLU, maxpool 2/2, flatten, dense 256, ReLU, dense classes.
For an 8x8x1 input the activation is 4x4x64 (1024 values).
"""
import flax.linen as nn

from gas_jax.models import layers
from gas_jax.models.registry import check_split, make_split_model, register_model

NAME = "cnn_small"
SPLITS = ("default",)


class CnnSmallClient(nn.Module):
  """Client part of cnn_small."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(layers.Conv(32, name="conv1")(x))
    x = layers.Conv(64, name="conv2")(x)
    return nn.relu(layers.max_pool(x, 2, 2))


class CnnSmallServer(nn.Module):
  """Server part of cnn_small."""
  num_classes: int

  @nn.compact
  def __call__(self, a):
    x = nn.relu(layers.Conv(128, name="conv3")(a))
    x = layers.flatten(layers.max_pool(x, 2, 2))
    x = nn.relu(layers.Dense(256, name="fc1")(x))
    return layers.Dense(self.num_classes, name="fc2")(x)


@register_model(NAME, SPLITS)
def build(split: str, num_classes: int, input_shape: tuple):
  """Builds cnn_small for (H, W, C) inputs."""
  check_split(NAME, split, SPLITS)
  return make_split_model(NAME, split, CnnSmallClient(), CnnSmallServer(num_classes),
                          input_shape, num_classes)
