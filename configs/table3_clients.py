r"""Table 3 of the paper: more clients, K = 50 / 100, with C=10 concurrent, E=10, T=2000.

GAS, AlexNet split L2, B=32, CIFAR-10 (default) or CINIC-10. The argument is
K<int>:<partition>[:<dataset>], e.g.

    python -m gas_jax.main --config=configs/table3_clients.py:K50:shard2 \
        --config.data.dir=/path/to/data --workdir=/tmp/gas_table3_K50_shard2
    python -m gas_jax.main --config=configs/table3_clients.py:K100:dir0.1:cinic10 \
        --config.data.dir=/path/to/data --workdir=/tmp/gas_table3_K100_dir0.1_cinic10

All four methods of one row: `python launch/compare.py --config=configs/table3_clients.py:K50
--methods=fedavg,fedbuff,ca2fl,gas --partitions=shard2,dir0.1 --workdir=...`.

Paper, Table 3 (test accuracy %, no std given), FedAvg / FedBuff / CA2FL / GAS:

| arg                  | FedAvg | FedBuff | CA2FL | GAS   |
|----------------------|--------|---------|-------|-------|
| K50:shard2           | 71.38  | 70.91   | 80.78 | 82.53 |
| K50:dir0.1           | 74.61  | 76.45   | 78.53 | 81.42 |
| K50:shard2:cinic10   | 54.11  | 49.26   | 65.97 | 67.79 |
| K50:dir0.1:cinic10   | 49.75  | 52.68   | 63.55 | 65.82 |
| K100:shard2          | 63.66  | 67.63   | 80.25 | 82.56 |
| K100:dir0.1          | 76.44  | 73.69   | 78.22 | 81.08 |
| K100:shard2:cinic10  | 51.91  | 49.56   | 64.53 | 66.74 |
| K100:dir0.1:cinic10  | 47.68  | 51.68   | 64.21 | 64.67 |

Missing tokens default to K50, shard2, cifar10. Any K >= 10, shardN, dirALPHA or iid is accepted.
"""
from configs import _args
from configs import cifar10
from gas_jax.config import ConfigError

ARGS = tuple(f"K{k}:{p}{d}" for k in (50, 100) for d in ("", ":cinic10")
             for p in ("shard2", "dir0.1"))
_TOKENS = {"clients": _args.int_token("K"), "partition": _args.PARTITION,
           "dataset": _args.choice_token("cifar10", "cinic10")}


def get_config(arg: str = ""):
  parsed = _args.parse(arg, _TOKENS, "configs/table3_clients.py")
  c = cifar10.get_config(parsed.get("partition", "shard2"))
  c.data.name = parsed.get("dataset", "cifar10")
  c.clients.num = parsed.get("clients", 50)
  if c.clients.num < c.clients.participating:
    raise ConfigError(f"config argument {arg!r} of configs/table3_clients.py: K={c.clients.num} "
                      f"is below the {c.clients.participating} participating clients")
  c.clients.local_iters = 10
  c.num_global_iters = 2000
  return c
