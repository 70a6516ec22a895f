"""redi.workflow.plan: the job plan the rules are built from (params, models, tables, figures),
on the shipped config for both presets; and the registries as the only place an
objective or a figure is added."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import types

import pytest
import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)

from redi.report import plotting
from redi.train import losses
from redi.workflow import config as rc
from redi.workflow import (
    default_target,
    names,
    ood_plan,
    paths,
    plan,
    report_plan,
    snakemake_helpers,
)

from .conftest import ROOT, copy_workflow, planned_jobs


@pytest.fixture(params=["tiny", "paper"])
def cfg(request) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = request.param
    rc.validate_config(config)
    return config


def shipped(preset: str = "tiny") -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = preset
    rc.validate_config(config)
    return config


# ------------------------------------------------------------ the session


@pytest.mark.parametrize(("argv", "dry"), [
    (["-n"], True), (["--dry-run"], True), (["--dryrun"], True), (["-pn", "all"], True),
    (["-np"], True), (["--cores", "2", "-n"], True), (["--profile", "slurm", "-nF"], True),
    ([], False), (["--cores", "2"], False), (["-c2"], False), (["--notemp"], False),
    (["-p", "results/table2.csv"], False), (["--config", "n=1"], False), (["-F"], False),
])
def test_dry_run_requested(argv, dry):
    assert snakemake_helpers.dry_run_requested(argv) is dry


def test_session_helpers():
    assert snakemake_helpers.slurm_placement(environ={}) == {}
    env = {"REDI_SLURM_ACCOUNT": "p", "REDI_SLURM_PARTITION": "cpu", "REDI_SLURM_GPU_PARTITION": "a"}
    assert snakemake_helpers.slurm_placement(environ=env) == {"slurm_account": "p", "slurm_partition": "cpu"}
    assert snakemake_helpers.slurm_placement(gpu=True, environ=env)["slurm_partition"] == "a"
    assert snakemake_helpers.slurm_placement(gpu=True, environ={"REDI_SLURM_PARTITION": "cpu"}) == {
        "slurm_partition": "cpu"}
    assert snakemake_helpers.shell_args("--x", []) == ""
    assert snakemake_helpers.shell_args("--x", "a b") == "--x 'a b'"
    assert snakemake_helpers.shell_args("--x", ["a", "$(b)"]) == "--x a '$(b)'"
    assert snakemake_helpers.one_of(["a.b", "c"]) == r"a\.b|c" and snakemake_helpers.one_of([]) == "(?!)"
    assert snakemake_helpers.pythonpath("/wf", None) == "/wf"
    assert snakemake_helpers.pythonpath("/wf", "/x") == "/wf:/x"
    code = snakemake_helpers.code_inputs(str(ROOT))
    assert code("scripts/make_tables.py")[:2] == ["scripts/make_tables.py", "redi/__init__.py"]
    assert snakemake_helpers.hp({"b": 1, "a": 2.5}) == '{"a":2.5,"b":1}'


def test_the_plan_imports_no_heavy_package():
    """The Snakefile imports redi.workflow.plan on every invocation (dry runs within seconds)."""
    probe = ("import sys, redi.workflow.plan; "
             "print([m for m in ('pandas', 'matplotlib', 'torch', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------- runs


def test_runs_labels_and_inits(cfg):
    assert plan.sft_runs(cfg) == ["sft_3ep", "sft_5ep"]
    assert len(plan.stage2_runs(cfg)) == 23 and len(plan.stage2_runs(cfg, primary_only=True)) == 21
    assert plan.init_run(cfg, "redi_a0.8_lr1e-6_sft5ep") == "sft_5ep"
    assert plan.run_label(cfg, "simpo_b10_g5_lr3e-7") == "SimPO β=10 γ=5 LR=3e-7"
    assert plan.run_label(cfg, "redi_a1.0_lr2e-7") == "REDI α=1 LR=2e-7"
    assert plan.run_label(cfg, "sft_5ep") == "SFT 5 epochs"
    assert plan.sft_model_name("sft_3ep") == "SFT-3ep"


def test_raw_corpus_path():
    tiny = shipped()
    assert plan.raw_corpus_path(tiny) == "results/data/raw_toy.parquet"
    assert plan.raw_corpus_path(shipped("paper")) == "results/data/raw_hub.parquet"
    tiny["raw_data"] = "my rows.jsonl"
    assert plan.raw_corpus_path(tiny) == "my rows.jsonl"


# ---------------------------------------------------------- per-job params


def test_data_stage_params():
    tiny, paper = shipped(), shipped("paper")
    assert plan.toy_params(tiny) == {"seed": 20250530, "n_problems": 1000,
                                     "instruction_share": 0.3,
                                     "benchmarks": {"toy_arith": 64, "toy_frac": 32,
                                                    "toy_long": 32}}
    assert plan.tokenizer_params(tiny) == {"source": "tiny", "vocab_size": 512}
    assert plan.tokenizer_corpus(tiny) == ["results/data/raw_toy.parquet"]
    assert plan.tokenizer_params(paper) == {
        "source": "Qwen/Qwen2.5-Math-1.5B", "revision": "4a83ca6e4526a4f2da3aa259ec36c259f66b2ab2"}
    assert plan.tokenizer_corpus(paper) == []
    assert plan.base_model_params(tiny)["pretrain_steps"] == 2600
    assert plan.base_model_params(paper) == {
        "source": "Qwen/Qwen2.5-Math-1.5B", "revision": "4a83ca6e4526a4f2da3aa259ec36c259f66b2ab2",
        "rope_theta": 300000.0, "max_position_embeddings": 32768}
    assert plan.filter_params(paper) == {"shuffle_seed": 42}
    assert plan.length_filter_params(tiny).items() >= {"max_prompt_tokens": 160,
                                                       "max_response_tokens": 200}.items()
    assert plan.length_filter_params(paper).items() >= {"max_prompt_tokens": 800,
                                                        "max_response_tokens": 19000}.items()
    assert plan.verify_params(paper) == {"timeout_s": 5}


def test_training_params(cfg):
    scale = names.preset(cfg)["stage2"]["lr_scale"]
    sft = plan.sft_params(cfg, 3)
    assert (sft["stage"], sft["run"], sft["epochs"]) == ("sft", "sft_3ep", 3)
    assert {k: sft[k] for k in rc.OPTIMIZER} == rc.OPTIMIZER
    s2 = plan.stage2_params(cfg, "dpo_b0.01_lr2e-7")
    assert (s2["stage"], s2["objective"], s2["beta"], s2["epochs"]) == ("stage2", "dpo", 0.01, 1)
    assert s2["paper_lr"] == 2e-7 and s2["lr"] == pytest.approx(2e-7 * scale)
    assert "lr_scale" not in s2
    ref = plan.ref_logps_params(cfg, "sft_3ep")
    assert ref == {"init": "sft_3ep", **{k: names.preset(cfg)["stage2"][k] for k in
                                         ("micro_batch", "max_prompt_length", "max_length")}}


def test_evaluation_params(cfg):
    preset = names.preset(cfg)
    folder = preset["benchmarks_dir"] or paths.BENCHMARKS_DOWNLOAD_DIR
    inter = plan.intermediate_eval_params(cfg)
    assert [b["name"] for b in inter["benchmarks"]] == [preset["intermediate_benchmark"]]
    assert (inter["n_samples"], inter["force_think"], inter["grader"]) == (4, False, "math_verify")
    final = plan.final_eval_params(cfg)
    assert [b["dir"] for b in final["benchmarks"]] == [folder] * len(preset["benchmarks"])
    assert (final["n_samples"], final["force_think"], final["grader"]) == (16, True, "rllm")
    assert final["backend"] == preset["eval"]["backend"] and final["protocol"] == "final"
    assert plan.final_eval_params(cfg, force_think=False)["force_think"] is False
    assert plan.benchmark_names(cfg) == [b["name"] for b in preset["benchmarks"]]
    assert plan.eval_env(cfg) == f"../envs/{'vllm' if cfg['preset'] == 'paper' else 'train'}.yaml"
    stats = plan.genstats_params(cfg)
    assert [b["name"] for b in stats["benchmarks"]] == [preset["fig8_benchmark"]]
    model = plan.final_model_params(cfg, plan.final_models(cfg)["table2-simpo"])["model"]
    assert model["run_labels"] == {"simpo_b2_g1_lr5e-7": "SimPO β=2 γ=1 LR=5e-7",
                                   "simpo_b10_g5_lr3e-7": "SimPO β=10 γ=5 LR=3e-7"}


def test_download_params():
    paper = shipped("paper")
    assert [b["name"] for b in plan.benchmark_download_params(paper)["benchmarks"]] == [
        "math500", "aime24", "amc23", "minerva", "olympiadbench"]
    assert plan.benchmark_specs(paper, ["aime24"])[0]["dir"] == "results/data/benchmarks"
    assert plan.baseline_download_params(paper, "qwen_math_instruct_1.5b") == {
        "model": "Qwen/Qwen2.5-Math-1.5B-Instruct",
        "revision": "aafeb0fc6f22cbf0eaeed126eff8be45b0360a35"}


# -------------------------------------------------- models and job inputs


def test_final_models_and_table2_groups(cfg):
    groups = plan.table2_groups(cfg)
    assert [(g["label"], g["slug"], len(g["runs"]), g["pinned"]) for g in groups] == [
        ("DPO", "dpo", 11, False), ("SimPO", "simpo", 2, False),
        ("Symmetric REDI", "symmetric_redi", 3, False), ("REDI", "redi", 4, False)]
    models = plan.final_models(cfg)
    baselines = [f"baseline-{b['name']}" for b in names.preset(cfg)["baselines"]]
    table4 = ["llama3b_sft_3ep", "table4-llama3b", "qwen7b_sft_3ep", "table4-qwen7b"]
    assert list(models) == ["sft_3ep", "sft_5ep", "table2-dpo", "table2-simpo",
                            "table2-symmetric_redi", "table2-redi", "table1-final", *baselines,
                            *table4]
    assert {label: m["kind"] for label, m in models.items()} == {
        "sft_3ep": "sft", "sft_5ep": "sft", "table2-dpo": "group", "table2-simpo": "group",
        "table2-symmetric_redi": "group", "table2-redi": "group", "table1-final": "run",
        **{b: "baseline" for b in baselines},
        **{m: "sft" if m.endswith("_sft_3ep") else "run" for m in table4}}
    assert models["table1-final"] == {"kind": "run", "run": "redi_a0.8_lr1e-6_sft5ep",
                                      "checkpoint": "best"}
    assert models["table2-redi"]["label"] == "REDI"
    pinned = copy.deepcopy(cfg)
    pinned["tables"]["table2"]["groups"][1]["pin"] = "simpo_b2_g1_lr5e-7"
    assert plan.table2_groups(pinned)[1]["runs"] == ["simpo_b2_g1_lr5e-7"]
    assert plan.final_models(pinned)["table2-simpo"]["runs"] == ["simpo_b2_g1_lr5e-7"]


def test_job_inputs():
    tiny, paper = shipped(), shipped("paper")
    assert plan.stage2_inputs(tiny, "dpo_b0.1_lr1e-6") == {
        "init": "results/train/sft_3ep/manifest.json", "pairs": "results/data/pairs.parquet",
        "ref": "results/train/ref_logps/sft_3ep.parquet"}
    assert plan.stage2_inputs(tiny, "redi_a0.8_lr1e-6_sft5ep") == {
        "init": "results/train/sft_5ep/manifest.json", "pairs": "results/data/pairs.parquet",
        "ref": []}
    assert plan.curve_inputs(tiny, "sft_3ep") == {
        "manifest": "results/train/sft_3ep/manifest.json",
        "log_csv": "results/train/sft_3ep/log.csv", "bench": "results/data/toy_benchmarks",
        "valid": "results/data/benchmarks_valid.json"}  # every file checked first
    assert plan.curve_inputs(paper, "simpo_b2_g1_lr5e-7")["init_curve"] == (
        "results/eval/curves/sft_3ep.csv")
    assert plan.final_inputs(tiny, "table2-simpo")["bests"] == [
        "results/eval/curves/simpo_b2_g1_lr5e-7.best.json",
        "results/eval/curves/simpo_b10_g5_lr3e-7.best.json"]
    assert plan.final_inputs(tiny, "sft_5ep")["manifests"] == ["results/train/sft_5ep/manifest.json"]
    assert plan.final_inputs(tiny, "baseline-tiny-base")["model_dir"] == "results/models/base"
    assert plan.final_inputs(tiny, "sft_5ep")["valid"] == paths.BENCHMARKS_VALID
    assert ood_plan.ood_inputs(tiny, "sft_3ep")["valid"] == paths.OOD_VALID
    assert ood_plan.ood_validation_params(paper)["ood"] == [
        {"name": "humaneval", "kind": "code", "path": None},
        {"name": "gpqa_diamond", "kind": "multiple_choice",
         "path": "results/data/ood/gpqa_diamond.jsonl"}]
    assert plan.hub_baselines(paper) == {
        "r1_distill_1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "qwen_math_instruct_1.5b": "Qwen/Qwen2.5-Math-1.5B-Instruct"}
    assert plan.final_inputs(paper, "baseline-r1_distill_1.5b")["model_dir"] == (
        "results/models/hub/r1_distill_1.5b")
    quoted = plan.final_args(None, types.SimpleNamespace(manifests=[], bests=["a b"],
                                                         model_dir=[]))
    assert quoted == "--bests 'a b'"


# ------------------------------------------- out-of-domain evaluation (Table 5)


def test_ood_benchmarks_and_data_jobs():
    tiny, paper = shipped(), shipped("paper")
    assert ood_plan.ood_benchmarks(tiny) == [
        {"name": "toy_code", "label": "Toy-Code", "kind": "code", "source": "toy",
         "path": "results/data/toy_ood/toy_code.jsonl", "max_new_tokens": 48},
        {"name": "toy_mc", "label": "Toy-MC", "kind": "multiple_choice", "source": "toy",
         "path": "results/data/toy_ood/toy_mc.jsonl", "max_new_tokens": 96}]
    assert ood_plan.ood_benchmarks(paper) == [
        {"name": "humaneval", "label": "HumanEval", "kind": "code", "source": "humaneval",
         "path": None, "max_new_tokens": 1024},
        {"name": "gpqa_diamond", "label": "GPQA Diamond", "kind": "multiple_choice",
         "source": "hub", "path": "results/data/ood/gpqa_diamond.jsonl",
         "max_new_tokens": 32768}]  # null: the preset's eval.max_new_tokens
    assert ood_plan.ood_names(tiny, source="toy") == ["toy_code", "toy_mc"]
    assert ood_plan.ood_names(paper, source="toy") == [] and ood_plan.ood_names(paper, "hub") == [
        "gpqa_diamond"]
    assert ood_plan.toy_ood_params(tiny, "toy_mc") == {"kind": "multiple_choice", "n": 32,
                                                   "seed": 20250530}
    assert ood_plan.toy_ood_params(tiny, "toy_code") == {"kind": "code", "n": 16, "seed": 20250530}
    assert ood_plan.toy_ood_inputs(tiny, "toy_code") == {"corpus": [], "benchmarks": []}
    assert ood_plan.toy_ood_inputs(tiny, "toy_mc") == {
        "corpus": ["results/data/raw_toy.parquet"], "benchmarks": ["results/data/toy_benchmarks"]}
    assert ood_plan.ood_download_params(paper, "gpqa_diamond") == {
        "name": "gpqa_diamond", "hub": "Idavidrein/gpqa", "hub_config": "gpqa_diamond",
        "revision": "633f5ee89ab8ad4522a9f850766b73f62147ffdd"}


def test_ood_eval_params_and_inputs(cfg):
    preset, ev = names.preset(cfg), cfg["evaluation"]
    params = ood_plan.ood_eval_params(cfg, "table1-final")
    assert (params["n_samples"], params["temperature"], params["top_p"], params["seed"]) == (
        16, 0.6, 0.95, 1234)
    assert params["force_think"] is True and params["think_prefix"] == "<think>\n"
    assert params["backend"] == preset["eval"]["backend"] and "max_new_tokens" not in params
    assert "grader" not in params  # nothing of the math grading
    assert params["benchmarks"] == ood_plan.ood_benchmarks(cfg)
    assert params["sandbox"] == {"timeout_s": 3.0, "memory_mb": 1024}
    assert params["model"] == {"kind": "run", "run": "redi_a0.8_lr1e-6_sft5ep",
                               "checkpoint": "best",
                               "run_labels": {"redi_a0.8_lr1e-6_sft5ep":
                                              "REDI α=0.8 LR=1e-6 from sft_5ep"}}
    assert params["think_prefix_newline"] is (cfg["preset"] == "tiny")
    # a baseline's force_think: false is followed, as in its final evaluation
    no_think = copy.deepcopy(cfg)
    no_think["presets"][cfg["preset"]]["baselines"][0]["force_think"] = False
    label = f"baseline-{preset['baselines'][0]['name']}"
    assert ood_plan.ood_eval_params(no_think, label)["force_think"] is False
    inputs = ood_plan.ood_inputs(cfg, "table1-final")
    assert inputs["bests"] == ["results/eval/curves/redi_a0.8_lr1e-6_sft5ep.best.json"]
    assert "bench" not in inputs and inputs["manifests"] == [] and inputs["model_dir"] == []
    assert inputs["data"] == [b["path"] for b in ood_plan.ood_benchmarks(cfg) if b["path"]]
    assert ood_plan.ood_inputs(cfg, "sft_3ep")["manifests"] == ["results/train/sft_3ep/manifest.json"]
    assert ev["final"]["n_samples"] == params["n_samples"]


def test_table5_spec_and_inputs(cfg):
    spec = ood_plan.table5_spec(cfg)
    assert spec["reference"] == "sft_3ep" and spec["paper_row"] == "table1-final"
    assert spec["title"] == (f"Table 5 (preset {cfg['preset']}): out-of-domain evaluation, "
                             "relative to SFT-3ep.")
    assert spec["rows"] == [
        {"label": "sft_3ep", "model": "SFT-3ep", "kind": "sft", "runs": ["sft_3ep"]},
        {"label": "table1-final", "model": "REDI (final)", "kind": "run",
         "runs": ["redi_a0.8_lr1e-6_sft5ep"]}]
    assert [b["kind"] for b in spec["benchmarks"]] == ["code", "multiple_choice"]
    assert ood_plan.table5_inputs(cfg) == ["results/eval/ood/sft_3ep/summary.json",
                                       "results/eval/ood/table1-final/summary.json"]
    more = copy.deepcopy(cfg)
    more["tables"]["table5"]["models"] = ["sft_5ep", "table2-redi", "baseline-"
                                          + names.preset(cfg)["baselines"][0]["name"]]
    rows = ood_plan.table5_spec(more)["rows"]
    assert [(r["model"], r["runs"]) for r in rows] == [
        ("SFT-5ep", ["sft_5ep"]),
        ("REDI", ["redi_a0.2_lr1e-6", "redi_a0.5_lr1e-6", "redi_a0.5_lr2e-6", "redi_a0.8_lr1e-6"]),
        (names.preset(cfg)["baselines"][0]["label"], [])]
    assert ood_plan.table5_spec(more)["title"].endswith("relative to SFT-5ep.")


# ------------------------------------------------------------ tables


def test_table_registry(cfg):
    assert list(report_plan.TABLES) == ["table1", "table2", "table4"]
    assert report_plan.tables(cfg) == ["table1", "table2", "table4"]
    for name, kind in report_plan.TABLES.items():
        spec = report_plan.table_spec(cfg, name)
        assert spec["table"] == name and kind.title == f"Table {name[-1]}"
        assert report_plan.table_inputs(cfg, name) == [
            f"results/eval/final/{r['label']}/summary.json" for r in spec["rows"]]
        assert set(spec["run_labels"]) == {r for row in spec["rows"] for r in row.get("runs", [])}
        assert (ROOT / "report" / f"{name}.rst").exists()
        assert (ROOT / "report" / f"{name}_pass16.rst").exists()
    assert paths.table_outputs("{table}") == {
        "csv": "results/{table}.csv", "md": "results/{table}.md",
        "pass16_csv": "results/{table}_pass16.csv", "pass16_md": "results/{table}_pass16.md"}
    assert len(report_plan.agreement_inputs(cfg)) == len(report_plan.agreement_spec(cfg)["rows"]) * len(
        names.preset(cfg)["benchmarks"])


def test_caption_is_rendered_like_snakemakes():
    cfg = shipped()
    caption = snakemake_helpers.Caption(str(ROOT), "fig8")
    assert str(caption) == "report/fig8.rst"
    text = caption.render(snakemake=types.SimpleNamespace(config=cfg))
    assert text.startswith("Figure 8: generation statistics of run ``redi_a0.8_lr1e-6`` on\n"
                           "``toy_long``")
    lookup = (ROOT / "report" / "lookup" / "caption.rst").read_text()
    assert "snakemake.params.caption.render(" in lookup


# ---------------------------------------------------------------- figures


def test_figure_runs_inputs_and_params():
    cfg = shipped()
    assert report_plan.figure_runs(cfg, "fig2") == ["sft_3ep", "sft_5ep"]
    assert report_plan.figure_runs(cfg, "fig8") == ["redi_a0.8_lr1e-6"]
    assert report_plan.figure_runs(cfg)[:3] == ["sft_3ep", "sft_5ep", "dpo_b0.001_lr1e-6"]
    assert report_plan.figure_inputs(cfg, "fig2") == {
        "curves": ["results/eval/curves/sft_3ep.csv", "results/eval/curves/sft_5ep.csv"],
        "logs": [], "genstats": [], "entropy": [], "token_logps": []}
    fig5 = report_plan.figure_inputs(cfg, "fig5")
    assert fig5["logs"] == ["results/train/simpo_b2_g1_lr5e-7/log.csv",
                            "results/train/simpo_b10_g5_lr3e-7/log.csv"]
    assert report_plan.figure_inputs(cfg, "fig8") == {
        "curves": [], "logs": [], "genstats": ["results/eval/genstats/redi_a0.8_lr1e-6.csv"],
        "entropy": [], "token_logps": []}
    assert report_plan.figure_inputs(cfg, "fig10")["token_logps"] == [
        "results/analysis/redi_a0.8_lr1e-6/token_logps.parquet"]
    fig5 = report_plan.figure_params(cfg, "fig5")
    # own runs in full, the others as far as their objective's style_keys go
    assert fig5["specs"]["simpo_b2_g1_lr5e-7"] == {"objective": "simpo", "init": "sft_3ep",
                                                  "lr": 5e-7, "beta": 2.0, "gamma": 1.0}
    assert fig5["specs"]["dpo_b0.1_lr1e-8"] == {"objective": "dpo", "beta": 0.1}
    assert fig5["specs"]["sft_3ep"] == {"objective": "sft"}
    assert fig5["labels"] == {"simpo_b2_g1_lr5e-7": "SimPO β=2 γ=1 LR=5e-7",
                              "simpo_b10_g5_lr3e-7": "SimPO β=10 γ=5 LR=3e-7"}
    assert report_plan.figure_params(cfg, "fig8")["benchmark"] == {"name": "toy_long",
                                                            "label": "Toy-Long (OOD)"}


def test_every_registered_figure_has_its_caption():
    for name, kind in plotting.FIGURES.items():
        assert (ROOT / "report" / f"{name}.rst").exists(), name
        assert set(kind.reads) <= set(plotting.READS) and kind.shows in plotting.SHOWS


def test_all_targets(cfg):
    targets = default_target.all_targets(cfg)
    assert len(targets) == len(set(targets))
    assert targets[0] == "results/data/report.json"
    assert "results/eval/genstats/redi_a0.8_lr1e-6.csv" in targets
    assert "results/table2_pass16.md" in targets and "results/figures/fig8.pdf" in targets
    # 2 + 21 runs of the primary base model, 2 SFT + 2 REDI runs of Table 4's
    assert sum(t.startswith("results/train/") for t in targets) == 27
    assert {"results/table4.csv", "results/table4_pass16.md"} <= set(targets)
    assert sum(t.startswith("results/eval/final/") for t in targets) == len(plan.final_models(cfg))
    assert [t for t in targets if t.startswith("results/eval/ood/")] == ood_plan.table5_inputs(cfg)
    assert {"results/table5.csv", "results/table5.md"} <= set(targets)


# ------------------------------------------------------------ Table 4


def test_table4_runs_data_and_params():
    cfg = shipped()
    assert plan.base_sft_runs(cfg) == ["llama3b_sft_3ep", "qwen7b_sft_3ep"]
    assert plan.stage2_runs(cfg, primary_only=True) == plan.stage2_runs(cfg)[:21]
    assert names.run_base(cfg, "qwen7b_redi_a0.8_lr1e-6") == "qwen7b"
    assert plan.sft_model_name("llama3b_sft_3ep") == "llama3b SFT-3ep"
    assert plan.run_label(cfg, "llama3b_sft_3ep") == "SFT 3 epochs from Llama-3.2-3B"
    assert plan.run_label(cfg, "llama3b_redi_a0.8_lr1e-6") == (
        "REDI α=0.8 LR=1e-6 from llama3b_sft_3ep")
    # llama3b has a tokenizer of its own (own data stages), qwen7b the primary's
    assert plan.own_tokenizers(cfg) == ["llama3b"]
    assert plan.tokenizer_dir(cfg, "llama3b") == "results/models/tokenizer_llama3b"
    assert plan.tokenizer_dir(cfg, "qwen7b") == paths.TOKENIZER_DIR
    assert plan.data_path(cfg, "llama3b", paths.SFT_DATA) == (
        "results/data/tokenizer_llama3b/sft.parquet")
    assert plan.data_path(cfg, "qwen7b", paths.SFT_DATA) == paths.SFT_DATA
    assert plan.pairs_path(cfg, "llama3b_redi_a0.8_lr1e-6") == (
        "results/data/tokenizer_llama3b/pairs.parquet")
    assert plan.pairs_path(cfg, "redi_a0.8_lr1e-6") == paths.PAIRS
    assert plan.base_model_dir("qwen7b") == "results/models/base_qwen7b"
    tiny_llama = names.preset(cfg)["base_models"]["llama3b"]["model"]
    assert plan.tokenizer_params(cfg, "llama3b") == {"source": "tiny", "vocab_size": 512,
                                                     "family": "llama"}
    assert plan.tokenizer_corpus(cfg, "llama3b") == [paths.RAW_PATHS["toy"]]
    assert plan.base_model_params(cfg, "llama3b") == tiny_llama
    # the primary base model's jobs do not change
    assert plan.tokenizer_params(cfg) == {"source": "tiny", "vocab_size": 512}
    assert plan.sft_params(cfg, 3, "llama3b") == {**plan.sft_params(cfg, 3),
                                                  "run": "llama3b_sft_3ep"}
    primary, other = (plan.stage2_params(cfg, r) for r in ("redi_a0.8_lr1e-6",
                                                           "llama3b_redi_a0.8_lr1e-6"))
    assert other == {**primary, "run": "llama3b_redi_a0.8_lr1e-6", "init": "llama3b_sft_3ep"}


def test_table4_paper_overrides_and_inputs():
    cfg = shipped("paper")
    # Qwen2.5-Math-7B: the SFT micro-batch of its base model's overrides
    assert plan.sft_params(cfg, 3, "qwen7b")["micro_batch"] == 4
    assert plan.sft_params(cfg, 3)["micro_batch"] == 8
    assert plan.tokenizer_params(cfg, "llama3b") == {
        "source": "meta-llama/Llama-3.2-3B", "revision": "main", "chat_template": "llama3"}
    assert plan.stage2_inputs(cfg, "qwen7b_redi_a0.8_lr1e-6") == {
        "init": "results/train/qwen7b_sft_3ep/manifest.json", "pairs": paths.PAIRS, "ref": []}


def test_table4_models_and_spec(cfg):
    models = plan.final_models(cfg)
    assert models["llama3b_sft_3ep"] == {"kind": "sft", "run": "llama3b_sft_3ep"}
    assert models["table4-qwen7b"] == {"kind": "run", "run": "qwen7b_redi_a0.8_lr1e-6",
                                       "checkpoint": "best"}
    spec = report_plan.table_spec(cfg, "table4")
    assert [(r["label"], r["model"], r.get("relative_to"), r.get("paper_relative"))
            for r in spec["rows"]] == [
        ("llama3b_sft_3ep", "Llama-3.2-3B SFT-3ep", None, None),
        ("table4-llama3b", "Llama-3.2-3B REDI", "llama3b_sft_3ep", 17.7),
        ("qwen7b_sft_3ep", "Qwen2.5-Math-7B SFT-3ep", None, None),
        ("table4-qwen7b", "Qwen2.5-Math-7B REDI", "qwen7b_sft_3ep", 4.2)]
    assert report_plan.table_inputs(cfg, "table4")[1] == "results/eval/final/table4-llama3b/summary.json"
    # Table 3 and the paper comparison time the primary base model's runs only
    timed = [r["manifest"] for stage in report_plan.table3_spec(cfg)["stages"] for r in stage["runs"]]
    assert not any("llama3b" in m or "qwen7b" in m for m in timed) and len(timed) == 23
    assert "llama3b_redi_a0.8_lr1e-6" not in report_plan.comparison_params(cfg)["training_stages"][
        "redi_1ep"]


def test_without_other_base_models_there_is_no_table4():
    cfg = shipped()
    cfg["base_models"], cfg["tables"]["table4"] = {}, {"models": []}
    cfg["runs"] = {r: s for r, s in cfg["runs"].items() if s["init"].startswith("sft_")}
    rc.validate_config(cfg)
    assert report_plan.tables(cfg) == ["table1", "table2"]
    assert not any("table4" in t for t in default_target.all_targets(cfg))
    assert plan.base_sft_runs(cfg) == [] and plan.own_tokenizers(cfg) == []


# ------------------------------------------- the registries: one place each


@pytest.fixture()
def weighted_sft():
    """A toy objective (weighted NLL of the chosen trace), registered for one test."""
    weight = losses.HyperParam("weight", "w", {"type": "number", "exclusiveMinimum": 0})
    losses.register("wsft", losses.Objective(
        label="WSFT", loss=lambda b, p: -p["weight"] * b.chosen / b.chosen_lengths,
        hyper=(weight,), style_keys=("weight",)))
    yield "wsft"
    del losses.OBJECTIVES["wsft"]


def test_a_registered_objective_is_planned_with_no_other_edit(weighted_sft):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["runs"]["wsft_w0.5"] = {"objective": "wsft", "init": "sft_3ep", "lr": 1e-6, "weight": 0.5}
    cfg["figures"]["fig7"].append("wsft_w0.5")
    rc.validate_config(cfg)
    assert plan.run_label(cfg, "wsft_w0.5") == "WSFT w=0.5 LR=1e-6"
    params = plan.stage2_params(cfg, "wsft_w0.5")
    assert (params["objective"], params["weight"]) == ("wsft", 0.5)
    assert plan.stage2_inputs(cfg, "wsft_w0.5")["ref"] == []  # needs_ref is False
    assert report_plan.figure_params(cfg, "fig3")["specs"]["wsft_w0.5"] == {"objective": "wsft",
                                                                     "weight": 0.5}
    assert report_plan.comparison_params(cfg)["training_stages"]["wsft_1ep"] == ["wsft_w0.5"]
    for bad, key in ((0, "runs.wsft_w0.5.weight"), (None, "runs.wsft_w0.5")):
        broken = copy.deepcopy(cfg)
        if bad is None:
            del broken["runs"]["wsft_w0.5"]["weight"]
        else:
            broken["runs"]["wsft_w0.5"]["weight"] = bad
        with pytest.raises(rc.ConfigError, match=rf"^invalid config key '{key}'"):
            rc.validate_config(broken)


def test_a_registered_objective_dry_runs_in_the_workflow(weighted_sft, tmp_path, caplog,
                                                         monkeypatch):
    """Snakemake in this process (a CLI run would not see the registration): the new
    run plans its stage-2 job, without reference log-probs, with its hyper-parameter."""
    # the Snakefile sets PYTHONPATH and sys.path for its jobs: restored after the test
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    work = copy_workflow(tmp_path / "wf")
    run = {"objective": "wsft", "init": "sft_3ep", "lr": 1.0e-6, "weight": 0.5}
    cwd = os.getcwd()
    caplog.set_level(logging.INFO)  # Snakemake's messages, through its logger
    try:
        with SnakemakeApi(OutputSettings(quiet=None, printshellcmds=True)) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1), storage_settings=StorageSettings(),
                config_settings=ConfigSettings(config={"runs": {"wsft_w0.5": run}}),
                snakefile=work / "Snakefile", workdir=work)
            dag = workflow.dag(DAGSettings(targets={"results/train/wsft_w0.5/manifest.json"}))
            dag.execute_workflow(executor="dryrun")
    finally:
        os.chdir(cwd)  # the API runs in the workflow's folder
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert planned_jobs(types.SimpleNamespace(stdout=text, stderr="")) == {"toy_corpus": 1, "tokenizer": 1, "base_model": 1,
                                  "filter_data": 1, "sft_length": 1, "length_filter": 1, "sft": 1,
                                  "stage2": 1}
    line = next(x for x in text.splitlines() if "scripts/train_stage2.py" in x)
    assert '"objective":"wsft"' in line and '"weight":0.5' in line and "--ref-logps" not in line


def test_a_registered_figure_is_planned_with_no_other_edit(monkeypatch):
    monkeypatch.setitem(plotting.FIGURES, "fig99", plotting.FigureKind(
        lambda d: plotting.plot_fig2(d.curves, d.styles, d.benchmark["label"])))
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    with pytest.raises(rc.ConfigError, match="'fig99' is a required property"):
        rc.validate_config(copy.deepcopy(cfg))
    cfg["figures"]["fig99"] = ["redi_a0.2_lr1e-6"]
    rc.validate_config(cfg)
    assert report_plan.figure_inputs(cfg, "fig99")["curves"] == [
        "results/eval/curves/redi_a0.2_lr1e-6.csv"]
    assert "results/figures/fig99.png" in default_target.all_targets(cfg)
    assert json.loads(snakemake_helpers.hp(report_plan.figure_params(cfg, "fig99")))["runs"] == ["redi_a0.2_lr1e-6"]


def test_analysis_and_table3_plans():
    tiny_config, paper_config = shipped("tiny"), shipped("paper")
    params = plan.analysis_params(paper_config)
    assert (params["n_pairs"], params["fig10_after"], params["max_length"]) == (300, "last", 19800)
    assert params["benchmark"]["name"] == "aime24" and params["think_prefix_newline"] is False
    spec = report_plan.table3_spec(tiny_config)
    labels = [s["label"] for s in spec["stages"]]
    assert labels == ["SFT 3 ep", "SFT 5 ep", "DPO", "SimPO", "REDI"]
    dpo = spec["stages"][2]
    assert len(dpo["runs"]) == 11 and dpo["paper"] == "dpo_1ep"
    assert dpo["shared"] == {"results/benchmarks/ref_logps/sft_3ep.tsv": 11}
    assert all(r["ref"] == "results/benchmarks/ref_logps/sft_3ep.tsv" for r in dpo["runs"])
    assert "shared" not in spec["stages"][0] and spec["stages"][4]["shared"] == {}
    inputs = report_plan.table3_inputs(spec)
    assert "results/benchmarks/sft/sft_5ep.tsv" in inputs
    assert inputs.count("results/benchmarks/ref_logps/sft_3ep.tsv") == 1
