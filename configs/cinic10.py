r"""The paper's CINIC-10 setting (Table 1): GAS, AlexNet split L2, K=20, C=10, E=20, B=32, T=2000.

The config argument picks the partition (one of Table 1's columns):

    python -m gas_jax.main --config=configs/cinic10.py:shard2 --config.data.dir=/path/to/data \
        --workdir=/tmp/gas_cinic10_shard2

`data.dir` must hold the CINIC-10 PNG folders (`CINIC-10/`, `cinic-10/` or the data dir itself,
with `train/<class>/*.png` and `test/<class>/*.png`) or a prepared TFDS ArrayRecord folder. All
four methods of the table: `python launch/compare.py --config=configs/cinic10.py
--methods=fedavg,fedbuff,ca2fl,gas --partitions=shard2,shard4,dir0.1,dir0.3 --workdir=...`.

Paper, Table 1 (test accuracy %, mean ± std over 3 seeds):

| arg     | FedAvg     | FedBuff    | CA2FL      | GAS        |
|---------|------------|------------|------------|------------|
| shard2  | 52.66±6.51 | 48.98±0.87 | 64.29±1.45 | 68.32±0.17 |
| shard4  | 62.26±2.52 | 58.32±2.20 | 68.42±1.11 | 70.29±0.27 |
| dir0.1  | 57.17±1.04 | 54.23±2.11 | 64.27±0.78 | 65.94±1.14 |
| dir0.3  | 65.46±2.09 | 64.69±1.81 | 68.77±0.92 | 69.36±0.65 |

No argument means shard2. Any shardN, dirALPHA or iid is accepted.
"""
from configs import _args
from configs import cifar10

ARGS = ("shard2", "shard4", "dir0.1", "dir0.3")   # the columns of Table 1


def get_config(arg: str = ""):
  parsed = _args.parse(arg, {"partition": _args.PARTITION}, "configs/cinic10.py")
  c = cifar10.get_config()
  c.data.name = "cinic10"
  _args.apply_partition(c, parsed.get("partition", "shard2"))
  return c
