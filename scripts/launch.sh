#!/usr/bin/env bash
# Launch a training entry point: `accelerate launch` over N GPUs with the
# shipped DeepSpeed ZeRO-2 config when N > 0 and CUDA is present, else one
# CPU process. Usage: scripts/launch.sh N script.py [args...]
set -euo pipefail
ngpu="$1"; shift
if [ "$ngpu" -gt 0 ] && python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    exec accelerate launch --num_processes "$ngpu" --config_file configs/accelerate_zero2.yaml "$@"
fi
exec python "$@"
