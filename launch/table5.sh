#!/usr/bin/env bash
# Table 5: ViT-small and ResNet18 on CIFAR-10, FedAvg, FedBuff, CA2FL, GAS (diagonal statistics).
#   launch/table5.sh DATA_DIR OUT_DIR [--jobs=N] [--config.x=v ...]
# Tables: OUT_DIR/<model>/results.md.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
for m in vit_small resnet18; do
  python launch/compare.py --config="configs/table5_models.py:$m" --partitions=shard2,dir0.1 \
    --methods=fedavg,fedbuff,ca2fl,gas --seeds=2023,1998,1125 --workdir="$out/$m" \
    --config.data.dir="$data" "$@"
done
