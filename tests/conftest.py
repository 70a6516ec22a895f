"""Shared fixtures: a copy of the workflow in a temporary directory, run helpers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from redi import sources

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BENCHMARKS_DIR = SHARED / "benchmarks"


# the venv of scripts/setup_vllm_cpu.sh (configs/tiny_vllm.yaml's eval.python)
VLLM_PYTHON = Path(os.environ.get("REDI_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))


def require_vllm() -> Path:
    """The real engine's interpreter; a test without it is skipped, except in CI, where
    it fails (.ci/run makes the venv)."""
    if not VLLM_PYTHON.is_file():
        reason = f"no vLLM venv at {VLLM_PYTHON} (bash scripts/setup_vllm_cpu.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return VLLM_PYTHON


def copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow (Snakemake writes .snakemake/ and results/ there)."""
    return sources.copy_workflow(dest)


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 1800,
              env: dict[str, str] | None = None):
    """Run the snakemake CLI in ``workdir`` (extra environment ``env``); returns the
    CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(workdir), **(env or {})}
    cmd = [str(Path(sys.executable).with_name("snakemake")), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def planned_jobs(proc) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    jobs = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="session")
def data_workflow(tmp_path_factory) -> Path:
    """The tiny preset's data stage, run for real once per test session."""
    workdir = copy_workflow(tmp_path_factory.mktemp("data_workflow"))
    snakemake(workdir, "--cores", "2", "results/data/report.json")
    return workdir


# ------------------------------------------------------- tiny training inputs


def toy_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
        good, bad = a + b * c, a + b * c + rng.choice([-2, -1, 1, 2])
        trace = "<think>\n{a}+{b}*{c}\n={a}+{p}\n={r}\n</think>\nThe result is $\\boxed{{{r}}}$."
        rows.append(
            {
                "problem": f"Compute {a}+{b}*{c}",
                "answer": str(good),
                "response": trace.format(a=a, b=b, c=c, p=b * c, r=good),
                "chosen": trace.format(a=a, b=b, c=c, p=b * c, r=good),
                "rejected": trace.format(a=a, b=b, c=c, p=bad - a, r=bad)
                + " Wait" * rng.randint(0, 6),
            }
        )
    return rows


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny base model folder (tokenizer + random Qwen2), sft.parquet and pairs.parquet."""
    from redi.model import base_model

    root = tmp_path_factory.mktemp("tiny_train")
    rows = toy_rows(20, seed=0)
    texts = [r["problem"] for r in rows] + [r["response"] + r["rejected"] for r in rows]
    tokenizer = base_model.train_tokenizer(texts * 5, vocab_size=300)
    params = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "seed": 0,
    }
    model = base_model.tiny_model(tokenizer, params)
    base_model.save(model, tokenizer, root / "base")
    frame = pd.DataFrame(rows)
    frame[["problem", "answer", "response"]].to_parquet(root / "sft.parquet")
    frame[["problem", "answer", "chosen", "rejected"]].to_parquet(root / "pairs.parquet")
    return {
        "root": root,
        "base": root / "base",
        "sft": root / "sft.parquet",
        "pairs": root / "pairs.parquet",
    }


def write_raw_corpus(folder: Path, n: int, seed: int) -> str:
    """``n`` toy problems as a raw corpus (``problem``, ``generations``) in ``folder``:
    what the tiny tokenizer trains on."""
    rows = [{"problem": r["problem"], "generations": [r["chosen"], r["rejected"]]}
            for r in toy_rows(n, seed=seed)]
    path = folder / "raw_toy.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


class FakeQwenTokenizer:
    """What the tokenizer and base-model stages use of a Qwen tokenizer: its chat
    template's turn end (``<|im_end|>``), eos and pad (tests add ``save_pretrained``)."""

    eos_token = pad_token = "<|endoftext|>"
    eos_token_id = pad_token_id = 2
    bos_token_id = None
    chat_template = "a Qwen template"

    def get_vocab(self):
        return {"<|im_end|>": 1, "<|endoftext|>": 2}

    def convert_tokens_to_ids(self, token):
        return self.get_vocab()[token]

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


# ------------------------------------------------- tiny models shared by several test files

PROBLEMS = ["Evaluate 3+4.", "Evaluate from left to right: 12-5+7-1", "Compute 2*9", "x"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init Qwen2 (2 layers, GQA) with the project's tokenizer and chat template."""
    import torch

    from redi.data.prompts import EVAL_USER_TEMPLATE, SYSTEM_PROMPT
    from redi.model.base_model import save, tiny_model, train_tokenizer

    texts = [SYSTEM_PROMPT, EVAL_USER_TEMPLATE, "<think>\n1+2\n=3\n</think>\n$\\boxed{3}$",
             *PROBLEMS] * 10
    tokenizer = train_tokenizer(texts, vocab_size=320)
    params = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 1024, "rope_theta": 10000.0, "seed": 0}
    model = tiny_model(tokenizer, params)
    with torch.no_grad():  # large random weights: context-dependent, varied outputs
        gen = torch.Generator().manual_seed(0)
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.copy_(torch.randn(weight.shape, generator=gen) * 0.3)
    out = tmp_path_factory.mktemp("tiny_model") / "model"
    save(model, tokenizer, out)
    return out


@pytest.fixture(scope="module")
def sft_run(tiny) -> dict:
    """A 2-epoch SFT run of the ``tiny`` fixture's model (its manifest and folder)."""
    from redi.train import training
    from tests.support.training import sft_params

    run_dir = tiny["root"] / "sft_2ep"
    manifest = training.run_sft(
        sft_params(), tiny["sft"], tiny["base"], run_dir / "manifest.json", run_dir / "log.csv"
    )
    return {"manifest": manifest, "dir": run_dir, "manifest_path": run_dir / "manifest.json"}
