"""Evaluation jobs with scripted generations (known score matrices), one real
HF run on a tiny model, and the Snakemake wiring (dry runs)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from redi.eval import evaluation
from redi.eval.generation import Backend, Completion
from redi.workflow import config as rc
from redi.workflow import plan
from tests.conftest import BENCHMARKS_DIR, ROOT, copy_workflow, planned_jobs, snakemake
from tests.support.training import make_run

GOLDS = ["3", 4.0, ["\\frac{1}{2}", "0.5"], "x+1"]
WRONG = ["5", "7", "3", "x-1"]
# strict-mode correctness per problem and sample (4 x 4)
PATTERN = [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]


def problem_of(prompt: str) -> str:
    return prompt.split("answering.\n\n", 1)[1].split("<|im_end|>", 1)[0]


class ScriptedBackend(Backend):
    """Completions chosen by (model, problem, sample); records what it was asked."""

    def __init__(self, script) -> None:
        super().__init__()
        self.script = script
        self.calls: list[tuple[str, list[str], int]] = []

    def _generate(self, model, prompts, n, priority, seeds):
        self.calls.append((model, list(prompts), n))
        return [[self.script(model, problem_of(p), j) for j in range(n)] for p in prompts]

    def context(self, model):
        return {"max_model_len": None}  # scripted models have no config

    def describe(self):
        return {"backend": "scripted", "engines": 1, "device": "cpu"}


def answer(problem: str, right: bool, close: bool = True, waits: int = 0) -> str:
    i = int(problem.split()[-1])
    gold = GOLDS[i][0] if isinstance(GOLDS[i], list) else GOLDS[i]
    boxed = (f"{gold:g}" if isinstance(gold, float) else gold) if right else WRONG[i]
    body = "Let me think.\n" + "Wait, check.\n" * waits
    tail = "</think>\n" if close else ""
    return f"{body}{tail}So the answer is $\\boxed{{{boxed}}}$."


def final_script(model, problem, j):
    i = int(problem.split()[-1])
    if i == 2 and j == 0:  # right answer, but the trace never closes: strict says no
        text = answer(problem, True, close=False)
    else:
        text = answer(problem, bool(PATTERN[i][j]), waits=j)
    return Completion(text=text, n_tokens=10 + j, finished=j != 3)


@pytest.fixture
def bench(tmp_path) -> dict:
    folder = tmp_path / "bench"
    folder.mkdir()
    rows = [{"id": f"p{i}", "problem": f"Problem number {i}", "answer": g}
            for i, g in enumerate(GOLDS)]
    (folder / "toy.json").write_text(json.dumps(rows))
    return {"name": "toy", "label": "Toy", "file": "toy.json", "dir": str(folder)}


def protocol(bench: dict, **over) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    params = {**plan.final_eval_params(config), "benchmarks": [bench], "n_samples": 4,
              "max_new_tokens": 8, **over}
    return params


def test_final_eval_numbers(tmp_path, bench, tiny_model_dir) -> None:  # noqa: F811
    params = {**protocol(bench), "model": {"kind": "baseline", "name": "b", "label": "B",
                                           "model": str(tiny_model_dir)}}
    backend = ScriptedBackend(final_script)
    summary = evaluation.run_final("baseline-b", params, str(tmp_path / "out"),
                                   model_dir=str(tiny_model_dir), backend=backend)
    toy = summary["benchmarks"]["toy"]
    # rllm (the tables' grader): PATTERN -> 7/16; P_j = [3/4, 2/4, 1/4, 1/4]
    assert toy["pass@1"] == pytest.approx(7 / 16)
    assert toy["pass@1_sem"] == pytest.approx(math.sqrt(0.171875 / 4) / 2)
    assert toy["pass@4"] == pytest.approx(3 / 4)
    assert toy["pass@1_strict"] == pytest.approx(7 / 16)  # same verdicts on clean boxes
    assert toy["pass@1_math_verify"] == pytest.approx(8 / 16)  # + the unclosed trace
    assert toy["mean_tokens"] == pytest.approx(11.5)
    # Wait per response: j Waits in every sample but the unclosed one
    assert toy["mean_wait"] == pytest.approx((4 * 6 - 0) / 16)
    assert toy["wait_per_1k_tokens"] == pytest.approx(1000 * 24 / (4 * 46))
    assert toy["frac_truncated"] == pytest.approx(4 / 16)
    assert toy["frac_think_close"] == pytest.approx(15 / 16)
    assert (toy["n_problems"], toy["n_samples"], toy["label"]) == (4, 4, "Toy")
    assert summary["grader"] == "rllm" and summary["label"] == "baseline-b"
    assert summary["model"]["checkpoint"] == str(tiny_model_dir)
    assert "model" not in summary["protocol"] and summary["protocol"]["force_think"] is True
    # the prompts: forced <think> with no newline before it, all problems in one call
    (model, prompts, n), = backend.calls
    assert n == 4 and len(prompts) == 4
    # the tiny preset forces "<think>\n" after "assistant\n" (think_prefix_newline: true)
    assert all(p.endswith("<|im_start|>assistant\n<think>\n") for p in prompts)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["benchmarks"]["toy"]["pass@1"] == pytest.approx(7 / 16)
    frame = pd.read_parquet(tmp_path / "out" / "toy.parquet")
    assert len(frame) == 16
    assert list(frame[["problem_id", "sample"]].iloc[5]) == ["p1", 1]
    for column in ("response", "n_tokens", "has_think_close", "gold", "extracted_rllm",
                   "correct_rllm", "extracted_strict", "correct_strict",
                   "extracted_math_verify", "correct_math_verify"):
        assert column in frame.columns
    assert frame["response"].str.startswith("<think>\n").all()  # prefix + generated text
    assert frame["correct_rllm"].sum() == 7 and frame["correct_strict"].sum() == 7
    assert frame["correct_math_verify"].sum() == 8
    assert frame.loc[8, "has_think_close"] == False  # noqa: E712
    assert frame.loc[0, "extracted_strict"] == "3" and frame.loc[0, "extracted_rllm"] == "3"
    assert [json.loads(g) for g in frame["gold"].iloc[::4]] == GOLDS  # JSON, types kept


# problem -> sample -> (boxed text, rllm verdict, strict verdict) for GOLDS
SPLIT = [
    [("\\boxed{3}", 1, 1), ("\\boxed 3", 0, 1), ("\\fbox{3}", 0, 1), ("\\boxed{5}", 0, 0)],
    [("\\boxed{4.}", 1, 0), ("\\boxed{4}", 1, 1), ("\\boxed{x = 4}", 0, 1),
     ("\\boxed{7}", 0, 0)],
    [("\\boxed{\\frac{1}{2}}", 1, 1)] * 4,
    [("\\boxed{x-1}", 0, 0)] * 4,
]


def split_script(model, problem, j):
    boxed = SPLIT[int(problem.split()[-1])][j][0]
    return Completion(f"Let me think.\n</think>\nSo the answer is ${boxed}$.", 10, True)


def test_final_eval_keeps_the_strict_verdict_beside_rllm(tmp_path, bench,
                                                          tiny_model_dir) -> None:  # noqa: F811
    params = {**protocol(bench), "model": {"kind": "baseline", "name": "b", "label": "B",
                                           "model": str(tiny_model_dir)}}
    assert evaluation.final_modes(params["grader"]) == ["rllm", "strict", "math_verify"]
    summary = evaluation.run_final("baseline-b", params, str(tmp_path / "out"),
                                   model_dir=str(tiny_model_dir),
                                   backend=ScriptedBackend(split_script))
    toy = summary["benchmarks"]["toy"]
    assert toy["pass@1"] == pytest.approx(7 / 16)  # rllm
    assert toy["pass@1_strict"] == pytest.approx(9 / 16)
    frame = pd.read_parquet(tmp_path / "out" / "toy.parquet")
    assert frame["correct_rllm"].tolist() == [bool(c[1]) for row in SPLIT for c in row]
    assert frame["correct_strict"].tolist() == [bool(c[2]) for row in SPLIT for c in row]
    assert frame["extracted_rllm"][0] == "3"
    assert frame["extracted_rllm"][1:3].isna().all()  # "\\boxed 3", "\\fbox{3}": no answer
    assert frame["extracted_strict"].tolist()[:3] == ["3", "3", "3"]
    with pytest.raises(ValueError, match="lenient"):
        evaluation.final_modes("lenient")


def test_baseline_without_forced_think(tmp_path, bench, tiny_model_dir) -> None:  # noqa: F811
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    spec = {"kind": "baseline", "name": "b", "label": "B", "model": str(tiny_model_dir),
            "force_think": False}
    params = plan.final_model_params(config, spec)
    assert params["force_think"] is False
    params = {**params, "benchmarks": [bench], "n_samples": 4}
    backend = ScriptedBackend(final_script)
    summary = evaluation.run_final("baseline-b", params, str(tmp_path / "o"),
                                   model_dir=str(tiny_model_dir), backend=backend)
    assert all(p.endswith("<|im_start|>assistant\n") for p in backend.calls[0][1])
    # without the forced prefix no response has an opening tag; strict still needs </think>
    assert summary["benchmarks"]["toy"]["pass@1"] == pytest.approx(7 / 16)


def plain_script(model, problem, j):
    """An instruct model: no thought, the answer boxed at the end (PATTERN's verdicts)."""
    text = answer(problem, bool(PATTERN[int(problem.split()[-1])][j]), close=False)
    return Completion(text=text.replace("Let me think.\n", ""), n_tokens=10, finished=True)


def test_baseline_that_does_not_think_is_graded_on_the_whole_response(
        tmp_path, bench, tiny_model_dir) -> None:  # noqa: F811
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    spec = {"kind": "baseline", "name": "b", "label": "B", "model": str(tiny_model_dir),
            "thinks": False}
    params = plan.final_model_params(config, spec)
    assert (params["force_think"], params["thinks"]) == (False, False)
    # a thinking model keeps the protocol's forced <think>
    thinking = plan.final_model_params(config, {**spec, "thinks": True})
    assert (thinking["force_think"], thinking["thinks"]) == (True, True)
    results = {}
    for thinks in (False, True):
        run = {**params, "benchmarks": [bench], "n_samples": 4, "thinks": thinks}
        backend = ScriptedBackend(plain_script)
        summary = evaluation.run_final("baseline-b", run, str(tmp_path / f"o{thinks}"),
                                       model_dir=str(tiny_model_dir), backend=backend)
        assert all(p.endswith("<|im_start|>assistant\n") for p in backend.calls[0][1])
        results[thinks] = summary["benchmarks"]["toy"]
    # whole response graded: PATTERN's 7 of 16 under both paper-structured graders
    assert results[False]["pass@1"] == pytest.approx(7 / 16)
    assert results[False]["pass@1_strict"] == pytest.approx(7 / 16)
    assert results[False]["frac_think_close"] == 0
    # requiring </think> of a model that never writes it scores every answer wrong
    assert results[True]["pass@1"] == 0 and results[True]["pass@1_strict"] == 0
    assert results[True]["pass@1_math_verify"] == results[False]["pass@1_math_verify"]


# ------------------------------------------------------------------ curves


# problems answered correctly (all 4 samples) by each checkpoint
ACCURACY = {"step-000010": 1, "step-000020": 3, "step-000030": 3, "step-000005": 2,
            "step-000008": 4}


def curve_script(model, problem, j):
    right = int(problem.split()[-1]) < ACCURACY[Path(model).name]
    return Completion(answer(problem, right), 5, True)


def test_curves_and_best_checkpoints(tmp_path, bench, tiny_model_dir) -> None:  # noqa: F811
    params = protocol(bench, **{k: v for k, v in
                                plan.intermediate_eval_params(
                                    yaml.safe_load((ROOT / "config.yaml").read_text())).items()
                                if k not in ("benchmarks",)})
    assert (params["n_samples"], params["grader"], params["force_think"]) == (
        4, "math_verify", False)
    sft = make_run(tmp_path, tiny_model_dir, "sft_3ep", "sft", [10, 20, 30])
    backend = ScriptedBackend(curve_script)
    evaluation.run_curve(str(sft / "manifest.json"), str(sft / "log.csv"), params,
                         str(tmp_path / "sft.csv"), str(tmp_path / "sft.best.json"),
                         backend=backend)
    curve = pd.read_csv(tmp_path / "sft.csv")
    assert list(curve.columns[:7]) == evaluation.CURVE_COLUMNS and "loss" in curve.columns
    assert list(curve["step"]) == [10, 20, 30]
    assert list(curve["accuracy"]) == [0.25, 0.75, 0.75]
    assert list(curve["sem"]) == [0.0, 0.0, 0.0]  # every sample index scores the same
    assert list(curve["loss"]) == pytest.approx([1 / 10, 1 / 20, 1 / 30])
    assert list(curve["epoch"]) == [1.0, 2.0, 3.0]
    best = json.loads((tmp_path / "sft.best.json").read_text())
    assert best == {"run": "sft_3ep", "step": 20, "epoch": 2.0, "accuracy": 0.75,
                    "checkpoint": str(sft / "checkpoints" / "step-000020"),  # tie -> earliest
                    "generation": backend.describe()}  # what sampled the curve
    assert all(not p.endswith("<think>\n") for p in backend.calls[0][1])  # not forced

    # stage 2: step 0 is the SFT curve's row of the init checkpoint (not re-evaluated)
    init = str(sft / "checkpoints" / "step-000030")
    run = make_run(tmp_path, tiny_model_dir, "redi_x", "stage2", [5, 8], init=init)
    backend = ScriptedBackend(curve_script)
    evaluation.run_curve(str(run / "manifest.json"), str(run / "log.csv"), params,
                         str(tmp_path / "r.csv"), str(tmp_path / "r.best.json"),
                         init_curve=str(tmp_path / "sft.csv"), backend=backend)
    curve = pd.read_csv(tmp_path / "r.csv")
    assert list(curve["step"]) == [0, 5, 8]
    assert list(curve["accuracy"]) == [0.75, 0.5, 1.0]
    assert curve["checkpoint"][0] == init and math.isnan(curve["loss"][0])
    assert [Path(c[0]).name for c in backend.calls] == ["step-000005", "step-000008"]
    assert json.loads((tmp_path / "r.best.json").read_text())["step"] == 8


def test_best_excludes_the_init_model() -> None:
    rows = [{"step": 0, "epoch": 0.0, "checkpoint": "init", "accuracy": 0.9},
            {"step": 8, "epoch": 0.2, "checkpoint": "a", "accuracy": 0.5},
            {"step": 16, "epoch": 0.5, "checkpoint": "b", "accuracy": 0.6},
            {"step": 24, "epoch": 0.7, "checkpoint": "c", "accuracy": 0.6}]
    assert evaluation.best_checkpoint(rows, "r")["step"] == 16


def test_group_selection(tmp_path) -> None:
    bests = []
    for run, acc in [("dpo_a", 0.4), ("dpo_b", 0.7), ("dpo_c", 0.7)]:
        path = tmp_path / f"{run}.best.json"
        path.write_text(json.dumps({"run": run, "step": 3, "epoch": 0.1,
                                    "checkpoint": f"ck/{run}", "accuracy": acc}))
        bests.append(str(path))
    spec = {"kind": "group", "runs": ["dpo_a", "dpo_b", "dpo_c"], "label": "DPO",
            "run_labels": {"dpo_b": "DPO b"}}
    model = evaluation.resolve_model(spec, [], bests, None)
    assert (model["run"], model["checkpoint"], model["run_label"]) == ("dpo_b", "ck/dpo_b", "DPO b")
    assert [s["run"] for s in model["selected_from"]] == ["dpo_a", "dpo_b", "dpo_c"]


def test_genstats(tmp_path, bench, tiny_model_dir) -> None:  # noqa: F811
    run = make_run(tmp_path, tiny_model_dir, "redi_x", "stage2", [5, 8],
                   init=str(tiny_model_dir))

    def script(model, problem, j):
        waits = 2 if Path(model).name == "step-000008" else 0
        return Completion(answer(problem, True, waits=waits), 20 + j, True)

    evaluation.run_genstats(str(run / "manifest.json"), protocol(bench),
                            str(tmp_path / "g.csv"), backend=ScriptedBackend(script),
                            out_responses=str(tmp_path / "responses.parquet"))
    responses = pd.read_parquet(tmp_path / "responses.parquet")
    assert list(responses.columns) == evaluation.RESPONSE_COLUMNS and len(responses) == 48
    assert list(responses.iloc[5][["step", "problem_id", "sample"]]) == [0, "p1", 1]
    assert responses.iloc[-1]["response"].count("Wait") == 2  # step 8's answers
    stats = pd.read_csv(tmp_path / "g.csv")
    assert list(stats.columns) == evaluation.GENSTATS_COLUMNS
    assert list(stats["step"]) == [0, 5, 8]
    assert list(stats["n_responses"]) == [16, 16, 16]
    assert list(stats["mean_tokens"]) == [21.5, 21.5, 21.5]
    assert list(stats["mean_wait"]) == [0.0, 0.0, 2.0]
    assert stats["wait_per_1k_tokens"][2] == pytest.approx(1000 * 2 / 21.5)
    assert list(stats["accuracy"]) == [1.0, 1.0, 1.0]


def test_real_hf_generation_end_to_end(tmp_path, bench, tiny_model_dir) -> None:  # noqa: F811
    params = {**protocol(bench, n_samples=2, max_new_tokens=6, batch_size=4),
              "model": {"kind": "baseline", "name": "t", "label": "T",
                        "model": str(tiny_model_dir)}}
    summary = evaluation.run_final("baseline-t", params, str(tmp_path / "out"),
                                   model_dir=str(tiny_model_dir))
    frame = pd.read_parquet(tmp_path / "out" / "toy.parquet")
    assert len(frame) == 8 and frame["response"].str.startswith("<think>\n").all()
    assert frame["n_tokens"].between(1, 6).all()
    toy = summary["benchmarks"]["toy"]
    assert 0.0 <= toy["pass@1"] <= 1.0 and toy["n_samples"] == 2 and "pass@2" in toy


# ---------------------------------------------------------------- workflow


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    root = copy_workflow(tmp_path_factory.mktemp("eval_wf"))
    if (ROOT / "report").exists() and not (root / "report").exists():
        shutil.copytree(ROOT / "report", root / "report")  # the Snakefile's report: text
    return root


def test_tiny_dag(workflow) -> None:
    jobs = planned_jobs(snakemake(workflow, "-n", "--cores", "2"))
    # 2 + 21 runs of the primary base model, 4 of Table 4's; 8 + 4 final-eval models
    assert jobs["eval_curve"] == 27 and jobs["final_eval"] == 12 and jobs["gen_stats"] == 1
    assert "download_benchmarks" not in jobs and "download_baseline" not in jobs


def test_agreement_rule_reads_every_final_sample_file(workflow) -> None:
    proc = snakemake(workflow, "-n", "-p", "--cores", "2", "results/grader_agreement.md")
    jobs = planned_jobs(proc)
    assert jobs["grader_agreement"] == 1 and jobs["final_eval"] == 12
    command = next(line for line in proc.stdout.splitlines()
                   if line.startswith("Shell command: python scripts/grader_agreement.py"))
    assert command.count(".parquet") == 12 * 3  # every table model x every toy benchmark
    assert '"graders":["rllm","strict"]' in command


def test_paper_dag_offline_and_online(workflow) -> None:
    offline = f'presets={{"paper": {{"benchmarks_dir": "{BENCHMARKS_DIR}"}}}}'
    proc = snakemake(workflow, "-n", "--cores", "2", "-p", "results/eval/final/sft_3ep/summary.json",
                     "--config", "preset=paper", offline)
    jobs = planned_jobs(proc)
    assert jobs["final_eval"] == 1 and "download_benchmarks" not in jobs
    assert f'"dir":"{BENCHMARKS_DIR}"' in proc.stdout and "--gpus 8" in proc.stdout
    online = planned_jobs(snakemake(workflow, "-n", "--cores", "2",
                                    "results/eval/final/baseline-r1_distill_1.5b/summary.json",
                                    "--config", "preset=paper"))
    # the math files are checked before the evaluation; the out-of-domain ones are not
    # needed (no gated GPQA download for Table 1)
    assert online == {"download_benchmarks": 1, "download_baseline": 1,
                      "validate_benchmarks": 1, "final_eval": 1}
