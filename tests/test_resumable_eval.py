"""Resumable evaluation: curve and final-evaluation jobs killed part-way continue from
their saved units and write the same bytes as an uninterrupted run; a unit is reused
only when everything that determines it is unchanged."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from redi.eval import evaluation
from redi.eval.generation import Backend, Completion
from redi.grading import Grader
from redi.workflow import config as rc
from redi.workflow import plan
from tests.conftest import ROOT
from tests.support.training import make_run

PROBLEMS = ["Evaluate 3+4.", "Compute 2*9", "Evaluate 12-5+7-1", "What is 6/3?"]
GOLDS = ["7", "18", "13", "2"]
BENCHES = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    for k, name in enumerate(BENCHES):  # each benchmark its own problem order
        rows = [{"id": f"{name}-{i}", "problem": PROBLEMS[(i + k) % 4], "answer": GOLDS[(i + k) % 4]}
                for i in range(4)]
        (folder / f"{name}.json").write_text(json.dumps(rows))
    return folder


def specs(bench_dir: Path, names: list[str]) -> list[dict]:
    return [{"name": n, "label": n.title(), "file": f"{n}.json", "dir": str(bench_dir)}
            for n in names]


def tiny_config() -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    return config


def curve_params(bench_dir: Path) -> dict:
    """The tiny preset's intermediate protocol (HF backend) on one small benchmark."""
    return {**plan.intermediate_eval_params(tiny_config()), "n_samples": 4,
            "max_new_tokens": 48, "batch_size": 16, "benchmarks": specs(bench_dir, ["alpha"])}


def final_params(bench_dir: Path, model_dir: Path) -> dict:
    model = {"kind": "baseline", "name": "tiny", "label": "Tiny", "model": str(model_dir)}
    return {**plan.final_model_params(tiny_config(), model), "n_samples": 4,
            "max_new_tokens": 48, "batch_size": 16, "benchmarks": specs(bench_dir, BENCHES)}


def launch(script: str, args: list[str]) -> subprocess.Popen:
    """A job script as its rule launches it (one thread)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, f"scripts/{script}", *args, "--threads", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run_killed(script: str, args: list[str], units: Path) -> int:
    """Launch, SIGKILL as soon as the first unit is saved; the units left behind."""
    proc = launch(script, args)
    deadline = time.monotonic() + 60
    while not list(units.glob("*.json")):
        assert proc.poll() is None, "the job finished before a unit could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    return len(list(units.glob("*.json")))


def reused(log: Path) -> int:
    (count,) = re.findall(r"(\d+) units reused", log.read_text())
    return int(count)


def curve_args(params: dict, run: Path, out: Path) -> list[str]:
    return ["--params", json.dumps(params), "--manifest", str(run / "manifest.json"),
            "--log-csv", str(run / "log.csv"), "--out", str(out / "curve.csv"),
            "--best", str(out / "best.json"), "--log", str(out / "job.log")]


def test_killed_curve_job_resumes_byte_identical(tmp_path, bench_dir,
                                                 tiny_model_dir) -> None:  # noqa: F811
    run = make_run(tmp_path, tiny_model_dir, "sft_3ep", "sft", [10, 20, 30, 40])
    params = curve_params(bench_dir)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert launch("eval_curve.py", curve_args(params, run, whole)).wait() == 0
    units = Path(f"{resumed / 'curve.csv'}.units")
    left = run_killed("eval_curve.py", curve_args(params, run, resumed), units)
    assert 1 <= left < 4 and not (resumed / "curve.csv").exists()
    assert launch("eval_curve.py", curve_args(params, run, resumed)).wait() == 0
    for name in ("curve.csv", "best.json"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes()
    assert reused(resumed / "job.log") == left and reused(whole / "job.log") == 0
    assert not units.exists()  # cleaned after success
    curve = (whole / "curve.csv").read_text().splitlines()
    assert len(curve) == 5 and curve[0].startswith("step,epoch,checkpoint,accuracy")


def final_args(params: dict, model_dir: Path, out: Path) -> list[str]:
    return ["--params", json.dumps(params), "--label", "baseline-tiny", "--model-dir",
            str(model_dir), "--out-dir", str(out / "final"), "--log", str(out / "job.log")]


def test_killed_final_evaluation_resumes_byte_identical(tmp_path, bench_dir,
                                                        tiny_model_dir) -> None:  # noqa: F811
    params = final_params(bench_dir, tiny_model_dir)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert launch("final_eval.py", final_args(params, tiny_model_dir, whole)).wait() == 0
    units = resumed / "final.units"
    left = run_killed("final_eval.py", final_args(params, tiny_model_dir, resumed), units)
    assert 1 <= left < len(BENCHES) and not (resumed / "final" / "summary.json").exists()
    assert launch("final_eval.py", final_args(params, tiny_model_dir, resumed)).wait() == 0
    for name in ("summary.json", *(f"{b}.parquet" for b in BENCHES)):
        assert (resumed / "final" / name).read_bytes() == (whole / "final" / name).read_bytes()
    assert reused(resumed / "job.log") == left
    assert not units.exists()
    summary = json.loads((whole / "final" / "summary.json").read_text())
    assert sorted(summary["benchmarks"]) == BENCHES
    assert all(b["n_problems"] == 4 and b["n_samples"] == 4
               for b in summary["benchmarks"].values())


def test_one_benchmark_alone_samples_as_in_a_call_with_all(bench_dir,
                                                           tiny_model_dir) -> None:  # noqa: F811
    """Per-request seeds: a benchmark evaluated alone (a unit) gets the samples it gets
    beside the others in one backend call."""
    params = final_params(bench_dir, tiny_model_dir)
    backend = evaluation.backend_from_params(params)
    benchmarks = evaluation.load_benchmarks(params)
    with Grader(workers=1) as grader:
        together = evaluation.evaluate_model(str(tiny_model_dir), benchmarks, params, backend,
                                             grader, ["rllm"])
        for spec, items in benchmarks:
            (alone,) = evaluation.evaluate_model(str(tiny_model_dir), [(spec, items)], params,
                                                 backend, grader, ["rllm"]).values()
            assert alone.responses == together[spec["name"]].responses
            assert alone.n_tokens == together[spec["name"]].n_tokens
    assert len({r for res in together.values() for r in res.responses}) > 8  # they vary


class StopAfter(Backend):
    """Scripted completions; raises (a stand-in for a kill) once ``limit`` calls are
    done, so the units of the finished calls stay behind."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.calls = 0

    def _generate(self, model, prompts, n, priority, seeds):
        if self.limit is not None and self.calls >= self.limit:
            raise RuntimeError("killed")
        self.calls += 1
        return [[Completion(f"<think>\n</think>\n$\\boxed{{{s % 20}}}$", 5, True)
                 for _ in range(n)] for s in seeds]

    def context(self, model):
        return {"max_model_len": None}

    def describe(self):
        return {"backend": "scripted", "engines": 1, "device": "cpu"}


def interrupted_final(params: dict, out: Path, model_dir: Path) -> None:
    """A final evaluation that stops after its first benchmark, its unit saved."""
    with pytest.raises(RuntimeError, match="killed"):
        evaluation.run_final("baseline-tiny", params, str(out), model_dir=str(model_dir),
                             backend=StopAfter(limit=1))
    assert len(list(Path(f"{out}.units").glob("*.json"))) == 1


def reused_units(caplog, params: dict, out: Path, model_dir: Path) -> tuple[int, int]:
    """Rerun to the end: (units reused, backend calls)."""
    caplog.clear()
    backend = StopAfter()
    with caplog.at_level(logging.INFO, logger="redi.eval.evaluation"):
        evaluation.run_final("baseline-tiny", params, str(out), model_dir=str(model_dir),
                             backend=backend)
    (count,) = re.findall(r"(\d+) units reused", caplog.text)
    return int(count), backend.calls


@pytest.mark.parametrize("change", ["temperature", "n_samples", "think", "benchmark", "weights",
                                    None])
def test_a_changed_input_does_not_reuse_a_stale_unit(
        tmp_path, caplog, tiny_model_dir, change) -> None:  # noqa: F811
    bench_dir, model_dir = tmp_path / "bench", tmp_path / "model"
    bench_dir.mkdir()
    for name in BENCHES:
        rows = [{"id": f"{name}-{i}", "problem": p, "answer": g}
                for i, (p, g) in enumerate(zip(PROBLEMS, GOLDS, strict=True))]
        (bench_dir / f"{name}.json").write_text(json.dumps(rows))
    model_dir.mkdir()
    for f in tiny_model_dir.iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    params = final_params(bench_dir, model_dir)
    out = tmp_path / "out"
    interrupted_final(params, out, model_dir)
    if change == "temperature":
        params = {**params, "temperature": 0.7}
    elif change == "n_samples":
        params = {**params, "n_samples": 2}
    elif change == "think":
        params = {**params, "force_think": False, "thinks": False}
    elif change == "benchmark":  # the first benchmark's file, edited in place
        path = bench_dir / f"{BENCHES[0]}.json"
        path.write_text(path.read_text().replace("Compute 2*9", "Compute 2*8"))
    elif change == "weights":  # a checkpoint written again
        weights = next(model_dir.glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert reused_units(caplog, params, out, model_dir) == (
        (1, len(BENCHES) - 1) if change is None else (0, len(BENCHES)))
    assert not Path(f"{out}.units").exists()
