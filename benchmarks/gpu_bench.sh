#!/usr/bin/env bash
# The accelerator check in one command, for a short lease on a GPU: the iteration benchmark,
# the runs axis (seeds, plain then --parts) and parts on one config (`python -m benchmarks.run`),
# sharing XLA's persistent compilation cache, each step bounded in time so that the later ones
# still run. The JSON files and logs land in OUTDIR (docs/benchmarks.md, "GPU" sections, for the
# figures). Run from anywhere; it runs from the repository root.
#   benchmarks/gpu_bench.sh OUTDIR [CONFIG] [SECONDS]     (defaults: configs/cifar10.py, 540)
set -uo pipefail
out=${1:?output directory}; config=${2:-configs/cifar10.py}; budget=${3:-540}
mkdir -p "$out"
out=$(cd "$out" && pwd)
case $config in /*) ;; *) config=$(pwd)/$config ;; esac
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/gas_jax_xla_cache}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
start=$SECONDS
step() {   # step NAME SHARE CMD...: at most SHARE percent of the budget left
  local name=$1 share=$2; shift 2
  local left=$((budget - (SECONDS - start)))
  local limit=$((left * share / 100))
  if [ "$limit" -lt 20 ]; then echo "$name: skipped (${left}s left)"; return; fi
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "$name: rc=$? in $((SECONDS - start))s (limit ${limit}s)"
}
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
  "$py" -c "import jax; print(jax.__version__, jax.devices())"; } >"$out/device.txt" 2>&1
step benchmark 45 "$py" -m benchmarks.run iteration --config="$config" --iters=10 \
  --nopeak_each_iter --out="$out/benchmark.json"
step seeds 60 "$py" -m benchmarks.run seeds --config="$config" --seeds=0,1,2 --iters=8 \
  --out="$out/seeds.json"
step seeds_parts 70 "$py" -m benchmarks.run seeds --config="$config" --seeds=0,1,2 --iters=4 \
  --parts --out="$out/seeds_parts.json"
step parts 100 "$py" -m benchmarks.run parts --config="$config" --iters=3 --warmup=1 --reps=5 \
  --out="$out/parts.json"
cat "$out/device.txt"; ls "$out"
