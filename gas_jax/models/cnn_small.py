"""A small CNN for fast tests and smoke runs ("cnn_small", single split "default").

Client: conv3x3 C->32, ReLU, conv3x3 32->64, maxpool 2/2, ReLU.
Server: conv3x3 64->128, ReLU, maxpool 2/2, flatten, dense 256, ReLU, dense classes.
For an 8x8x1 input the activation is 4x4x64 (1024 values).

"cnn_small_bn" is the same network with BatchNorm after conv1 and conv3 and Dropout(0.5) after
fc1: a small stateful model for fast tests and smoke runs of the training-mode paths (running
statistics aggregated with the parameters, dropout keys), as VGG16-BN and ViT-small need.
"""
import flax.linen as nn

from gas_jax.models import layers
from gas_jax.models.registry import check_split, make_split_model, register_model

NAME = "cnn_small"
NAME_BN = "cnn_small_bn"
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


class CnnSmallBNClient(nn.Module):
  """Client part of cnn_small_bn."""

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    x = nn.relu(layers.batch_norm(layers.Conv(32, name="conv1")(x), train, mask, "bn1"))
    x = layers.Conv(64, name="conv2")(x)
    return nn.relu(layers.max_pool(x, 2, 2))


class CnnSmallBNServer(nn.Module):
  """Server part of cnn_small_bn."""
  num_classes: int

  @nn.compact
  def __call__(self, a, train: bool = False, mask=None):
    x = nn.relu(layers.batch_norm(layers.Conv(128, name="conv3")(a), train, mask, "bn3"))
    x = layers.flatten(layers.max_pool(x, 2, 2))
    x = nn.relu(layers.Dense(256, name="fc1")(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return layers.Dense(self.num_classes, name="fc2")(x)


@register_model(NAME_BN, SPLITS)
def build_bn(split: str, num_classes: int, input_shape: tuple):
  """Builds cnn_small_bn for (H, W, C) inputs."""
  check_split(NAME_BN, split, SPLITS)
  return make_split_model(NAME_BN, split, CnnSmallBNClient(), CnnSmallBNServer(num_classes),
                          input_shape, num_classes)
