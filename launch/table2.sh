#!/usr/bin/env bash
# Table 2 and Fig. 4: local iterations E = 10/20/35/50, FedBuff, CA2FL, GAS, T=1000, CINIC-10,
# the paper's seeds 2023, 1998, 1125 (a later --seeds=... overrides them).
#   launch/table2.sh DATA_DIR OUT_DIR [--jobs=N] [--seeds=a,b] [--config.x=v ...]
# Tables and accuracy-vs-time curves: OUT_DIR/E<e>/results.md, accuracy_vs_time.png; Fig. 4
# (accuracy against simulated time for every E on one axis): OUT_DIR/fig4_accuracy_vs_time.png,
# drawn from the finished cells even when some failed (the exit status is then non-zero).
# LOCAL_ITERS="10 20" picks other values of E. Tiny check on digits:
#   LOCAL_ITERS="2 3" launch/table2.sh "" /tmp/t2 --seeds=0 --partitions=shard2
#   --config.data.name=digits --config.model.name=cnn_small --config.model.split=default
#   --config.num_global_iters=2
set -euo pipefail
data=${1?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
local_iters=${LOCAL_ITERS:-10 20 35 50}
status=0
for e in $local_iters; do
  python launch/compare.py --config="configs/table2_local_iters.py:E$e" \
    --partitions=shard2,dir0.1 --methods=fedbuff,ca2fl,gas --seeds=2023,1998,1125 \
    --workdir="$out/E$e" --config.data.dir="$data" "$@" || status=$?
done
python launch/figures.py fig4 --workdir="$out" --local_iters="${local_iters// /,}" \
  --methods=fedbuff,ca2fl,gas
exit "$status"
