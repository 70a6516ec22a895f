#!/usr/bin/env bash
# Prepared single-GPU check (training throughput/MFU, hf generation speed); see
# scripts/gpu_check.py. Usage: bash scripts/gpu_check.sh [--precision amp] [--json out.json]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repo root: gpu_check.py imports redi from it
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
fi
"${PYTHON:-python}" scripts/gpu_check.py "$@"  # PYTHON=python3 where no python
