"""Split models. Importing this package registers every model family in MODELS."""
from gas_jax.models import alexnet  # noqa: F401  (registers "alexnet")
from gas_jax.models import cnn_small  # noqa: F401  (registers "cnn_small")
from gas_jax.models import resnet  # noqa: F401  (registers "resnet18")
from gas_jax.models import vgg  # noqa: F401  (registers "vgg16")
from gas_jax.models import vit  # noqa: F401  (registers "vit_small")
from gas_jax.models.registry import SplitModel, get_model  # noqa: F401
