"""The paper preset's evaluation protocol, job by job.

Every generation job the paper preset plans (training curves, final evaluations,
Figure 8's generation statistics, Table 5's out-of-domain evaluations) is checked
against the paper's protocol (section 3.3, appendix C.5): samples, temperature,
top-p, token budget, forced ``<think>`` per model, grader per table, benchmarks and
their sizes, and which checkpoints a run's curve evaluates. The parameters come
from ``redi.sources.plan`` exactly as the rules pass them to the job scripts.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import yaml

from redi.eval import benchmarks, evaluation, token_analysis
from redi.report.plotting import FIGURES
from redi.workflow import config as rc
from redi.workflow import names, ood_plan, paths, plan, report_plan
from tests.conftest import BENCHMARKS_DIR, ROOT


def paper_config() -> dict[str, Any]:
    """config.yaml as ``--config preset=paper`` makes it, validated."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = "paper"
    rc.validate_config(config)
    return config


CONFIG = paper_config()

# the paper's five benchmark files (rllm's copies): name -> (file, problems, sha256).
# AMC23 is the 83-problem AMC 12 2022+2023 set rllm ships, not Qwen's 40-problem one.
BENCHMARKS = {
    "math500": ("math.json", 500,
                "02e232722dd1f9ab307124bfff40621d32193632b6b84aa9a246e701f0478141"),
    "aime24": ("aime.json", 30,
               "03fd341fee10fb71cf906be4eb3042081f314c4d16077489e41f9375085d20d2"),
    "amc23": ("amc.json", 83,
              "2666a217cb566efb77ebfce61841d5d8855d4b4be89633b29df3a43dcfd942dd"),
    "minerva": ("minerva.json", 272,
                "ba6147602d8b2f9071ecf578e29aa1100c634bdfa982d4c6745c2bd3077554ba"),
    "olympiadbench": ("olympiad_bench.json", 675,
                       "c1e099f7b5830fb843fa52d48d0af8a296a94745cb5981b4ce539dd18af6f8ee"),
}

# per kind of job: samples, grader, benchmarks (None: Table 5's own), forced <think>
# of a thinking model. Curves: LightEval's pass@1 over 4 with Math-Verify, no forced
# <think>; tables and Figure 8 (AIME24): rllm's 16 samples with <think> forced.
PROTOCOL = {
    "curve": {"n_samples": 4, "grader": "math_verify", "benchmarks": ["math500"],
              "force_think": False},
    "final": {"n_samples": 16, "grader": "rllm", "benchmarks": list(BENCHMARKS),
              "force_think": True},
    "genstats": {"n_samples": 16, "grader": "rllm", "benchmarks": ["aime24"],
                 "force_think": True},
    "ood": {"n_samples": 16, "grader": None, "benchmarks": None, "force_think": True},
}
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "seed": 1234}
# the paper's 32,768-token context: the response may fill what the prompt leaves
MAX_NEW_TOKENS, MAX_MODEL_LEN = 32768, 32768
# Table 5's budgets: lm-evaluation-harness's HumanEval default, GPQA as the math sets
OOD_MAX_NEW_TOKENS = {"humaneval": 1024, "gpqa_diamond": 32768}
# models that do not think: the paper forced <think> only for its own models (and
# quotes Qwen's official numbers for the Instruct model); such a model is prompted
# without <think> and graded on its whole response
NON_THINKING = {"baseline-qwen_math_instruct_1.5b"}
SAVE_EVERY_STEPS = 200


def training_runs(config: dict[str, Any]) -> list[str]:
    return names.all_sft_runs(config) + plan.stage2_runs(config)


def genstats_runs(config: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r for f, kind in FIGURES.items() if "genstats" in kind.reads
                              for r in report_plan.figure_runs(config, f)))


def generation_jobs(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Job id -> (kind, params) of every generation job the paper preset plans."""
    jobs = {f"curve/{run}": ("curve", plan.intermediate_eval_params(config))
            for run in training_runs(config)}
    for label, model in plan.final_models(config).items():
        jobs[f"final/{label}"] = ("final", plan.final_model_params(config, model))
    for run in genstats_runs(config):
        jobs[f"genstats/{run}"] = ("genstats", plan.genstats_params(config))
    for label in config["tables"]["table5"]["models"]:
        jobs[f"ood/{label}"] = ("ood", ood_plan.ood_eval_params(config, label))
    return jobs


JOBS = generation_jobs(CONFIG)


def thinks(job: str) -> bool:
    return job.split("/", 1)[1] not in NON_THINKING


def test_every_kind_of_generation_job_is_planned() -> None:
    kinds = [kind for kind, _ in JOBS.values()]
    assert {k: kinds.count(k) for k in PROTOCOL} == {
        "curve": len(training_runs(CONFIG)), "final": 13, "genstats": len(genstats_runs(CONFIG)),
        "ood": len(CONFIG["tables"]["table5"]["models"])}
    # Table 1's rows, Table 2's start and groups, Table 4's SFT and REDI rows
    assert set(NON_THINKING) <= {j.split("/", 1)[1] for j in JOBS if j.startswith("final/")}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_sampling(job: str) -> None:
    kind, params = JOBS[job]
    assert {k: params[k] for k in SAMPLING} == SAMPLING
    assert params["n_samples"] == PROTOCOL[kind]["n_samples"]
    assert params["protocol"] == ("intermediate" if kind == "curve" else "final")


@pytest.mark.parametrize("job", sorted(JOBS))
def test_token_budget(job: str) -> None:
    kind, params = JOBS[job]
    assert params["max_model_len"] == MAX_MODEL_LEN
    if kind == "ood":
        assert {b["name"]: b["max_new_tokens"] for b in params["benchmarks"]} == (
            OOD_MAX_NEW_TOKENS)
    else:
        assert params["max_new_tokens"] == MAX_NEW_TOKENS


@pytest.mark.parametrize("job", sorted(JOBS))
def test_forced_think_per_model(job: str) -> None:
    """<think> is forced exactly for thinking models under the final protocol, placed
    as the authors' template does (``assistant<think>\\n``, no newline before it); a
    model that does not think is also graded without looking for ``</think>``."""
    kind, params = JOBS[job]
    expected = PROTOCOL[kind]["force_think"] and thinks(job)
    assert params["force_think"] is expected
    assert (params["think_prefix"], params["think_prefix_newline"]) == ("<think>\n", False)
    if kind == "final":
        assert params["thinks"] is thinks(job)


@pytest.mark.parametrize("job", sorted(j for j in JOBS if JOBS[j][0] != "ood"))
def test_grader_per_table(job: str) -> None:
    kind, params = JOBS[job]
    assert params["grader"] == PROTOCOL[kind]["grader"]
    if kind == "final":  # the tables' grader, the others kept beside it
        assert evaluation.final_modes(params["grader"]) == ["rllm", "strict", "math_verify"]


@pytest.mark.parametrize("job", sorted(j for j in JOBS if JOBS[j][0] != "ood"))
def test_benchmarks(job: str) -> None:
    kind, params = JOBS[job]
    names = [b["name"] for b in params["benchmarks"]]
    assert names == PROTOCOL[kind]["benchmarks"]
    assert all(b["file"] == BENCHMARKS[b["name"]][0] for b in params["benchmarks"])


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_files_and_sizes(name: str) -> None:
    """The files the paper evaluated on, with the problem counts the jobs will read."""
    file, size, sha256 = BENCHMARKS[name]
    spec = next(b for b in plan.benchmark_specs(CONFIG) if b["name"] == name)
    assert spec["file"] == file
    assert hashlib.sha256((BENCHMARKS_DIR / file).read_bytes()).hexdigest() == sha256
    items = benchmarks.load_benchmark({**spec, "dir": str(BENCHMARKS_DIR)})
    assert len(items) == size
    assert len({item["id"] for item in items}) == size  # per-problem seeds need unique ids


@pytest.mark.parametrize("run", training_runs(CONFIG))
def test_every_checkpoint_is_evaluated(run: str) -> None:
    """A run saves a checkpoint every 200 steps (and its last step), and its curve job
    evaluates every checkpoint of its manifest: the curve and the best-checkpoint
    selection see the paper's checkpoint grid."""
    if run in CONFIG["runs"]:
        params = plan.stage2_params(CONFIG, run)
    else:
        match = names.SFT_RUN.fullmatch(run)
        params = plan.sft_params(CONFIG, int(match["epochs"]), match["base"])
    assert params["save_every_steps"] == SAVE_EVERY_STEPS
    assert f"curve/{run}" in JOBS
    assert plan.curve_inputs(CONFIG, run)["manifest"] == paths.manifest(run)


def test_token_analysis_scores_the_papers_prompts() -> None:
    """Figures 9/10 (appendix F): the paper's own prompts (redi/report/paper/paper_sample.csv),
    of which the job has generations for the AIME24 one: Figure 8's AIME24 responses,
    generated with <think> forced as the authors' analysis did."""
    params = plan.analysis_params(CONFIG)
    assert params["selection"] == "paper"
    assert params["benchmark"]["name"] == "aime24" and params["think_prefix"] == "<think>\n"
    items = benchmarks.load_benchmark({**params["benchmark"], "dir": str(BENCHMARKS_DIR)})
    ids, _ = token_analysis.paper_test_ids(token_analysis.paper_items(), "aime24", items)
    assert ids == ["aime24/2"]
