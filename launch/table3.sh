#!/usr/bin/env bash
# Table 3: K = 50 / 100 clients (C=10, E=10, T=2000), CIFAR-10 and CINIC-10.
#   launch/table3.sh DATA_DIR OUT_DIR [--jobs=N] [--config.x=v ...]
# Tables: OUT_DIR/K<k>_<dataset>/results.md.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
for k in 50 100; do
  for d in cifar10 cinic10; do
    python launch/compare.py --config="configs/table3_clients.py:K$k:shard2:$d" \
      --partitions=shard2,dir0.1 --methods=fedavg,fedbuff,ca2fl,gas --seeds=2023,1998,1125 \
      --workdir="$out/K${k}_$d" --config.data.dir="$data" "$@"
  done
done
