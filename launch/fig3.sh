#!/usr/bin/env bash
# Fig. 3: accuracy against simulated time, GAS vs MiniBatch-SFL and S2FL (CIFAR-10, CINIC-10).
#   launch/fig3.sh DATA_DIR OUT_DIR [--jobs=N] [--config.x=v ...]
# Curves: OUT_DIR/{cifar10,cinic10}/accuracy_vs_time.png.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
for d in cifar10 cinic10; do
  python launch/compare.py --config="configs/$d.py" --partitions=shard2,dir0.1 \
    --methods=gas,minibatch_sfl,s2fl --seeds=2023,1998,1125 --workdir="$out/$d" \
    --config.data.dir="$data" "$@"
done
