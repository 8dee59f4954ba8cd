#!/usr/bin/env bash
# Fig. 2: gradient dissimilarity and accuracy with and without generation (FMNIST s=2, K=10, C=3).
#   launch/fig2.sh DATA_DIR OUT_DIR [--jobs=N] [--config.x=v ...]
# Curves: OUT_DIR/accuracy_vs_iteration.png; the dissimilarity is the `grad_dissimilarity`
# column of each cell's metrics.jsonl.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; shift 2
python launch/compare.py --config=configs/fig2_fmnist.py:gen --methods=gas,gas_nogen \
  --seeds=2023,1998,1125 --workdir="$out" --config.data.dir="$data" "$@"
