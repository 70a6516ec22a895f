"""A training run told to stop (SIGTERM, SIGINT, or SIGUSR1: a scheduler's warning
before its time limit) finishes the step in progress, saves its state at that step
boundary, exits non-zero, and its rerun resumes there and ends bit-identical to an
uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from redi.train import training
from tests.conftest import ROOT
from tests.support.training import launch, read_log, run_stage2, stage2_params, train_args, weights

# 5 steps of 2 micro-batches; checkpoints at steps 2, 4 and 5 (the last)
PARAMS = stage2_params("redi", run="redi_signal")
COMPARED = ("step", "epoch", "loss", "lr", "grad_norm", "update_norm", "chosen_logps",
            "rejected_logps", "tokens")


@pytest.fixture(scope="module")
def uninterrupted(tiny, sft_run) -> dict:  # noqa: F811
    return run_stage2(tiny, sft_run, PARAMS, "redi_signal_full")


def signal_at_micro_batch(monkeypatch, signum: int, call: int) -> None:
    """Deliver ``signum`` to this process in the middle of a step: before the
    ``call``-th micro-batch forward."""
    forward, calls = training.Trainer._forward, []

    def forward_with_signal(self, indices):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return forward(self, indices)

    monkeypatch.setattr(training.Trainer, "_forward", forward_with_signal)


def assert_same_run(manifest: dict, reference: dict) -> None:
    """The same checkpoints with bit-identical weights, and the same log rows."""
    assert [c["step"] for c in manifest["checkpoints"]] == [2, 4, 5]
    assert manifest["checkpoints"] == [
        {**c, "path": c["path"].replace(str(Path(reference["log"]).parent),
                                        str(Path(manifest["log"]).parent))}
        for c in reference["checkpoints"]]
    for a, b in zip(manifest["checkpoints"], reference["checkpoints"], strict=True):
        wa, wb = weights(a["path"]), weights(b["path"])
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rows, ref_rows = read_log(Path(manifest["log"])), read_log(Path(reference["log"]))
    assert [[r[c] for c in COMPARED] for r in rows] == [[r[c] for c in COMPARED]
                                                        for r in ref_rows]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1],
                         ids=lambda s: s.name)
def test_signal_mid_step_saves_at_the_boundary_and_resumes_bit_identical(
        tiny, sft_run, uninterrupted, monkeypatch, signum) -> None:  # noqa: F811
    name = f"redi_signal_{signal.Signals(signum).name}"
    run_dir = tiny["root"] / name
    previous = signal.getsignal(signum)
    # mid-step 3 (its first of two micro-batches): step 3 is no checkpoint of the run
    signal_at_micro_batch(monkeypatch, signum, call=5)
    with pytest.raises(training.TrainingStopped, match="after step 3/5"):
        run_stage2(tiny, sft_run, PARAMS, name)
    monkeypatch.undo()
    assert signal.getsignal(signum) is previous  # the run's handlers are gone
    assert not (run_dir / "manifest.json").exists()
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert saved == ["step-000002", "step-000003"]
    assert (run_dir / "checkpoints" / "step-000003" / "resume").is_dir()
    assert [r["step"] for r in read_log(run_dir / "log.csv")] == ["1", "2", "3"]

    resumed = run_stage2(tiny, sft_run, PARAMS, name)
    assert_same_run(resumed, uninterrupted)
    # the resume point is gone once a later checkpoint exists: only the run's own remain
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-000002", "step-000004", "step-000005"]


def test_signal_on_a_checkpoint_step_keeps_that_checkpoint(
        tiny, sft_run, uninterrupted, monkeypatch) -> None:  # noqa: F811
    run_dir = tiny["root"] / "redi_signal_ckpt"
    signal_at_micro_batch(monkeypatch, signal.SIGTERM, call=8)  # mid-step 4, a checkpoint
    with pytest.raises(training.TrainingStopped, match="after step 4/5"):
        run_stage2(tiny, sft_run, PARAMS, "redi_signal_ckpt")
    monkeypatch.undo()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-000002", "step-000004"]
    assert_same_run(run_stage2(tiny, sft_run, PARAMS, "redi_signal_ckpt"), uninterrupted)


def launch_one(args: list[str]) -> subprocess.Popen:
    """``scripts/launch.sh 1 scripts/train_stage2.py``, as the rule runs it (one process)."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ["PATH"]])}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.Popen(["bash", "scripts/launch.sh", "1", "scripts/train_stage2.py", *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_sigterm_to_the_job_process_exits_non_zero_and_the_rerun_resumes(
        tiny, sft_run, tmp_path) -> None:  # noqa: F811
    # 10 steps of one micro-batch, a checkpoint only at the end
    params = {**PARAMS, "global_batch": 2, "micro_batch": 2, "save_every_steps": 100}
    reference, run = tmp_path / "reference", tmp_path / "run"
    args = lambda d: train_args(d, params, pairs=tiny["pairs"],  # noqa: E731
                                init_manifest=sft_run["manifest_path"])
    assert launch_one(args(reference)).wait() == 0
    proc = launch_one(args(run))
    while "step 2/10" not in ((run / "job.log").read_text() if (run / "job.log").exists()
                              else ""):
        assert proc.poll() is None, "the run ended before it could be signalled"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 1
    log = (run / "job.log").read_text()
    stopped = int(log.split("stopped by a signal after step ")[1].split("/")[0])
    assert 2 <= stopped < 10 and not (run / "manifest.json").exists()
    assert launch_one(args(run)).wait() == 0
    assert f"resumed redi_signal at step {stopped}/10" in (run / "job.log").read_text()
    final = weights(run / "checkpoints" / "step-000010")
    expected = weights(reference / "checkpoints" / "step-000010")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000010"]


def test_sigterm_to_a_two_rank_launch_stops_every_rank_at_the_same_step(
        tiny, sft_run, tmp_path) -> None:  # noqa: F811
    """torchrun passes the signal to both ranks; they agree on the step (an all-reduce
    per step), save one resume point together, and the rerun resumes from it."""
    params = {**PARAMS, "global_batch": 4, "micro_batch": 1, "save_every_steps": 100}
    reference, run = tmp_path / "reference", tmp_path / "run"
    args = lambda d: train_args(d, params, pairs=tiny["pairs"],  # noqa: E731
                                init_manifest=sft_run["manifest_path"])
    assert launch(2, "scripts/train_stage2.py", *args(reference), strategy="ddp",
                  check=False).returncode == 0
    env = {**os.environ, "REDI_STRATEGY": "ddp",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    proc = subprocess.Popen(["bash", "scripts/launch.sh", "2", "scripts/train_stage2.py",
                             *args(run)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while "step 1/5" not in ((run / "job.log").read_text() if (run / "job.log").exists()
                             else ""):
        assert proc.poll() is None, "the run ended before it could be signalled"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    log = (run / "job.log").read_text()
    stopped = int(log.split("stopped by a signal after step ")[1].split("/")[0])
    assert 1 <= stopped < 5 and not (run / "manifest.json").exists()
    assert launch(2, "scripts/train_stage2.py", *args(run), strategy="ddp").returncode == 0
    assert f"resumed redi_signal at step {stopped}/5" in (run / "job.log").read_text()
    final = weights(run / "checkpoints" / "step-000005")
    expected = weights(reference / "checkpoints" / "step-000005")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
