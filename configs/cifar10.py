r"""The paper's CIFAR-10 setting (Table 1, AlexNet split L2, K=20, C=10, E=20, B=32, T=2000).

    python -m gas_jax.main --config=configs/cifar10.py --config.data.dir=/path/to/data \
        --workdir=/tmp/gas_cifar10

`data.dir` must hold the CIFAR-10 python batches (`cifar-10-batches-py/`), the binary version
(`cifar-10-batches-bin/`) or a prepared TFDS ArrayRecord folder. Paper (Table 1, shard=2):
GAS 82.78 ± 0.58 % test accuracy (dir0.1: 81.72 ± 0.50). Arguments: `:shard2` (default),
`:dir0.1`, any `shardN`, `dirALPHA` or `iid`, e.g. `--config=configs/cifar10.py:dir0.1`.
"""
from configs import _args
from configs import digits

ARGS = ("shard2", "dir0.1")   # the CIFAR-10 columns of Table 1


def get_config(arg: str = ""):
  parsed = _args.parse(arg, {"partition": _args.PARTITION}, "configs/cifar10.py")
  c = digits.get_config()
  c.data.name = "cifar10"
  c.num_global_iters = 2000
  c.clients.local_iters = 20
  c.model.name = "alexnet"
  c.model.split = "L2"
  c.time.ref_constants = True
  c.data.augment = True
  _args.apply_partition(c, parsed.get("partition", "shard2"))
  return c
