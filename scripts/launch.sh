#!/usr/bin/env bash
# Launch a training entry point as N processes (N = the rule's `resources: gpu`).
# Usage: scripts/launch.sh N script.py [args...]
#
#   N > 0, CUDA present:  accelerate launch over N GPUs with the shipped DeepSpeed
#                         ZeRO-2 config (configs/accelerate_zero2.yaml)
#   N > 1, no CUDA:       torchrun with N CPU processes (gloo), so the multi-rank
#                         path runs on any machine; ZeRO-2 on the CPU (DeepSpeed
#                         with DS_ACCELERATOR=cpu) as on the cluster
#   otherwise:            one plain python process
#
# REDI_STRATEGY=ddp uses plain data parallelism instead of ZeRO-2 (both cases).
set -euo pipefail
nproc="$1"; shift
strategy="${REDI_STRATEGY:-zero2}"
case "$strategy" in
    zero2|ddp) ;;
    *) echo "launch.sh: REDI_STRATEGY=$strategy: expected zero2 or ddp" >&2; exit 2 ;;
esac
cuda=0
if [ "$nproc" -gt 0 ] && python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    cuda=1
fi
if [ "$cuda" = 1 ]; then
    if [ "$strategy" = ddp ]; then
        exec accelerate launch --multi_gpu --num_machines 1 --num_processes "$nproc" "$@"
    fi
    exec accelerate launch --num_processes "$nproc" --config_file configs/accelerate_zero2.yaml "$@"
fi
if [ "$nproc" -gt 1 ]; then
    if [ "$strategy" = zero2 ]; then
        if ! python -c 'import deepspeed' 2>/dev/null; then
            echo "launch.sh: $nproc CPU processes with ZeRO-2 need deepspeed" \
                 "(pip install deepspeed==0.19.8), or set REDI_STRATEGY=ddp" >&2
            exit 2
        fi
        # what `accelerate launch --config_file configs/accelerate_zero2.yaml` sets
        export ACCELERATE_USE_DEEPSPEED=true
        export ACCELERATE_DEEPSPEED_CONFIG_FILE="${ACCELERATE_DEEPSPEED_CONFIG_FILE:-configs/deepspeed_zero2.json}"
        export DS_ACCELERATOR=cpu
    fi
    # --standalone: a free rendezvous port, so several jobs can run side by side;
    # "--": the job's own options (--log ...) are not torchrun's
    exec python -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node "$nproc" -- "$@"
fi
exec python "$@"
