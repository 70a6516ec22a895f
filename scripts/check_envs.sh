#!/usr/bin/env bash
# Maintainers: check that the pip part of each envs/*.yaml resolves as one set on a
# Linux x86_64 / CPython 3.11 cluster node (what `snakemake --sdm conda` will install).
# Resolution only (`pip install --dry-run`): nothing is installed, but pip may fetch
# package metadata and, where an index serves none, whole wheels (the CUDA builds of
# torch are GBs) -- so this is NOT part of the test suite.
#
#   bash scripts/check_envs.sh                 # every env
#   bash scripts/check_envs.sh envs/vllm.yaml  # one
#
# Prints the resolved torch / transformers / CUDA-runtime versions of each env.
# Packages PyPI ships as source only (deepspeed) cannot be resolved for another
# platform; for those the pinned source release is fetched (a few MB) to prove it exists.
set -euo pipefail
SOURCE_ONLY="deepspeed"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
envs=("$@")
[ ${#envs[@]} -gt 0 ] || envs=(envs/*.yaml)
status=0
for env in "${envs[@]}"; do
    reqs=$(python - "$env" <<'EOF'
import sys, yaml
deps = yaml.safe_load(open(sys.argv[1]))["dependencies"]
pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])
print("\n".join(pip))
EOF
)
    if [ -z "$reqs" ]; then
        echo "== $env: no pip section (conda packages only)"
        continue
    fi
    sources=$(echo "$reqs" | grep -E "^($(echo $SOURCE_ONLY | tr ' ' '|'))([=<>\[]|$)" || true)
    reqs=$(echo "$reqs" | grep -vE "^($(echo $SOURCE_ONLY | tr ' ' '|'))([=<>\[]|$)" || true)
    for pin in $sources; do
        if pip download --isolated --quiet --no-deps --no-binary=:all: -d "$(mktemp -d)" "$pin"; then
            echo "== $env: $pin exists (source release; built on the node)"
        else
            echo "== $env: $pin NOT found"
            status=1
        fi
    done
    report=$(mktemp)
    # shellcheck disable=SC2086
    # --isolated: PyPI as a cluster node sees it, not this machine's pip config or caches
    if pip install --isolated --dry-run --quiet --ignore-installed --report "$report" \
            --only-binary=:all: --python-version 3.11 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --target "$(mktemp -d)" $reqs; then
        echo "== $env: resolves"
        python - "$report" <<'EOF'
import json, sys
got = {i["metadata"]["name"].lower(): i["metadata"]["version"]
       for i in json.load(open(sys.argv[1]))["install"]}
for name in sorted(got):
    if name in ("torch", "transformers", "vllm", "deepspeed", "accelerate") or \
            name.startswith(("nvidia-cuda-runtime", "nvidia-nccl", "cuda-toolkit")):
        print(f"   {name}=={got[name]}")
EOF
    else
        echo "== $env: does NOT resolve (see pip's message above)"
        status=1
    fi
    rm -f "$report"
done
exit $status
