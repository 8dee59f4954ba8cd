#!/usr/bin/env bash
# One host, several GPUs: the cohort axis is sharded over all local devices (jax.make_mesh),
# parameters replicated. Cohorts are the GPU default (execution.cohort_size=-1).
#   launch/multi_gpu.sh configs/cifar10.py /data runs/cifar10 [--config.x=v ...]
set -euo pipefail
config=${1:?config}; data=${2:?data dir}; workdir=${3:?workdir}; shift 3
exec python -m gas_jax.main --config="$config" --config.data.dir="$data" \
  --workdir="$workdir" --config.execution.devices=0 "$@"
