"""Training rules in Snakemake: a real run of a cheap subset, rerun triggers, the paper DAG.

The data stage is replaced by small real files (a tiny random Qwen2 with its
tokenizer, 24 SFT examples, 20 pairs), so that the real run of SFT-3ep, its
reference log-probs and two stage-2 runs takes seconds. The other runs are
recorded with ``--touch`` (Snakemake stores their params as if they had run),
which makes the dry-run job lists after a config edit exact.
"""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from redi.model import base_model
from tests.conftest import copy_workflow, planned_jobs, snakemake, toy_rows

REAL_RUNS = ["dpo_b0.001_lr2e-7", "redi_a0.8_lr1e-6"]


def config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config.yaml").read_text())


def training_targets(workdir: Path, extra_runs: tuple[str, ...] = ()) -> list[str]:
    cfg = config(workdir)
    # the primary base model's runs (Table 4's other base models have data stages of their own)
    primary = [r for r, spec in cfg["runs"].items() if spec["init"].startswith("sft_")]
    runs = [f"sft_{e}ep" for e in cfg["sft_epochs"]] + primary + list(extra_runs)
    return [f"results/train/{r}/manifest.json" for r in runs]


def fake_data_stage(workdir: Path) -> None:
    """Outputs of the data rules, oldest first (so that Snakemake sees them up to date)."""
    data = workdir / "results" / "data"
    (data / "toy_benchmarks").mkdir(parents=True)
    pd.DataFrame({"problem": ["x"]}).to_parquet(data / "raw_toy.parquet")
    (data / "toy_benchmarks" / "toy_arith.json").write_text("[]")
    rows = toy_rows(24, seed=1)
    texts = [r["problem"] for r in rows] + [r["response"] + r["rejected"] for r in rows]
    tokenizer = base_model.train_tokenizer(texts * 5, vocab_size=400)
    model = base_model.tiny_model(
        tokenizer,
        {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_theta": 10000.0,
            "seed": 0,
        },
    )
    time.sleep(0.05)
    base_model.save(model, tokenizer, workdir / "results" / "models" / "base")
    time.sleep(0.05)
    frame = pd.DataFrame(rows)
    frame[["problem", "answer", "response"]].to_parquet(data / "sft_unfiltered.parquet")
    frame.to_parquet(data / "pairs_unfiltered.parquet")
    (data / "filter_report.json").write_text("{}")
    time.sleep(0.05)
    frame[["problem", "answer", "chosen", "rejected"]].iloc[:20].to_parquet(data / "pairs.parquet")
    frame[["problem", "answer", "response"]].to_parquet(data / "sft.parquet")
    (data / "sft_length_report.json").write_text("{}")
    (data / "length_report.json").write_text("{}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("train_workflow"))
    fake_data_stage(workdir)
    real = [f"results/train/{r}/manifest.json" for r in REAL_RUNS]
    plan = planned_jobs(snakemake(workdir, "-n", *real))
    assert plan == {"sft": 1, "ref_logps": 1, "stage2": 2}  # the data stage is up to date
    snakemake(workdir, "--cores", "2", *real)
    # every other training job: recorded as run (params stored), outputs stubbed
    targets = training_targets(workdir)
    snakemake(workdir, "--touch", "--cores", "1", *targets)
    for target in targets:
        path = workdir / target
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text('{"stub": true}\n')
            (path.parent / "log.csv").write_text("step\n")
    return workdir


def test_real_run_outputs(trained):
    sft = json.loads((trained / "results/train/sft_3ep/manifest.json").read_text())
    # 24 examples, global batch 16: 2 steps per epoch; checkpoints at the epoch ends
    assert sft["total_steps"] == 6 and [c["epoch"] for c in sft["checkpoints"]] == [1, 2, 3]
    assert sft["final_checkpoint"] == "results/train/sft_3ep/checkpoints/step-000006"
    assert sft["init"] == "results/models/base"
    assert (trained / sft["final_checkpoint"] / "model.safetensors").exists()
    ref = pd.read_parquet(trained / "results/train/ref_logps/sft_3ep.parquet")
    assert len(ref) == 20 and (ref["ref_chosen_logps"] < 0).all()
    for run in REAL_RUNS:
        manifest = json.loads((trained / f"results/train/{run}/manifest.json").read_text())
        assert manifest["init"] == sft["final_checkpoint"]
        assert manifest["params"]["lr"] == pytest.approx(
            config(trained)["runs"][run]["lr"]
            * config(trained)["presets"]["tiny"]["stage2"]["lr_scale"]
        )
        with open(trained / manifest["log"]) as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == manifest["total_steps"] == 2
        assert (rows[0]["reward_margin"] != "") == run.startswith("dpo")
        assert (trained / f"results/logs/stage2/{run}.log").stat().st_size > 0
    assert (trained / "results/logs/sft/sft_3ep.log").exists()


def test_nothing_to_do_after_the_run(trained):
    proc = snakemake(trained, "-n", *training_targets(trained))
    assert planned_jobs(proc) == {}


def override(workdir: Path, name: str, content: dict) -> str:
    path = workdir / name
    path.write_text(yaml.safe_dump(content))
    return str(path)


def reasons(proc) -> str:
    return proc.stdout + proc.stderr


def test_changing_one_lr_reruns_only_that_run(trained):
    # a touched run's LR, a really trained run's LR and a DPO beta (the shared
    # reference log-probs stay): exactly those three jobs
    changed = {
        "redi_a0.5_lr1e-6": {"lr": 3.0e-6},
        "redi_a0.8_lr1e-6": {"lr": 3.0e-6},
        "dpo_b0.001_lr2e-7": {"beta": 0.002},
    }
    cfg = override(trained, "lr.yaml", {"runs": changed})
    proc = snakemake(trained, "-n", *training_targets(trained), "--configfile", cfg)
    assert planned_jobs(proc) == {"stage2": 3}
    for run in changed:
        assert f"results/train/{run}/manifest.json" in reasons(proc)
    assert "Params have changed" in reasons(proc)


def test_adding_a_run_plans_only_that_run(trained):
    new = {"redi_a0.9_lr1e-6": {"objective": "redi", "init": "sft_3ep", "lr": 1.0e-6, "alpha": 0.9}}
    cfg = override(trained, "add.yaml", {"runs": new})
    proc = snakemake(trained, "-n", *training_targets(trained, tuple(new)), "--configfile", cfg)
    assert planned_jobs(proc) == {"stage2": 1}
    assert "results/train/redi_a0.9_lr1e-6/manifest.json" in reasons(proc)
    # a DPO run from the other SFT model also needs that model's reference log-probs
    new = {
        "dpo_b0.01_lr1e-6_sft5ep": {
            "objective": "dpo",
            "init": "sft_5ep",
            "lr": 1.0e-6,
            "beta": 0.01,
        }
    }
    cfg = override(trained, "add.yaml", {"runs": new})
    proc = snakemake(trained, "-n", *training_targets(trained, tuple(new)), "--configfile", cfg)
    assert planned_jobs(proc) == {"ref_logps": 1, "stage2": 1}


def test_sft_change_reruns_everything_downstream(trained):
    cfg = override(trained, "sft.yaml", {"presets": {"tiny": {"sft": {"lr": 1.0e-3}}}})
    proc = snakemake(trained, "-n", *training_targets(trained), "--configfile", cfg)
    assert planned_jobs(proc) == {"sft": 2, "ref_logps": 1, "stage2": 21}
    cfg = override(trained, "s2.yaml", {"presets": {"tiny": {"stage2": {"save_every_steps": 5}}}})
    proc = snakemake(trained, "-n", *training_targets(trained), "--configfile", cfg)
    assert planned_jobs(proc) == {"stage2": 21}  # the reference log-probs do not depend on it


def shell_params(text: str, script: str) -> list[dict]:
    """The --params JSON of every planned shell command running ``script``."""
    found = []
    for line in text.splitlines():
        if script in line and "--params" in line:
            match = re.search(r"--params '(\{.*?\})'", line)
            found.append(json.loads(match.group(1)))
    return found


def test_paper_dry_run(tmp_path):
    workdir = copy_workflow(tmp_path / "paper")
    proc = snakemake(workdir, "-n", "-p", "--config", "preset=paper")
    jobs = planned_jobs(proc)
    # the 21 runs of the primary base model + Table 4's REDI runs (their SFT runs: base_sft)
    assert jobs["sft"] == 2 and jobs["ref_logps"] == 1 and jobs["stage2"] == 23
    assert jobs["base_sft"] == 2
    text = reasons(proc)
    sft = {p["run"]: p for p in shell_params(text, "scripts/train_sft.py")}
    assert set(sft) == {"sft_3ep", "sft_5ep", "llama3b_sft_3ep", "qwen7b_sft_3ep"}
    # Table 4's Qwen2.5-Math-7B: the preset's SFT section with its smaller micro-batch
    assert sft["qwen7b_sft_3ep"] == {**sft["sft_3ep"], "run": "qwen7b_sft_3ep", "micro_batch": 4}
    for epochs, p in ((3, sft["sft_3ep"]), (5, sft["sft_5ep"])):
        assert p["epochs"] == epochs and p["lr"] == 5e-5 and p["global_batch"] == 128
        assert p["max_length"] == 32768 and p["gradient_checkpointing"] is True
        assert (
            p["adam_beta1"],
            p["adam_beta2"],
            p["adam_eps"],
            p["weight_decay"],
            p["warmup_ratio"],
            p["max_grad_norm"],
            p["seed"],
        ) == (0.9, 0.999, 1e-8, 1e-4, 0.1, 1.0, 42)
    stage2 = {p["run"]: p for p in shell_params(text, "scripts/train_stage2.py")}
    assert len(stage2) == 23
    assert all(
        p["global_batch"] == 32
        and p["epochs"] == 1
        and p["max_prompt_length"] == 800
        and p["max_length"] == 19800
        and p["lr"] == p["paper_lr"]
        for p in stage2.values()
    )
    assert (stage2["dpo_b0.001_lr2e-7"]["lr"], stage2["dpo_b0.001_lr2e-7"]["beta"]) == (2e-7, 0.001)
    assert (
        stage2["simpo_b2_g1_lr5e-7"]["beta"],
        stage2["simpo_b2_g1_lr5e-7"]["gamma"],
        stage2["simpo_b2_g1_lr5e-7"]["lr"],
    ) == (2.0, 1.0, 5e-7)
    assert (stage2["redi_a0.8_lr1e-6"]["alpha"], stage2["redi_a0.8_lr1e-6"]["lr"]) == (0.8, 1e-6)
    assert stage2["redi_a0.8_lr1e-6_sft5ep"]["init"] == "sft_5ep"
    # DPO runs get the reference log-probs of their init; the others do not
    lines = [line for line in text.splitlines() if "scripts/train_stage2.py --params" in line]
    assert (
        sum("--ref-logps results/train/ref_logps/sft_3ep.parquet" in line for line in lines) == 11
    )
    assert all("scripts/launch.sh 8 scripts/train_stage2.py" in line for line in lines)
