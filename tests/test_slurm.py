"""The slurm profile executed on a real one-node SLURM (scripts/slurm_one_node.sh).

One smoke run (scripts/slurm_smoke.py) through the scheduler: the data stage, SFT ->
reference log-probs -> a DPO run on 2 fake GPUs (2 CPU ranks), the evaluation of its
checkpoints; its stage-2 job gets SLURM's time-limit warning (SIGUSR1) after its first
checkpoint, stops at a step boundary, and the profile's retry resumes it. The same jobs run locally beside it as the reference. Skipped, with
the reason, only where SLURM cannot start (not root, packages missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from redi.workflow import slurm_smoke
from tests.conftest import ROOT

RUN = "dpo_b0.1_lr1e-6"
SETUP = ROOT / "scripts" / "slurm_one_node.sh"
SMOKE = ROOT / "scripts" / "slurm_smoke.py"
# every snakemake call is bounded: the smoke script kills it and cancels its jobs
SMOKE_TIMEOUT_MIN = 8


def controller_up() -> bool:
    return subprocess.run(["bash", str(SETUP), "status"], capture_output=True,
                          timeout=30, check=False).returncode == 0


@pytest.fixture(scope="module")
def cluster():
    """A running controller: the one CI started (left running), else one started here
    and stopped after the module."""
    if controller_up():
        yield
        return
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        pytest.skip("SLURM cannot start here: needs root and Debian's slurmctld, slurmd, "
                    "slurm-client, munge (bash scripts/slurm_one_node.sh start --install)")
    start = subprocess.run(["bash", str(SETUP), "start", "--gpus", "2"], capture_output=True,
                           text=True, timeout=120, check=False)
    if start.returncode != 0:
        pytest.skip(f"SLURM did not start: {start.stderr[-2000:]}")
    try:
        yield
    finally:
        subprocess.run(["bash", str(SETUP), "stop"], check=False, timeout=120)


def checkpoint_with_state(run_dir: Path) -> bool:
    return any(run_dir.glob("checkpoints/step-*/resume/trainer_state.json"))


def warn_stage2_after_first_checkpoint(workdir: Path, warned: list[str],
                                       deadline: float) -> None:
    """Once the stage-2 job has saved a checkpoint, send its steps SIGUSR1, as SLURM does
    ``stop_warning_s`` before a job's time limit (``--signal=USR1@N``)."""
    run_dir = workdir / "results" / "train" / RUN
    while time.monotonic() < deadline and not checkpoint_with_state(run_dir):
        time.sleep(0.2)
    queue = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"],
                           capture_output=True, text=True, check=False).stdout
    for line in queue.splitlines():
        job_id, _, comment = line.partition(" ")
        if comment.startswith("rule_stage2"):
            subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
            warned.append(job_id)


def smoke(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SMOKE), "--workdir", str(workdir), "--train-gpus", "2",
         "--eval-gpus", "0", "--timeout-min", str(SMOKE_TIMEOUT_MIN), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    slurm_dir, local_dir = root / "slurm", root / "local"
    started = time.monotonic()
    on_slurm = smoke(slurm_dir, "--status-seconds", "1")
    warned: list[str] = []
    warner = threading.Thread(target=warn_stage2_after_first_checkpoint,
                              args=(slurm_dir, warned, started + SMOKE_TIMEOUT_MIN * 60))
    warner.start()
    local = smoke(local_dir, "--local")  # the reference, beside it
    # the smoke script kills its snakemake at SMOKE_TIMEOUT_MIN; this bounds the script
    local_out, _ = local.communicate(timeout=SMOKE_TIMEOUT_MIN * 60 + 120)
    slurm_out, _ = on_slurm.communicate(timeout=SMOKE_TIMEOUT_MIN * 60 + 120)
    warner.join()
    print(f"SLURM smoke run with the local reference beside it: "
          f"{time.monotonic() - started:.0f} s")
    return {"slurm": slurm_dir, "local": local_dir, "warned": warned,
            "slurm_rc": on_slurm.returncode, "slurm_out": slurm_out,
            "local_rc": local.returncode, "local_out": local_out}


def test_the_smoke_run_passes_through_slurm_and_locally(runs):
    assert runs["local_rc"] == 0, runs["local_out"]
    assert runs["slurm_rc"] == 0, runs["slurm_out"] + (runs["slurm"] / "smoke.log").read_text()
    report = runs["slurm_out"]
    for check in ("ok   data stage", "ok   training sft_3ep: 2 rank(s)",
                  f"ok   training {RUN}: 2 rank(s)", "ok   evaluation", "smoke test: passed"):
        assert check in report, report
    # the jobs really went through the scheduler (the stage-2 job twice: its retry)
    submitted, finished, failed = slurm_smoke.job_counts(
        (runs["slurm"] / "smoke.log").read_text())
    # (the tiny base model's pretraining too: CPU work, not a download)
    assert {rule: submitted[rule] for rule in ("toy_corpus", "tokenizer", "base_model",
                                               "filter_data", "sft", "ref_logps", "stage2",
                                               "eval_curve")} == {
        "toy_corpus": 1, "tokenizer": 1, "base_model": 1, "filter_data": 1, "sft": 1,
        "ref_logps": 1, "stage2": 2, "eval_curve": 2}
    assert submitted["data_report"] == 0 and finished["data_report"] == 1  # a local rule
    assert finished["stage2"] == 1 and failed["stage2"] == 1
    # the training jobs carried the warning request of the tiny preset
    assert "--signal=USR1@120" in (runs["slurm"] / "smoke.log").read_text()


def test_the_data_stage_equals_the_local_run(runs):
    for name in ("sft.parquet", "pairs.parquet"):
        on_slurm = pd.read_parquet(runs["slurm"] / "results" / "data" / name)
        local = pd.read_parquet(runs["local"] / "results" / "data" / name)
        assert len(on_slurm) > 0
        pd.testing.assert_frame_equal(on_slurm, local)


def final_weights(workdir: Path, run: str) -> dict[str, torch.Tensor]:
    manifest = json.loads((workdir / "results" / "train" / run / "manifest.json").read_text())
    return load_file(workdir / manifest["final_checkpoint"] / "model.safetensors")


def test_the_warned_stage2_job_stops_is_retried_and_resumes_to_the_local_weights(runs):
    assert len(runs["warned"]) == 1, "the stage-2 job was never seen running"
    # the warned attempt stopped at a step boundary (its SLURM log), the retry resumed there
    slurm_log = next((runs["slurm"] / ".snakemake" / "slurm_logs" / "rule_stage2").rglob(
        f"{runs['warned'][0]}.log")).read_text()
    stopped = re.search(rf"{RUN}: stopped by a signal after step (\d+)/", slurm_log)
    assert stopped, slurm_log[-3000:]
    log = (runs["slurm"] / "results" / "logs" / "stage2" / f"{RUN}.log").read_text()
    assert f"resumed {RUN} at step {stopped.group(1)}/" in log, log[-3000:]
    for run in ("sft_3ep", RUN):
        manifest = json.loads(
            (runs["slurm"] / "results" / "train" / run / "manifest.json").read_text())
        assert manifest["world_size"] == 2, run
        on_slurm, local = final_weights(runs["slurm"], run), final_weights(runs["local"], run)
        assert on_slurm.keys() == local.keys()
        assert all(torch.equal(on_slurm[k], local[k]) for k in local), run


def test_the_evaluation_job_gives_the_local_curve(runs):
    curve = f"results/eval/curves/{RUN}.csv"
    on_slurm = pd.read_csv(runs["slurm"] / curve)
    local = pd.read_csv(runs["local"] / curve)
    assert len(on_slurm) == len(local) >= 3
    timing = ["tokens_per_s", "elapsed_s"]  # of the training steps, measured
    pd.testing.assert_frame_equal(on_slurm.drop(columns=timing), local.drop(columns=timing))


# ------------------------------------------------- the smoke script's parts, no cluster


def test_the_overlay_splits_the_batch_over_the_gpus():
    assert slurm_smoke.overlay(2, 0, None) == {"presets": {"tiny": {
        "resources": {"train_gpus": 2, "eval_gpus": 0},
        "sft": {"micro_batch": 8}, "stage2": {"micro_batch": 8}}}}
    vllm = slurm_smoke.overlay(0, 0, "/env/bin/python")["presets"]["tiny"]
    assert vllm["eval"] == {"backend": "vllm", "python": "/env/bin/python", "cpu_engines": 2,
                            "dtype": "float32"}
    assert vllm["resources"]["jobs"]["final_eval"]["mem_mb"] == 10000
    with pytest.raises(ValueError, match="--train-gpus 3"):
        slurm_smoke.overlay(3, 0, None)


def test_the_command_puts_the_targets_before_options_that_take_many_words(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no conda
    cmd = slurm_smoke.snakemake_command("dpo_x", False, "squeue", ["-p"], status_seconds=2)
    assert cmd[1:4] == slurm_smoke.targets("dpo_x")
    assert cmd[cmd.index("--slurm-status-command") + 1] == "squeue"
    assert cmd[cmd.index("--slurm-init-seconds-before-status-checks") + 1] == "2"
    assert cmd[cmd.index("--software-deployment-method") + 1] == "env-modules"
    assert cmd[-1] == "-p" and "--profile" in cmd
    local = slurm_smoke.snakemake_command("dpo_x", True, None, [])
    assert "--profile" not in local and "--cores" in local


def test_job_counts_read_snakemake_s_log():
    log = """Job 5 has been submitted with SLURM jobid 2 (log: /w/.snakemake/slurm_logs/rule_toy_corpus/2.log).
Finished jobid: 5 (Rule: toy_corpus)
Job 6 has been submitted with SLURM jobid 3 (log: /w/.snakemake/slurm_logs/rule_stage2/dpo/3.log).
Error in rule stage2:
Job 6 has been submitted with SLURM jobid 4 (log: /w/.snakemake/slurm_logs/rule_stage2/dpo/4.log).
Finished jobid: 6 (Rule: stage2)
Finished jobid: 7 (Rule: tokenizer)
"""
    submitted, finished, failed = slurm_smoke.job_counts(log)
    assert dict(submitted) == {"toy_corpus": 1, "stage2": 2}
    assert dict(finished) == {"toy_corpus": 1, "stage2": 1, "tokenizer": 1}
    assert dict(failed) == {"stage2": 1}
    result = slurm_smoke.SmokeResult(0, submitted, finished, failed,
                                     [("training x", False, "1 rank(s)")])
    assert not result.ok and "FAIL training x: 1 rank(s)" in slurm_smoke.render(result)


def test_the_smoke_run_is_a_dpo_run_from_sft_3ep():
    import yaml

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    run = slurm_smoke.smoke_run(config)
    assert config["runs"][run]["objective"] == "dpo" and run == RUN
    with pytest.raises(ValueError, match="no DPO run"):
        slurm_smoke.smoke_run({"runs": {}})
