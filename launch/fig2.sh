#!/usr/bin/env bash
# Fig. 2: gradient dissimilarity and accuracy with and without generation (FMNIST s=2, K=10, C=3),
# the paper's seeds 2023, 1998, 1125 (a later --seeds=... overrides them).
#   launch/fig2.sh DATA_DIR OUT_DIR [--jobs=N] [--seeds=a,b] [--config.x=v ...]
# Fig. 2(a): OUT_DIR/fig2a_dissimilarity.png (the `grad_dissimilarity` column of each cell's
# metrics.jsonl against the global iteration); Fig. 2(b): OUT_DIR/accuracy_vs_iteration.png.
# Drawn from the finished cells even when some failed (the exit status is then non-zero).
# Tiny check on digits: launch/fig2.sh "" /tmp/fig2 --seeds=0 --config.data.name=digits
#   --config.model.name=cnn_small --config.model.split=default --config.num_global_iters=2
#   --config.clients.local_iters=2
set -euo pipefail
data=${1?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
status=0
python launch/compare.py --config=configs/fig2_fmnist.py:gen --methods=gas,gas_nogen \
  --seeds=2023,1998,1125 --workdir="$out" --config.data.dir="$data" "$@" || status=$?
python launch/figures.py fig2 --workdir="$out"
exit "$status"
