"""Table 5's out-of-domain evaluation (redi.eval.ood) with scripted generations of known
verdicts on a tiny model, the job script on the real hf backend, the toy_ood job, and
the table's relative-improvement arithmetic (redi.report.table5)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from redi.eval import code_eval, metrics, multiple_choice, ood, toy_ood
from redi.eval.evaluation import request_seed
from redi.eval.generation import Backend, Completion
from redi.report import table5
from redi.workflow import config as rc
from redi.workflow import ood_plan
from tests.conftest import ROOT

N = 4  # samples per problem


class ScriptedBackend(Backend):
    """Completions from ``script(prompt, j)``; records prompts, seeds and max_new_tokens."""

    def __init__(self, script, max_new_tokens: int) -> None:
        super().__init__()
        self.script, self.max_new_tokens = script, max_new_tokens
        self.calls: list[tuple[list[str], int, list[int]]] = []

    def _generate(self, model, prompts, n, priority, seeds):
        self.calls.append((list(prompts), n, list(seeds)))
        return [[self.script(p, j) for j in range(n)] for p in prompts]

    def context(self, model):
        return {"max_model_len": None}

    def describe(self):
        return {"backend": "scripted", "engines": 1, "device": "cpu"}


@pytest.fixture
def data(tmp_path) -> dict:
    """Two toy code problems and two toy multiple-choice questions, as JSONL files."""
    code = toy_ood.generate_toy_code(seed=0, n=2)
    mc = toy_ood.generate_toy_mc(seed=0, n=2)
    toy_ood.write_jsonl(tmp_path / "code.jsonl", code)
    toy_ood.write_jsonl(tmp_path / "mc.jsonl", mc)
    return {"code": code, "mc": multiple_choice.build_items(mc, source="mc"),
            "code_path": str(tmp_path / "code.jsonl"), "mc_path": str(tmp_path / "mc.jsonl")}


def ood_params(data: dict, model_dir, **over) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    params = ood_plan.ood_eval_params(config, "baseline-tiny-base")
    params["benchmarks"] = [
        {"name": "code", "label": "Code", "kind": "code", "source": "file",
         "path": data["code_path"], "max_new_tokens": 7},
        {"name": "mc", "label": "MC", "kind": "multiple_choice", "source": "file",
         "path": data["mc_path"], "max_new_tokens": 9}]
    params["model"] = {"kind": "baseline", "name": "b", "label": "B", "model": str(model_dir)}
    return {**params, "n_samples": N, **over}


# code: which samples are right, per problem; sample 0 of problem 0 runs on past a stop
# sequence (cut there), samples 0 and 2 of problem 0 are then one program
CODE_RIGHT = [[1, 0, 1, 0], [0, 0, 1, 0]]
# multiple choice: the gold letter, another letter, or no letter
MC_ANSWERS = [["gold", "other", "none", "gold"], ["gold", "gold", "gold", "other"]]


def make_script(data: dict):
    problems = {p["prompt"]: p for p in data["code"]}
    items = {item.question: item for item in data["mc"]}

    def script(prompt: str, j: int) -> Completion:
        if prompt in problems:  # the continuation prompt, unchanged
            p = list(problems).index(prompt)
            body = problems[prompt]["canonical_solution"] if CODE_RIGHT[p][j] else (
                "    return None\n")
            tail = "\ndef helper():\n    raise SystemExit(1)\n" if (p, j) == (0, 0) else ""
            return Completion(body + tail, n_tokens=5 + j, finished=j != 3)
        i, item = next((i, it) for i, it in enumerate(items.values()) if it.question in prompt)
        other = "ABCD"[(item.gold_index + 1) % 4]
        answer = {"gold": f"Answer: {item.gold_letter}", "other": f"Answer: {other}",
                  "none": "I am not sure."}[MC_ANSWERS[i][j]]
        return Completion(f"Let me think.\n</think>\n{answer}", n_tokens=20 + j, finished=True)

    return script


def test_ood_job_numbers_prompts_and_files(tmp_path, data, tiny_model_dir):  # noqa: F811
    backends: list[ScriptedBackend] = []

    def make_backend(p: dict) -> ScriptedBackend:
        backends.append(ScriptedBackend(make_script(data), p["max_new_tokens"]))
        return backends[-1]

    params = ood_params(data, tiny_model_dir)
    summary = ood.run_ood("baseline-b", params, tmp_path / "out", model_dir=str(tiny_model_dir),
                          threads=2, make_backend=make_backend)
    code, mc = summary["benchmarks"]["code"], summary["benchmarks"]["mc"]
    # code: [[1,0,1,0],[0,0,1,0]] -> 3/8; P_j = [1/2, 0, 1, 0]: std sqrt(0.171875), SEM /2
    assert (code["n_problems"], code["n_samples"]) == (2, 4)
    assert code["pass@1"] == pytest.approx(3 / 8)
    assert code["pass@1_sem"] == pytest.approx(math.sqrt(0.171875) / 2)
    assert code["pass@4"] == 1.0
    assert code["n_programs_run"] == 4  # 8 samples, 4 distinct (problem, program) pairs
    assert code["statuses"] == {"passed": 3, "failed": 5}
    assert code["frac_cut_at_stop"] == pytest.approx(1 / 8)
    assert code["frac_truncated"] == pytest.approx(2 / 8)  # sample 3 of each problem
    assert code["mean_tokens"] == pytest.approx(6.5)
    assert code["sandbox"]["limits"]["timeout_s"] == 3.0
    assert {"mount", "pid", "ipc", "net"} <= set(code["sandbox"]["namespaces"])
    assert code["data"]["sha256"] and code["generation"] == {
        "backend": "scripted", "engines": 1, "device": "cpu", "max_model_len": None}
    # multiple choice: [[1,0,0,1],[1,1,1,0]] -> 5/8; P_j = [1, 1/2, 1/2, 1/2]
    assert mc["pass@1"] == pytest.approx(5 / 8)
    assert mc["pass@1_sem"] == pytest.approx(math.sqrt(0.046875) / 2)
    assert mc["pass@4"] == 1.0 and mc["frac_no_letter"] == pytest.approx(1 / 8)
    assert "sandbox" not in mc
    # prompts: the code prompt as is; the MC prompt in the chat template, <think> forced
    # after "assistant\n" (the tiny preset's think_prefix_newline)
    code_call, mc_call = backends[0].calls[0], backends[1].calls[0]
    assert code_call[0] == [p["prompt"] for p in data["code"]]
    assert all(p.startswith("<|im_start|>system\n") and p.endswith(
        "<|im_start|>assistant\n<think>\n") and item.prompt in p
        for p, item in zip(mc_call[0], data["mc"], strict=True))
    assert [b.max_new_tokens for b in backends] == [7, 9]
    assert code_call[2] == [request_seed(1234, "code", p["task_id"]) for p in data["code"]]
    assert mc_call[2] == [request_seed(1234, "mc", item.id) for item in data["mc"]]
    frame = pd.read_parquet(tmp_path / "out" / "code.parquet")
    assert frame["passed"].tolist() == [bool(c) for row in CODE_RIGHT for c in row]
    assert frame["cut_at_stop"].tolist() == [True] + [False] * 7
    assert frame["program_completion"][0] == data["code"][0]["canonical_solution"]
    mcf = pd.read_parquet(tmp_path / "out" / "mc.parquet")
    assert mcf["correct"].tolist() == [a == "gold" for row in MC_ANSWERS for a in row]
    assert mcf["extracted"].isna().tolist() == [a == "none" for row in MC_ANSWERS for a in row]
    assert list(mcf["gold"][::N]) == [item.gold_letter for item in data["mc"]]
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["model"]["checkpoint"] == str(tiny_model_dir)
    assert written["protocol"]["n_samples"] == N and "model" not in written["protocol"]


def test_chat_prompt_think_layouts(tiny_model_dir):  # noqa: F811
    from redi.model.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    authors = ood.chat_prompt(tok, "Q?", True, "<think>\n", think_prefix_newline=False)
    assert authors.endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant<think>\n")
    assert ood.chat_prompt(tok, "Q?", False, "<think>\n", False).endswith("assistant\n")


def test_the_job_script_runs_on_the_hf_backend(tmp_path, data, tiny_model_dir):  # noqa: F811
    """scripts/ood_eval.py as the rule calls it, real sampling on the tiny random model."""
    params = ood_params(data, tiny_model_dir, n_samples=2)
    out = tmp_path / "out"
    subprocess.run([sys.executable, "scripts/ood_eval.py", "--params", json.dumps(params),
                    "--label", "baseline-b", "--model-dir", str(tiny_model_dir),
                    "--out-dir", str(out), "--threads", "1", "--log", str(tmp_path / "log")],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    summary = json.loads((out / "summary.json").read_text())
    for name, max_new in (("code", 7), ("mc", 9)):
        frame = pd.read_parquet(out / f"{name}.parquet")
        assert len(frame) == 4 and (frame["n_tokens"] <= max_new).all()
        assert summary["benchmarks"][name]["n_samples"] == 2
    # random weights: no program passes, no letter is extracted
    assert summary["benchmarks"]["code"]["pass@1"] == 0.0
    assert summary["benchmarks"]["mc"]["pass@1"] == 0.0


def test_toy_ood_job_avoids_known_questions(tmp_path):
    first = toy_ood.generate_toy_mc(seed=7, n=3)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "toy_arith.json").write_text(json.dumps(
        [{"id": "a/0", "problem": first[0]["Question"], "answer": "1"}]))
    pd.DataFrame({"problem": ["Here is a long warm-up. " + first[1]["Question"], "x"]}).to_parquet(
        tmp_path / "corpus.parquet")
    known = toy_ood.known_questions(tmp_path / "corpus.parquet", tmp_path / "bench")
    assert known == {first[0]["Question"], first[1]["Question"]}
    rows = toy_ood.run({"kind": "multiple_choice", "n": 3, "seed": 7}, tmp_path / "mc.jsonl",
                       tmp_path / "corpus.parquet", tmp_path / "bench")
    assert rows == toy_ood.generate_toy_mc(7, 3, exclude=known)
    assert len(rows) == 3 and not known & {r["Question"] for r in rows}
    assert multiple_choice.load_local(tmp_path / "mc.jsonl") == rows
    code = toy_ood.run({"kind": "code", "n": 3, "seed": 7}, tmp_path / "code.jsonl")
    assert code_eval.load_problems(tmp_path / "code.jsonl") == code
    with pytest.raises(ValueError, match="unknown out-of-domain kind"):
        toy_ood.run({"kind": "essay", "n": 1, "seed": 0}, tmp_path / "x.jsonl")


# ------------------------------------------------------------------ Table 5


def summary(label: str, run: str, values: dict[str, tuple[float, float]]) -> dict:
    return {"label": label, "model": {"run": run, "step": 9, "checkpoint": f"ck/{run}"},
            "benchmarks": {name: {"pass@1": v, "pass@1_sem": s, "n_samples": 16}
                           for name, (v, s) in values.items()}}


SPEC = {"table": "table5", "preset": "paper", "reference": "sft_3ep", "paper_row": "table1-final",
        "title": "Table 5 (preset paper): out-of-domain evaluation, relative to SFT-3ep.",
        "benchmarks": [{"name": "humaneval", "label": "HumanEval", "kind": "code"},
                       {"name": "gpqa", "label": "GPQA Diamond", "kind": "multiple_choice"}],
        "rows": [{"label": "sft_3ep", "model": "SFT-3ep", "kind": "sft", "runs": ["sft_3ep"]},
                 {"label": "table2-dpo", "model": "DPO", "kind": "group", "runs": ["dpo_a"]},
                 {"label": "table1-final", "model": "REDI (final)", "kind": "run",
                  "runs": ["redi_f"]}]}


def test_relative_improvement_arithmetic(tmp_path):
    paths = []
    for label, run, values in (
            ("sft_3ep", "sft_3ep", {"humaneval": (0.16, 0.01), "gpqa": (0.25, 0.02)}),
            ("table2-dpo", "dpo_a", {"humaneval": (0.12, 0.01), "gpqa": (0.25, 0.02)}),
            ("table1-final", "redi_f", {"humaneval": (0.45, 0.015), "gpqa": (0.317, 0.021)})):
        (tmp_path / label).mkdir()
        (tmp_path / label / "summary.json").write_text(json.dumps(summary(label, run, values)))
        paths.append(tmp_path / label / "summary.json")
    frame = table5.run_table5(SPEC, paths, tmp_path / "t5.csv", tmp_path / "t5.md")
    # (0.45 - 0.16) / 0.16 = +181.25 %; (0.317 - 0.25) / 0.25 = +26.8 %; (0.12 - 0.16) / 0.16
    assert frame["humaneval_rel"].tolist()[1:] == [-25.0, 181.25]
    assert frame["gpqa_rel"].tolist()[1:] == [0.0, 26.8]
    assert frame[["humaneval_rel", "gpqa_rel"]].iloc[0].isna().all()  # the reference row
    assert frame["humaneval_rel_paper"].isna().tolist() == [True, True, False]
    assert (frame["humaneval_rel_paper"][2], frame["gpqa_rel_paper"][2]) == (181.2, 26.8)
    assert frame["humaneval"].tolist() == [16.0, 12.0, 45.0]
    assert frame["gpqa_sem"].tolist() == [2.0, 2.0, 2.1]
    csv = pd.read_csv(tmp_path / "t5.csv")
    assert list(csv.columns[:5]) == ["model", "humaneval", "humaneval_sem", "humaneval_rel",
                                     "humaneval_rel_paper"]
    md = (tmp_path / "t5.md").read_text()
    assert "| REDI (final) | 45.0 ± 1.5 | +181.2 % | +181.2 % | 31.7 ± 2.1 | +26.8 % | +26.8 % |" in md
    assert "| SFT-3ep | 16.0 ± 1.0 | — | — | 25.0 ± 2.0 | — | — |" in md
    assert "| DPO | 12.0 ± 1.0 | -25.0 % | — | 25.0 ± 2.0 | +0.0 % | — |" in md
    assert "over 16 samples" in md and "not comparable" not in md


def test_a_zero_reference_has_no_relative_improvement():
    assert math.isnan(metrics.relative_improvement(0.3, 0.0))
    assert metrics.relative_improvement(0.3, 0.2) == pytest.approx(50.0)
    summaries = {"sft_3ep": summary("sft_3ep", "sft_3ep", {"humaneval": (0.0, 0.0),
                                                           "gpqa": (0.1, 0.01)}),
                 "table1-final": summary("table1-final", "redi_f", {"humaneval": (0.05, 0.01),
                                                                    "gpqa": (0.1, 0.01)})}
    spec = {**SPEC, "preset": "tiny", "rows": [SPEC["rows"][0], SPEC["rows"][2]]}
    frame = table5.table5_frame(spec, summaries)
    assert math.isnan(frame["humaneval_rel"][1]) and frame["gpqa_rel"][1] == 0.0
    md = table5.table5_markdown(frame, spec, "16")
    assert "| 5.0 ± 1.0 | n/a (reference 0) | +181.2 % |" in md and "not comparable" in md
    stale = {**summaries, "table1-final": summary("table1-final", "other",
                                                  {"humaneval": (0.1, 0.0), "gpqa": (0.1, 0.0)})}
    with pytest.raises(ValueError, match="names run 'other'"):
        table5.table5_frame(spec, stale)
