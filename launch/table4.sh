#!/usr/bin/env bash
# Table 4: split-layer ablation, GAS on CIFAR-10 shard=3, AlexNet and VGG16-BN, L1..L4.
#   launch/table4.sh DATA_DIR OUT_DIR [--jobs=N] [--config.x=v ...]
# Tables: OUT_DIR/<model>_<split>/results.md (one GAS row each).
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
for m in alexnet vgg16; do
  for s in L1 L2 L3 L4; do
    python launch/compare.py --config="configs/table4_split.py:$m:$s" --methods=gas \
      --seeds=2023,1998,1125 --workdir="$out/${m}_$s" --config.data.dir="$data" "$@"
  done
done
