r"""configs/fmnist.py (Table 1's Fashion-MNIST setting: AlexNet split L2, K=20, C=10, B=32, SGD
lr 0.01, no augmentation) at a scale that runs on a 2-core CPU: E=5 local iterations instead of
20 and T=6 global iterations instead of 1000. Everything else is configs/fmnist.py's. Real data:
Debian's `apt-get install dataset-fashion-mnist` (the idx files in
/usr/share/datasets/fashion-mnist, read as they are).

The comparison, one command (5 methods x 2 partitions x seed 0 = 10 cells, one at a time):

    python launch/compare.py --config=configs/fmnist_reduced.py \
        --methods=gas,gas_nogen,fedavg,fedbuff,ca2fl --partitions=shard2,dir0.1 --seeds=0 \
        --workdir=runs/fmnist_reduced --jobs=1 --config.data.dir=/usr/share/datasets/fashion-mnist

One cell: `python -m gas_jax.main --config=configs/fmnist_reduced.py:dir0.1
--config.data.dir=/usr/share/datasets/fashion-mnist --workdir=runs/fmnist_reduced_one`.
Arguments as configs/fmnist.py: `:shard2` (default), `:dir0.1`, any shardN, dirALPHA or iid.
This is the early phase of training (T=6; `final_accuracy` is the mean of iterations 2-6), not
Table 1's numbers.

Sizing (measured 2026-12-01 on the 2-core CPU, E=5, shard2, T=3, in CPU seconds because other
jobs kept the load average at 7-12 during the measurement: wall times were ~2.1x the CPU times):
  * evaluation on the 10,000 test images after every global iteration: 25-27 s per iteration
    (AlexNet forward, 54M MACs per image), the same for every method;
  * training per global iteration: gas 21-25 s, fedavg 15 s (gas_nogen ~21, fedbuff and ca2fl
    ~15 estimated: the same C*E = 50 local steps per global iteration);
  * per run, start-up and compilation: gas ~51 s, fedavg ~36 s (import, data, model init,
    first steps and evaluation compiled).
  Per cell at T=6: gas 51 + 6 * (23 + 26) = 345 s, gas_nogen ~327, fedavg / fedbuff / ca2fl
  36 + 6 * (15 + 26) = 282 s each; 10 cells ~3,040 CPU s (~51 CPU minutes). A cell's wall time
  on an otherwise idle 2-core machine was ~0.7x its CPU time, so ~35 minutes, less the
  compilations the dir0.1 cells reuse from the shard2 cells (compare.py's shared XLA cache);
  ~50 minutes if the CPU is contended as much as 1:1. Each extra global iteration costs ~440 CPU
  s over the 10 cells, 260 s of it evaluation (`--config.num_global_iters=N` to change T).
"""
from configs import _args
from configs import fmnist

ARGS = ("shard2", "dir0.1")   # the columns of Table 1

LOCAL_ITERS = 5       # E (paper: 20)
GLOBAL_ITERS = 6      # T (paper: 1000)


def get_config(arg: str = ""):
  _args.parse(arg, {"partition": _args.PARTITION}, "configs/fmnist_reduced.py")
  c = fmnist.get_config(arg)
  c.clients.local_iters = LOCAL_ITERS
  c.num_global_iters = GLOBAL_ITERS
  return c
