"""The cluster smoke test: one job of every kind through the user's own SLURM in minutes.

A copy of the workflow runs the tiny preset (made smaller by ``configs/slurm_smoke.yaml``)
with ``--profile slurm``: the data stage, SFT -> reference log-probs -> one DPO run on
``train_gpus`` GPUs (several ranks, as the paper's jobs), and the evaluation of its
checkpoints on ``eval_gpus`` GPUs (vLLM engines with ``vllm_python``). Every snakemake
call is bounded by a timeout that kills it and cancels its SLURM jobs; the report says,
per job kind, what ran and what the outputs show (ranks, checkpoints, accuracy rows).
``local=True`` runs the same jobs without the scheduler: a reference to compare with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from redi.sources import CHECKOUT, copy_workflow
from redi.workflow import paths

OVERLAY = "configs/slurm_smoke.yaml"


@dataclass
class SmokeResult:
    """What a smoke run did: snakemake's exit status, its jobs per rule and the checks."""
    returncode: int
    submitted: Counter = field(default_factory=Counter)
    finished: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and all(ok for _, ok, _ in self.checks)


def _micro_batch(stage: str, global_batch: int, train_gpus: int) -> dict[str, int]:
    """One micro-batch per rank and step: the tiny preset's batch split over the ranks."""
    ranks = max(1, train_gpus)
    if global_batch % ranks:
        raise ValueError(f"--train-gpus {train_gpus}: the tiny {stage} batch of {global_batch} "
                         f"must split evenly over the ranks")
    return {"micro_batch": global_batch // ranks}


def overlay(train_gpus: int, eval_gpus: int, vllm_python: str | None) -> dict[str, Any]:
    """The GPU part of the smoke test's config (the rest is configs/slurm_smoke.yaml)."""
    preset = yaml.safe_load((CHECKOUT / "config.yaml").read_text())["presets"]["tiny"]
    tiny: dict[str, Any] = {
        "resources": {"train_gpus": train_gpus, "eval_gpus": eval_gpus},
        **{stage: _micro_batch(stage, preset[stage]["global_batch"], train_gpus)
           for stage in ("sft", "stage2")}}
    if vllm_python:
        tiny["eval"] = {"backend": "vllm", "python": vllm_python}
        if eval_gpus == 0:  # CPU engines, as configs/tiny_vllm.yaml
            tiny["eval"].update(cpu_engines=2, dtype="float32")
            tiny["resources"]["eval_threads"] = 2
        tiny["resources"]["jobs"] = {job: {"mem_mb": 10000, "runtime": 30}
                                     for job in ("eval_curve", "final_eval")}
    return {"presets": {"tiny": tiny}}


def smoke_run(config: dict[str, Any]) -> str:
    """The stage-2 run the smoke test trains: the first DPO run from SFT-3ep (DPO needs
    the reference log-probs job too)."""
    for name, run in config["runs"].items():
        if run["objective"] == "dpo" and run["init"] == "sft_3ep":
            return name
    raise ValueError("config.yaml has no DPO run from sft_3ep for the smoke test")


def targets(run: str) -> list[str]:
    return [paths.DATA_REPORT, paths.manifest(run), paths.curve(run)]


def status_command() -> str | None:
    """``squeue`` where the cluster has no job accounting (``sacct`` fails), else None
    (the profile's choice, squeue): explicit where sacct fails, so that a copy of the
    profile set back to sacct cannot make the smoke test wait forever."""
    if shutil.which("sacct") is None:
        return "squeue"
    proc = subprocess.run(["sacct", "-X", "-n", "-S", "now"], capture_output=True, text=True,
                          timeout=30, check=False)
    return None if proc.returncode == 0 else "squeue"


def snakemake_command(run: str, local: bool, status: str | None, extra: list[str],
                      status_seconds: int = 5) -> list[str]:
    # the targets first: --configfile and --sdm take every word that follows them
    head = [str(Path(sys.executable).with_name("snakemake")), *targets(run),
            "--config", "preset=tiny", "--configfile", OVERLAY, "smoke_gpus.yaml"]
    if local:
        return [*head, "--cores", str(os.cpu_count() or 1), *extra]
    cmd = [*head, "--profile", "slurm", "--slurm-init-seconds-before-status-checks",
                   str(status_seconds)]
    if status:
        cmd += ["--slurm-status-command", status]
    if shutil.which("conda") is None:
        # the profile's conda environments cannot be built: jobs use this environment
        cmd += ["--software-deployment-method", "env-modules"]
    return [*cmd, *extra]


def run_bounded(cmd: list[str], workdir: Path, timeout_s: float, log: Path) -> tuple[int, bool]:
    """Run ``cmd`` in its own process group, output to ``log``; at the timeout kill the
    group (snakemake may ignore SIGTERM while it polls) and cancel the run's SLURM jobs."""
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    cancel_jobs(log.read_text(errors="replace"))
    return proc.returncode, True


def cancel_jobs(log_text: str) -> None:
    """scancel every job of the run (the plugin names them after its run ID)."""
    if match := re.search(r"SLURM run ID: (\S+)", log_text):
        subprocess.run(["scancel", "--name", match.group(1)], check=False)


def job_counts(log_text: str) -> tuple[Counter, Counter, Counter]:
    """(submitted to SLURM, finished, failed) jobs per rule, from snakemake's log; a
    rule's local jobs (``localrules``) finish without being submitted."""
    submitted = Counter(re.findall(r"submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+)/",
                                   log_text))
    finished = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log_text))
    failed = Counter(re.findall(r"Error in rule (\w+):", log_text))
    return submitted, finished, failed


def output_checks(workdir: Path, run: str, train_gpus: int) -> list[tuple[str, bool, str]]:
    """What the outputs show: the data counts, the ranks that trained, the curve."""
    checks = []
    report = workdir / "results" / "data" / "report.json"
    checks.append(("data stage", report.is_file(),
                   "results/data/report.json" if report.is_file() else "no data report"))
    for name in ("sft_3ep", run):
        manifest = workdir / "results" / "train" / name / "manifest.json"
        if not manifest.is_file():
            checks.append((f"training {name}", False, "no manifest"))
            continue
        info = json.loads(manifest.read_text())
        ranks = info.get("world_size")
        checks.append((f"training {name}", ranks == max(1, train_gpus),
                       f"{ranks} rank(s), {len(info.get('checkpoints', []))} checkpoint(s)"))
    curve = workdir / "results" / "eval" / "curves" / f"{run}.csv"
    rows = len(curve.read_text().splitlines()) - 1 if curve.is_file() else 0
    checks.append(("evaluation", rows > 0, f"{rows} checkpoint(s) evaluated"))
    return checks


def render(result: SmokeResult) -> str:
    lines = ["job kind             to SLURM  finished  failed"]
    for rule in sorted(set(result.finished) | set(result.failed) | set(result.submitted)):
        lines.append(f"{rule:<20}{result.submitted[rule]:>9}{result.finished[rule]:>10}"
                     f"{result.failed[rule]:>8}")
    lines.append("")
    for name, ok, detail in result.checks:
        lines.append(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if result.timed_out:
        lines.append("FAIL snakemake did not finish within the time limit (killed)")
    lines.append(f"smoke test: {'passed' if result.ok else 'FAILED'} "
                 f"(snakemake exit status {result.returncode})")
    return "\n".join(lines)


def smoke(workdir: Path, train_gpus: int = 0, eval_gpus: int = 0,
          vllm_python: str | None = None, local: bool = False, timeout_s: float = 1800,
          extra: list[str] | None = None, status_seconds: int = 5) -> SmokeResult:
    """Copy the workflow to ``workdir``, run the smoke targets, check the outputs."""
    copy_workflow(workdir)
    (workdir / "smoke_gpus.yaml").write_text(
        yaml.safe_dump(overlay(train_gpus, eval_gpus, vllm_python)))
    run = smoke_run(yaml.safe_load((workdir / "config.yaml").read_text()))
    status = None if local else status_command()
    cmd = snakemake_command(run, local, status, extra or [], status_seconds)
    log = workdir / "smoke.log"
    returncode, timed_out = run_bounded(cmd, workdir, timeout_s, log)
    submitted, finished, failed = job_counts(log.read_text(errors="replace"))
    return SmokeResult(returncode, submitted, finished, failed,
                       output_checks(workdir, run, train_gpus), timed_out)
