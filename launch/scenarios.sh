#!/usr/bin/env bash
# Clients that come and go (issue #29, docs/scenarios.md): all 7 methods under four scenarios,
# one comparison each, then one table and one plot over the four.
#   launch/scenarios.sh OUT_DIR [--seeds=a,b,c] [--jobs=N] [--config.x=v ...]
# Scenarios: always available (REF); Markov availability with clients offline 30 % of the time
# (mean 7 s online, 3 s offline); dropout 0.2; lognormal speeds with sigma 1. Each scenario's
# cells, results.md and plots: OUT_DIR/<scenario>/ (launch/compare.py); over the four:
# OUT_DIR/scenarios.md and OUT_DIR/scenarios.png (launch/scenario_report.py). The paper's seeds
# 2023, 1998, 1125 unless --seeds=... is given.
set -euo pipefail
out=${1:?OUT_DIR}; shift
methods=gas,gas_nogen,fedavg,fedbuff,ca2fl,minibatch_sfl,s2fl
status=0
run() {
  local name=$1; shift
  python launch/compare.py --config=configs/digits.py --methods="$methods" \
    --seeds=2023,1998,1125 --partitions=shard2 --workdir="$out/$name" "$@" || status=$?
}
run always "$@"
run markov30 --config.system.availability=markov --config.system.mean_online_s=7.0 \
  --config.system.mean_offline_s=3.0 "$@"
run dropout20 --config.system.dropout=0.2 "$@"
run lognormal1 --config.system.speed=lognormal --config.system.sigma=1.0 "$@"
python launch/scenario_report.py --workdir="$out" --methods="$methods" \
  --scenarios=always,markov30,dropout20,lognormal1 || status=$?
exit "$status"
