#!/usr/bin/env bash
# Table 1: FedAvg, FedBuff, CA2FL and GAS on CIFAR-10, CINIC-10 and Fashion-MNIST, 3 seeds.
#   launch/table1.sh DATA_DIR OUT_DIR [--jobs=N] [--config.x=v ...]
# DATA_DIR holds the datasets (cifar-10-batches-py/, CINIC-10 folders, FMNIST idx files or TFDS
# ArrayRecords). Tables: OUT_DIR/{cifar10,cinic10,fmnist}/results.md.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
run() { python launch/compare.py --config="$1" --partitions="$2" --workdir="$out/$3" \
  --methods=fedavg,fedbuff,ca2fl,gas --seeds=2023,1998,1125 --config.data.dir="$data" "${@:4}"; }
run configs/cifar10.py shard2,dir0.1 cifar10 "$@"
run configs/cinic10.py shard2,shard4,dir0.1,dir0.3 cinic10 "$@"
run configs/fmnist.py shard2,dir0.1 fmnist "$@"
