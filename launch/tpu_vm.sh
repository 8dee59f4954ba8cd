#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice). Run on every worker, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --worker=all --command \
#     "cd gas-jax && launch/tpu_vm.sh configs/cifar10.py ~/data ~/runs/c10"
# jax.distributed.initialize() discovers the pod's processes; every process runs the same
# host-side schedule (it depends only on the seed). A single-host TPU VM works like a multi-GPU
# host (cohort axis sharded over its chips). Multi-host pod slices are not yet tested.
set -euo pipefail
config=${1:?config}; data=${2:?data dir}; workdir=${3:?workdir}; shift 3
pip install -q -r requirements.txt "jax[tpu]==0.10.2" && pip install -q -e .
exec python -m gas_jax.main --distributed --config="$config" --config.data.dir="$data" \
  --workdir="$workdir" "$@"
