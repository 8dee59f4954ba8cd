r"""The paper's Fashion-MNIST setting (Table 1): GAS, AlexNet split L2, K=20, C=10, E=20, B=32,
T=1000.

The config argument picks the partition (one of Table 1's columns):

    python -m gas_jax.main --config=configs/fmnist.py:shard2 --config.data.dir=/path/to/data \
        --workdir=/tmp/gas_fmnist_shard2

`data.dir` must hold the four Fashion-MNIST idx files (plain or .gz, directly in it or in
torchvision's `FashionMNIST/raw/`) or a prepared TFDS ArrayRecord folder `fashion_mnist/`.
Offline: Debian's `apt-get install dataset-fashion-mnist` puts the idx files in
`/usr/share/datasets/fashion-mnist` (`--config.data.dir=/usr/share/datasets/fashion-mnist`).
A CPU-sized version of the comparison: configs/fmnist_reduced.py.
No augmentation (spec §4.1). AlexNet's 1-channel variant (spec §3.2) follows from the 28x28x1
input; the simulated clock keeps REF's CIFAR AlexNet-L2 constants (`time.ref_constants`), as REF
does. All four methods of the table: `python launch/compare.py --config=configs/fmnist.py
--methods=fedavg,fedbuff,ca2fl,gas --partitions=shard2,dir0.1 --workdir=...`.

Paper, Table 1 (test accuracy %, mean ± std over 3 seeds):

| arg     | FedAvg     | FedBuff    | CA2FL      | GAS        |
|---------|------------|------------|------------|------------|
| shard2  | 87.99±2.12 | 84.93±4.11 | 88.32±1.19 | 90.66±0.20 |
| dir0.1  | 88.74±1.19 | 85.81±3.68 | 89.07±0.58 | 90.58±0.34 |

No argument means shard2. Any shardN, dirALPHA or iid is accepted.
"""
from configs import _args
from configs import cifar10

ARGS = ("shard2", "dir0.1")   # the columns of Table 1


def get_config(arg: str = ""):
  parsed = _args.parse(arg, {"partition": _args.PARTITION}, "configs/fmnist.py")
  c = cifar10.get_config()
  c.data.name = "fashion_mnist"
  c.num_global_iters = 1000
  c.data.augment = False       # spec §4.1: no train augmentation for Fashion-MNIST
  _args.apply_partition(c, parsed.get("partition", "shard2"))
  return c
