#!/usr/bin/env bash
# Table 2 (and Fig. 4): local iterations E = 10/20/35/50, FedBuff, CA2FL, GAS, T=1000, CINIC-10.
#   launch/table2.sh DATA_DIR OUT_DIR [--jobs=N] [--config.x=v ...]
# Tables and accuracy-vs-time curves: OUT_DIR/E<e>/results.md, accuracy_vs_time.png.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
for e in 10 20 35 50; do
  python launch/compare.py --config="configs/table2_local_iters.py:E$e" \
    --partitions=shard2,dir0.1 --methods=fedbuff,ca2fl,gas --seeds=2023,1998,1125 \
    --workdir="$out/E$e" --config.data.dir="$data" "$@"
done
