#!/usr/bin/env bash
# Prepared single-GPU check: SFT and REDI steps of a Qwen2.5-Math-1.5B-shaped model
# through the project's Trainer (packed varlen and padded SDPA), then hf generation
# speed; see bench/gpu_check.py. Usage:
#   bash bench/gpu_check.sh [--json out.json] [--attention sdpa] [--peak-tflops 989] ...
# Exit status: 0 ok, 2 no CUDA, 3 packed and padded disagree, 4 a phase failed,
# 124 it ran past GPU_CHECK_TIMEOUT seconds (default 480: a rerun still fits a lease).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repo root: gpu_check.py imports redi from it
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
fi
python="${PYTHON:-python}"  # PYTHON=python3 where there is no python
if command -v timeout >/dev/null 2>&1; then
    exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$python" bench/gpu_check.py "$@"
fi
exec "$python" bench/gpu_check.py "$@"
