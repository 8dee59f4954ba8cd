r"""The paper's CIFAR-10 setting (Table 1, AlexNet split L2, K=20, C=10, E=20, B=32, T=2000).

    python -m gas_jax.main --config=configs/cifar10.py --config.data.dir=/path/to/data \
        --workdir=/tmp/gas_cifar10

`data.dir` must hold the CIFAR-10 python batches (`cifar-10-batches-py/`), the binary version
(`cifar-10-batches-bin/`) or a prepared TFDS ArrayRecord folder. Paper (Table 1, shard=2):
GAS 82.78 ± 0.58 % test accuracy.
"""
from configs import digits


def get_config(arg: str = ""):
  c = digits.get_config()
  c.data.name = "cifar10"
  c.num_global_iters = 2000
  c.clients.local_iters = 20
  c.model.name = "alexnet"
  c.model.split = "L2"
  c.time.ref_constants = True
  c.data.augment = True
  if arg:
    from gas_jax import config as config_lib
    config_lib.apply_partition_arg(c, arg)
  return c
