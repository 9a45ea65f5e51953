#!/usr/bin/env bash
# Local multi-process launch: N DeepSpeed ranks on this machine through torchrun.
# Same as `ift train CONFIG [overrides] --nproc-per-node N`.
#   launch/local.sh 2 configs/demo.yaml train.zero_stage=3
set -euo pipefail
nproc="${1:?usage: launch/local.sh NPROC CONFIG [key.sub=value ...]}"
shift
exec python -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m ift train "$@"
