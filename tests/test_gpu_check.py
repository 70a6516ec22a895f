"""scripts/gpu_check.py: the --tiny CPU run end to end (without the heavy optional
packages) and its FLOPs arithmetic against hand-computed values."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"

# the GPU machine may have torch + transformers only: none of these may be needed
ABSENT = ("accelerate", "datasets", "snakemake", "math_verify", "vllm", "deepspeed", "pandas",
          "pyarrow", "matplotlib", "tensorboard", "jsonschema", "trl")

# runs the script with ABSENT made unimportable (and invisible to find_spec, which
# transformers uses to probe optional packages)
RUNNER = textwrap.dedent(
    """
    import importlib.abc, importlib.util, runpy, sys
    absent = set(sys.argv[1].split(","))
    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in absent:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Absent())
    find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a, **k: (
        None if name.split(".")[0] in absent else find_spec(name, *a, **k))
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return load_script()


def summary_of(stdout: str, header: str) -> dict[str, str]:
    lines = stdout.split(header, 1)[1].strip().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def test_tiny_run_on_cpu(gpu_check: ModuleType) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(ABSENT), str(SCRIPT), "--tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert gpu_check.SUMMARY_HEADER in proc.stdout
    summary = summary_of(proc.stdout, gpu_check.SUMMARY_HEADER)
    for key in ("sft_tokens_per_s", "redi_tokens_per_s", "generation_tokens_per_s",
                "generation_hf_backend_tokens_per_s", "sft_mfu", "redi_mfu"):
        assert float(summary[key]) > 0, key
    assert summary["packing_check"] == "ok"
    assert int(summary["params_non_embedding_N"]) == gpu_check.non_embedding_params(
        gpu_check.TINY_SHAPE)
    assert "MFU = (6*N*tokens" in proc.stdout  # the formula is printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_and_tiny_it_refuses() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--tiny" in proc.stderr


def test_model_flops_by_hand(gpu_check: ModuleType) -> None:
    # N = 1000, sequences of 10 and 20 tokens, 2 layers, hidden 8:
    # 6 * 1000 * 30 = 180,000; attention 6 * 2 * 2 * (10^2 + 20^2) * 8 / 2 = 48,000
    assert gpu_check.attention_flops([10, 20], layers=2, hidden=8) == 48_000
    assert gpu_check.model_flops(1000, [10, 20], layers=2, hidden=8) == 228_000


def test_hardware_flops_by_hand(gpu_check: ModuleType) -> None:
    shape = gpu_check.Shape(hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, vocab=50,
                            max_positions=64, rope_theta=1e4)
    # model 228,000 + LM head 3 * 2*50*8*12 = 28,800 (+ recompute 9,600)
    # + GC re-forward 2 * 1000 * 30 = 60,000 and 48,000 / 3 = 16,000
    plain = gpu_check.hardware_flops(1000, [10, 20], shape, 12, False, False)
    assert plain == 228_000 + 28_800
    full = gpu_check.hardware_flops(1000, [10, 20], shape, 12, True, True)
    assert full == 228_000 + 28_800 + 9_600 + 60_000 + 16_000


def test_paper_shape_parameter_count(gpu_check: ModuleType) -> None:
    # per layer: q 1536^2+1536, k/v 2*(1536*256+256), o 1536^2, MLP 3*1536*8960, 2 norms
    per_layer = 2_360_832 + 786_944 + 2_359_296 + 41_287_680 + 3_072
    n = gpu_check.non_embedding_params(gpu_check.PAPER_SHAPE)
    assert n == 28 * per_layer + 1536 == 1_310_340_608
    # + the tied 151,936 x 1,536 embedding: Qwen2.5-Math-1.5B's 1.54B parameters
    assert n + 151_936 * 1536 == 1_543_714_304


def test_split_lengths(gpu_check: ModuleType) -> None:
    import random

    rng = random.Random(0)
    for total in (16384, 2048, 5000):
        lengths = gpu_check.split_lengths(total, 1024 if total > 2048 else 128, 6144, rng)
        assert sum(lengths) == total
        assert all(n >= (1024 if total > 2048 else 128) and n <= 6144 for n in lengths)
