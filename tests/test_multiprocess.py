"""The cluster path on a CPU: several training processes.

Every job here is started exactly as the rules start it: training through
``scripts/launch.sh N scripts/<entry>.py ...`` (N = 2: ``torchrun`` with two CPU
processes over gloo, DeepSpeed ZeRO-2 with the shipped config or plain DDP). Results
are compared with one process: fp32 weights to <= 1e-6. Several vLLM engines run for
real in tests/test_vllm_engine.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from redi.train import training
from redi.train.ref_logps import compute_ref_logps
from redi.workflow import config as rc
from tests.support.training import (
    launch,
    max_weight_diff,
    read_log,
    sft_params,
    stage2_params,
    train_args,
    weights,
)

WEIGHT_TOL = 1e-6


def final(run_dir: Path) -> str:
    return json.loads((run_dir / "manifest.json").read_text())["final_checkpoint"]


def assert_same_run(run_dir: Path, reference: Path) -> float:
    """Same steps, losses and final weights as the reference run; returns the weight diff."""
    rows, ref_rows = read_log(run_dir / "log.csv"), read_log(reference / "log.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in ref_rows]
    for r, q in zip(rows, ref_rows, strict=True):
        assert float(r["loss"]) == pytest.approx(float(q["loss"]), abs=1e-5)
    diff = max_weight_diff(final(run_dir), final(reference))
    print(f"{run_dir.name}: max |w - w_1proc| = {diff:.3g}")  # pytest -s shows the figures
    assert diff <= WEIGHT_TOL
    return diff


# --------------------------------------------------------------- references

SFT = sft_params(global_batch=8, micro_batch=2, save_every_steps=1)  # 20 rows: 8, 8, 4 per epoch
REDI = stage2_params("redi", global_batch=8, micro_batch=2, save_every_steps=1)
DPO = stage2_params("dpo", global_batch=8, micro_batch=2, save_every_steps=1)


@pytest.fixture(scope="module")
def one_process(tiny, tmp_path_factory) -> dict[str, Path]:
    """SFT, the reference log-probs, REDI and DPO in this process (world size 1)."""
    root = tmp_path_factory.mktemp("one_process")
    training.run_sft(SFT, tiny["sft"], tiny["base"], root / "sft" / "manifest.json",
                     root / "sft" / "log.csv")
    sft_manifest = root / "sft" / "manifest.json"
    ref = root / "ref_logps.parquet"
    compute_ref_logps({"micro_batch": 2, "max_prompt_length": 128, "max_length": 192},
                      tiny["pairs"], sft_manifest, ref)
    for name, params, ref_logps in (("redi", REDI, None), ("dpo", DPO, ref)):
        training.run_stage2(params, tiny["pairs"], sft_manifest, root / name / "manifest.json",
                            root / name / "log.csv", ref_logps=ref_logps)
    return {"root": root, "sft": root / "sft", "sft_manifest": sft_manifest, "ref": ref,
            "redi": root / "redi", "dpo": root / "dpo"}


# ----------------------------------------------------------------- training


@pytest.mark.parametrize(("strategy", "micro"), [("zero2", 1), ("zero2", 2), ("ddp", 1)])
def test_sft_two_ranks_equal_one_process(tiny, one_process, tmp_path, strategy, micro):
    run = tmp_path / "sft"
    launch(2, "scripts/train_sft.py",
           *train_args(run, {**SFT, "micro_batch": micro}, data=tiny["sft"], init=tiny["base"]),
           strategy=strategy)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert manifest["distributed"] == ("DEEPSPEED" if strategy == "zero2" else "MULTI_CPU")
    assert_same_run(run, one_process["sft"])
    # rank 0 writes the job log, rank 1 its own file beside it
    assert "[rank 0]" in (run / "job.log").read_text()
    assert "[rank 1]" in Path(f"{run / 'job.log'}.rank1").read_text()


def test_reference_logps_two_ranks_write_the_same_file(tiny, one_process, tmp_path):
    out = tmp_path / "ref.parquet"
    params = {"micro_batch": 2, "max_prompt_length": 128, "max_length": 192}
    launch(2, "scripts/ref_logps.py", "--params", rc.canonical_json(params), "--pairs",
           str(tiny["pairs"]), "--init-manifest", str(one_process["sft_manifest"]), "--out",
           str(out), "--threads", "2", "--log", str(tmp_path / "ref.log"))
    two, one = pd.read_parquet(out), pd.read_parquet(one_process["ref"])
    assert list(two["pair_index"]) == list(range(20)) == list(one["pair_index"])
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        assert (two[column] - one[column]).abs().max() <= 1e-5


@pytest.mark.parametrize(("objective", "strategy", "micro"),
                         [("redi", "zero2", 2), ("redi", "ddp", 1), ("dpo", "zero2", 1),
                          ("dpo", "ddp", 2)])
def test_stage2_two_ranks_equal_one_process(tiny, one_process, tmp_path, objective, strategy,
                                            micro):
    params = {**(REDI if objective == "redi" else DPO), "micro_batch": micro}
    ref = {"ref_logps": one_process["ref"]} if objective == "dpo" else {}
    run = tmp_path / objective
    launch(2, "scripts/train_stage2.py",
           *train_args(run, params, pairs=tiny["pairs"],
                       init_manifest=one_process["sft_manifest"], **ref), strategy=strategy)
    assert json.loads((run / "manifest.json").read_text())["world_size"] == 2
    assert_same_run(run, one_process[objective])


# ------------------------------------------------------------ kill & resume

REPEATS = 5  # + the SFT, stage-2 and resumed ZeRO-2 runs above: 10 runs checkpointing every step


@pytest.fixture(scope="module")
def two_rank_redi(tiny, one_process, tmp_path_factory) -> list[Path]:
    """The same 2-rank ZeRO-2 REDI run (a checkpoint at every step), REPEATS times."""
    runs = []
    for k in range(REPEATS):
        run = tmp_path_factory.mktemp(f"repeat{k}") / "redi"
        launch(2, "scripts/train_stage2.py",
               *train_args(run, REDI, pairs=tiny["pairs"],
                           init_manifest=one_process["sft_manifest"]))
        runs.append(run)
    return runs


def test_repeated_runs_never_crash_and_are_identical(two_rank_redi):
    first = weights(final(two_rank_redi[0]))
    for run in two_rank_redi[1:]:
        assert all(torch.equal(first[k], v) for k, v in weights(final(run)).items())


def test_killed_rank_resumes_bit_identical(tiny, one_process, two_rank_redi, tmp_path):
    run = tmp_path / "redi"
    args = train_args(run, REDI, pairs=tiny["pairs"], init_manifest=one_process["sft_manifest"])
    killed = launch(2, "tests/stand_ins/kill_after_checkpoint.py", "scripts/train_stage2.py",
                    *args, env={"REDI_KILL_AFTER_STEP": "2"}, check=False)
    assert killed.returncode != 0 and not (run / "manifest.json").exists()
    assert (run / "checkpoints" / "step-000002" / "resume" / "trainer_state.json").exists()
    other_world = tmp_path / "other_world"
    shutil.copytree(run, other_world)

    launch(2, "scripts/train_stage2.py", *args)
    assert "resumed redi_test at step 2/3" in (run / "job.log").read_text()
    reference = weights(final(two_rank_redi[0]))
    assert all(torch.equal(reference[k], v) for k, v in weights(final(run)).items())

    # the same state met by ONE process: restarted (logged why), never a crash
    args = train_args(other_world, REDI, pairs=tiny["pairs"],
                      init_manifest=one_process["sft_manifest"])
    launch(1, "scripts/train_stage2.py", *args)
    log = (other_world / "job.log").read_text()
    assert "starting the run afresh" in log and "'world_size': 2" in log
    assert json.loads((other_world / "manifest.json").read_text())["world_size"] == 1
    assert max_weight_diff(final(other_world), final(one_process["redi"])) <= WEIGHT_TOL


def test_launch_refuses_an_unknown_strategy(tmp_path):
    proc = launch(2, "scripts/train_sft.py", "--help", strategy="fsdp", check=False)
    assert proc.returncode == 2 and "REDI_STRATEGY=fsdp" in proc.stderr
