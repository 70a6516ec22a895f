"""bench/gpu_check.py: the --tiny CPU run end to end (without the packages the GPU
machine lacks), proof that it trains through the project's Trainer (its optimizer
settings, its loss), the packed-vs-padded verdicts, and the FLOPs arithmetic."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch

from redi.train import train_data, training
from redi.workflow import config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"

# the GPU machine has torch, transformers, accelerate, tensorboard, tqdm, safetensors,
# tokenizers (and pyarrow, which the check does not need): none of these may be needed
ABSENT = ("datasets", "snakemake", "math_verify", "vllm", "deepspeed", "pandas", "pyarrow",
          "matplotlib", "jsonschema", "trl")

# runs the script with ABSENT made unimportable (and invisible to find_spec, which
# transformers and accelerate use to probe optional packages)
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
PHASES = ("sft_varlen", "sft_sdpa", "redi_varlen", "redi_sdpa")


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


# ------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_run(gpu_check: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check") / "summary.json"
    env = {k: v for k, v in os.environ.items() if k != "REDI_ATTENTION"}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(ABSENT), str(SCRIPT), "--tiny", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert gpu_check.SUMMARY_HEADER in proc.stdout
    return {"stdout": proc.stdout, "summary": summary_of(proc.stdout, gpu_check.SUMMARY_HEADER),
            "json": json.loads(out.read_text())}


def test_tiny_run_trains_every_phase(gpu_check: ModuleType, tiny_run: dict) -> None:
    summary = tiny_run["summary"]
    for name in PHASES:
        for key in ("tokens_per_s", "mfu", "hfu", "step_s"):
            assert float(summary[f"{name}_{key}"]) > 0, f"{name}_{key}"
        assert summary[f"{name}_released"] == "True", name  # the phase freed its model
    for stage in ("sft", "redi"):  # REDI_ATTENTION reached the Trainer
        assert summary[f"{stage}_varlen_attention"] == "redi_varlen"
        assert summary[f"{stage}_varlen_layout"] == "packed"
        assert summary[f"{stage}_sdpa_attention"] == "sdpa"
        assert summary[f"{stage}_sdpa_layout"] == "padded"
    for key in ("generation_tokens_per_s", "generation_hf_backend_tokens_per_s"):
        assert float(summary[key]) > 0, key
    assert int(summary["params_non_embedding_N"]) == gpu_check.non_embedding_params(
        gpu_check.TINY_SHAPE)
    assert "MFU = (6*N*tokens" in tiny_run["stdout"]  # the formula is printed
    assert tiny_run["json"]["sft_sdpa_layout"] == "padded"  # --json has the same summary


def test_tiny_run_packed_equals_padded(tiny_run: dict) -> None:
    summary = tiny_run["summary"]
    assert summary["precision"] == "fp32"
    for stage in ("sft", "redi"):
        packed = float(summary[f"{stage}_varlen_first_loss"])
        padded = float(summary[f"{stage}_sdpa_first_loss"])
        assert abs(packed - padded) <= 1e-5 * abs(padded), stage  # fp32: summation order only
        assert summary[f"{stage}_packed_vs_padded_verdict"] == "ok"
    # packed sequences do not see each other; one leaking segment would be visible
    assert summary["isolation_check"] == "ok"
    assert float(summary["isolation_rel_err"]) < 1e-5 < float(summary["isolation_leak_rel_err"])


def test_tiny_run_uses_the_project_optimizer(tiny_run: dict) -> None:
    # read back from the Trainer's own AdamW, not from the check's params
    summary = tiny_run["json"]
    assert summary["optimizer_weight_decay"] == config.OPTIMIZER["weight_decay"]
    assert summary["optimizer_no_decay_weight_decay"] == 0.0
    assert summary["optimizer_eps"] == config.OPTIMIZER["adam_eps"]
    assert summary["optimizer_betas"] == [config.OPTIMIZER["adam_beta1"],
                                          config.OPTIMIZER["adam_beta2"]]
    assert summary["optimizer_max_grad_norm"] == config.OPTIMIZER["max_grad_norm"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_and_tiny_it_refuses() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--tiny" in proc.stderr


# -------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def tiny_setup(gpu_check: ModuleType, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("gpu_check_phase")
    setup = gpu_check.make_setup(gpu_check.parse_args(["--tiny", "--steps", "1"]), work)
    tokenizer = gpu_check.write_model_dir(setup.shape, setup.model_dir, "cpu", torch.float32)
    return setup, tokenizer


def test_phase_runs_the_trainer_with_the_project_settings(
    gpu_check: ModuleType, tiny_setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, tokenizer = tiny_setup
    # the settings are read from redi.workflow.config at run time, not copied into the script
    monkeypatch.setitem(config.OPTIMIZER, "weight_decay", 0.0123)
    losses: list[float] = []
    micro_loss = training.micro_loss

    def spy(module, batch, objective, params, refs=None):  # the Trainer's own loss, observed
        loss, stats = micro_loss(module, batch, objective, params, refs)
        losses.append(float(loss.detach()))
        return loss, stats

    monkeypatch.setattr(training, "micro_loss", spy)
    before = os.environ.get("REDI_ATTENTION")
    packs = gpu_check.make_packs("redi", setup.plan, setup.shape.vocab, random.Random(0))
    phase = gpu_check.run_phase("redi", "varlen", packs, setup, tokenizer, isolation=False)

    assert os.environ.get("REDI_ATTENTION") == before  # restored after the Trainer read it
    assert phase.optimizer["weight_decay"] == 0.0123
    assert phase.layout == "packed" and phase.attention == "redi_varlen"
    steps = setup.plan.warmup + setup.plan.steps
    assert len(losses) == steps  # one micro-batch per step, through redi.train.step.micro_loss
    # the reported loss is the Trainer's: the pair-loss sum over the step's pairs
    assert phase.first_loss == pytest.approx(losses[0] / setup.plan.items_per_step, rel=1e-12)
    run_dir = setup.work_dir / "redi_varlen"
    assert (run_dir / "manifest.json").exists() and (run_dir / "log.csv").exists()
    assert not (run_dir / "checkpoints").exists()  # the check writes no checkpoint
    assert phase.released


def test_order_items_runs_pack_k_at_step_k(gpu_check: ModuleType) -> None:
    plan = gpu_check.TINY_PLAN
    packs = gpu_check.make_packs("sft", plan, 512, random.Random(3))
    seed = config.OPTIMIZER["seed"]
    for shuffle in (seed, None):  # SFT shuffles with the run's seed, stage 2 does not
        items = gpu_check.order_items(packs, shuffle)
        steps = train_data.step_plan(len(items), plan.items_per_step, 1, shuffle)
        for pack, indices in zip(packs, steps, strict=True):
            assert sorted(map(id, pack)) == sorted(id(items[i]) for i in indices)


def test_varlen_preflight_passes_on_cpu(gpu_check: ModuleType) -> None:
    assert gpu_check.varlen_preflight("cpu") is None


def test_verdicts_and_exit_codes(gpu_check: ModuleType) -> None:
    def phase(loss: float) -> ModuleType:
        return gpu_check.Phase(
            name="x", attention="a", layout="packed", steps=1, tokens=1, input_tokens=1,
            elapsed_s=1.0, step_s_mean=1.0, step_s_min=1.0, peak_mem_gib=None, model_flops=1.0,
            hardware_flops=1.0, first_loss=loss, first_grad_norm=1.0, last_loss=loss,
            trainer_tokens_per_s=1.0, build_s=0.0)

    assert gpu_check.compare_losses(phase(12.0), phase(12.0 + 1e-3), 1e-3)["verdict"] == "ok"
    assert gpu_check.compare_losses(phase(12.0), phase(12.1), 1e-3)["verdict"] == "FAIL"
    assert gpu_check.exit_code({"sft_packed_vs_padded_verdict": "ok"}) == 0
    assert gpu_check.exit_code({"redi_packed_vs_padded_verdict": "FAIL"}) == 3
    assert gpu_check.exit_code({"isolation_check": "FAIL"}) == 3
    assert gpu_check.exit_code({"sft_varlen_error": "OOM"}) == 4


# ------------------------------------------------------------------ FLOPs


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


def test_item_lengths(gpu_check: ModuleType) -> None:
    rng = random.Random(0)
    for total, k in ((16384, 4), (2048, 4), (5001, 3)):
        lengths = gpu_check.item_lengths(total, k, 0.25, rng)
        assert len(lengths) == k and sum(lengths) == total
        base = total // k
        assert all(0.75 * base <= n <= 1.25 * base + k for n in lengths)
    # the full plan: every step holds 16,384 real tokens, padded rows pad
    packs = gpu_check.make_packs("redi", gpu_check.FULL_PLAN, 1000, random.Random(1))
    for pack in packs:
        seqs = gpu_check.pack_seqs(pack)
        assert sum(len(s.ids) for s in seqs) == 16384 and len(seqs) == 8
