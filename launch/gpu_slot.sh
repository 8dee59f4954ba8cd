#!/usr/bin/env bash
# One GPU slot (~15 minutes of machine time, start-up included) of the full-scale Fashion-MNIST
# campaign and the mixed-precision measurements. Bounded: every step gets a share of the budget
# that is left, the campaign starts no cell it cannot finish (launch/campaign.py). Everything
# worth keeping lands in OUTDIR: results/ (the packed cells, earlier slots' included: copy into
# the repository's results/ and commit), bench_*.json and the logs.
#   launch/gpu_slot.sh OUTDIR [SECONDS] [PLAN]
#     (defaults: 720 s, launch/plans/fmnist_table1.txt; the data: the ignored folder
#      data/fashion-mnist, carried with the call: `mkdir -p data && cp -r
#      /usr/share/datasets/fashion-mnist data/`)
# Set BENCH=0 to skip the precision benchmarks (later slots), CAMPAIGN_ARGS for extra
# campaign flags (e.g. --config.execution.precision=bf16 is NOT the default: it changes the
# numbers; Table 1's cells run in float32).
set -uo pipefail
out=${1:?output directory}; budget=${2:-720}; plan=${3:-launch/plans/fmnist_table1.txt}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
  "$py" -c "import jax; print(jax.__version__, jax.devices())"; date -u; } >"$out/device.txt" 2>&1
if [ "${BENCH:-1}" != 0 ]; then
  # CIFAR-10-shaped GAS iteration per precision (synthetic inputs where the data is absent).
  for p in bf16 float32 tf32; do
    limit=$(( $(left) / 6 ))
    [ "$limit" -lt 30 ] && { echo "bench_$p: skipped"; continue; }
    timeout "$limit" "$py" -m benchmarks.run iteration --config=configs/cifar10.py --iters=8 \
      --nopeak_each_iter --nonogen --config.execution.precision=$p \
      --config.execution.compilation_cache_dir=xla_cache --out="$out/bench_$p.json" \
      >"$out/bench_$p.log" 2>&1
    echo "bench_$p: rc=$? at $((SECONDS - start))s"
  done
fi
# The campaign: the plan's next cells, each packed into OUTDIR/results the moment it finishes
# (the cells packed in earlier slots, committed in ./results, are copied there first, so they
# count as done). A hard limit as well, in case a cell runs past its estimate.
mkdir -p "$out/results"
[ -d results ] && cp -r results/. "$out/results/"
limit=$(( $(left) - 20 ))
timeout "$limit" "$py" launch/campaign.py --plan="$plan" --budget_s=$(( limit - 20 )) --out=. \
  --results="$out/results" --config.data.dir=data/fashion-mnist ${CAMPAIGN_ARGS:-} \
  >"$out/campaign.log" 2>&1
echo "campaign: rc=$? at $((SECONDS - start))s"
tail -n 3 "$out/campaign.log"
cat "$out/device.txt"
