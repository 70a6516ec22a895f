"""The whole tiny preset, for real: `snakemake --cores 2` from a fresh copy builds every
table, figure and the report; a second invocation has nothing to do; a config or code
change replans exactly its downstream jobs. (About ten minutes on 2 cores.)"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_workflow, planned_jobs, require_vllm, snakemake

TABLE2_ORDER = ["SFT-3ep", "DPO", "SimPO", "Symmetric REDI", "REDI"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("e2e"))
    start = time.monotonic()
    snakemake(workdir, "--cores", "2", timeout=3600)  # the default target: everything
    print(f"\ntiny preset, full DAG: {time.monotonic() - start:.0f} s wall")
    return workdir


def benchmarks(workdir: Path) -> list[str]:
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    return [b["name"] for b in cfg["presets"]["tiny"]["benchmarks"]]


def test_every_table_and_figure_is_built(tiny_run):
    for table in ("table1", "table2", "table1_pass16", "table2_pass16", "table3", "table4",
                  "table4_pass16", "table5", "paper_comparison"):
        for ext in ("csv", "md"):
            assert (tiny_run / f"results/{table}.{ext}").stat().st_size > 0, table
    for n in range(2, 11):
        for ext in ("png", "pdf"):
            assert (tiny_run / f"results/figures/fig{n}.{ext}").stat().st_size > 1000, n


def test_token_dynamics_and_cost(tiny_run):
    """Figures 9/10's data and Table 3 from the run's own records."""
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    run = cfg["figures"]["fig9"]
    manifest = json.loads((tiny_run / f"results/train/{run}/manifest.json").read_text())
    entropy = pd.read_csv(tiny_run / f"results/analysis/{run}/entropy.csv")
    steps = [0] + [c["step"] for c in manifest["checkpoints"]]
    assert sorted(set(entropy["step"])) == steps
    assert set(entropy["sample_type"]) == {"train_chosen", "train_rejected", "test_generated"}
    assert (entropy["mean_entropy"] > 0).all() and (entropy["n_tokens"] > 0).all()
    correlation = pd.read_csv(tiny_run / "results/figures/fig10_correlation.csv")
    assert list(correlation["min_frequency"]) == [1, 10]
    assert correlation["n_tokens"].iloc[0] >= correlation["n_tokens"].iloc[1] > 0
    assert correlation["after_step"].iloc[0] == steps[-1]
    table3 = pd.read_csv(tiny_run / "results/table3.csv").set_index("stage")
    assert list(table3.index) == ["SFT 3 ep", "SFT 5 ep", "DPO", "SimPO", "REDI"]
    assert table3.loc["DPO", "runs"] == 11 and table3.loc["REDI", "runs"] == 8
    assert (table3["device"] == "CPU").all() and table3["mfu"].isna().all()
    hours = table3["wall_h"] * table3["devices"]
    assert list(table3["device_hours"]) == pytest.approx(list(hours))


def test_table2_rows_and_averages(tiny_run):
    table = pd.read_csv(tiny_run / "results/table2.csv")
    assert list(table["model"]) == TABLE2_ORDER
    names = benchmarks(tiny_run)
    for row in table.itertuples():
        values = [getattr(row, n) for n in names]
        sems = [getattr(row, f"{n}_sem") for n in names]
        assert all(0 <= v <= 100 for v in values)
        # Avg = plain mean, Avg SEM = sqrt(sum SEM^2) / B (CSV rounds to 4 decimals)
        assert row.avg == pytest.approx(sum(values) / len(values), abs=2e-4)
        assert row.avg_sem == pytest.approx(math.sqrt(sum(s * s for s in sems)) / len(sems),
                                            abs=2e-4)
    # every method row names its run, and the run is one of its group's
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    groups = {g["label"]: g["runs"] for g in cfg["tables"]["table2"]["groups"]}
    for row in table.itertuples():
        if row.model in groups:
            assert row.run in groups[row.model], row.model


def test_table5_out_of_domain(tiny_run):
    """Table 5 from the two toy out-of-domain sets: SFT-3ep, then the final REDI model with
    its relative improvement over SFT-3ep and the paper's beside it."""
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    sets = {b["name"]: b["toy"] for b in cfg["presets"]["tiny"]["ood"]["benchmarks"]}
    table = pd.read_csv(tiny_run / "results/table5.csv")
    assert list(table["model"]) == ["SFT-3ep", "REDI (final)"]
    assert list(table["label"]) == cfg["tables"]["table5"]["models"]
    for name in sets:
        sft, redi = table[name]
        assert 0 <= sft <= 100 and 0 <= redi <= 100
        assert math.isnan(table[f"{name}_rel"][0])
        if sft > 0:
            assert table[f"{name}_rel"][1] == pytest.approx(100 * (redi - sft) / sft, abs=0.01)
    assert list(table["toy_code_rel_paper"].fillna(-1)) == [-1, 181.2]
    assert list(table["toy_mc_rel_paper"].fillna(-1)) == [-1, 26.8]
    for label in cfg["tables"]["table5"]["models"]:
        summary = json.loads((tiny_run / f"results/eval/ood/{label}/summary.json").read_text())
        for name, size in sets.items():
            bench = summary["benchmarks"][name]
            assert (bench["n_problems"], bench["n_samples"]) == (size, 16)
            frame = pd.read_parquet(tiny_run / f"results/eval/ood/{label}/{name}.parquet")
            assert len(frame) == size * 16
        assert summary["benchmarks"]["toy_code"]["sandbox"]["limits"]["timeout_s"] == 3.0


def test_table4_other_base_models(tiny_run):
    """Table 4 from the tiny stand-ins: a Llama-architecture model on its own tokenizer
    (its own data stages) and a wider Qwen2 on the primary's (shared data)."""
    table = pd.read_csv(tiny_run / "results/table4.csv")
    assert list(table["model"]) == ["Llama-3.2-3B SFT-3ep", "Llama-3.2-3B REDI",
                                    "Qwen2.5-Math-7B SFT-3ep", "Qwen2.5-Math-7B REDI"]
    assert list(table["run"]) == ["llama3b_sft_3ep", "llama3b_redi_a0.8_lr1e-6",
                                  "qwen7b_sft_3ep", "qwen7b_redi_a0.8_lr1e-6"]
    for sft, redi in ((0, 1), (2, 3)):
        assert math.isnan(table["avg_rel"][sft])
        if table["avg"][sft] > 0:  # the CSV's Avg is rounded to 4 decimals
            expected = 100 * (table["avg"][redi] - table["avg"][sft]) / table["avg"][sft]
            assert table["avg_rel"][redi] == pytest.approx(expected, abs=0.01)
    assert list(table["avg_rel_paper"].fillna(-1)) == [-1, 17.7, -1, 4.2]
    models = tiny_run / "results/models"
    llama = json.loads((models / "base_llama3b/config.json").read_text())
    qwen = json.loads((models / "base_qwen7b/config.json").read_text())
    assert (llama["architectures"], qwen["architectures"]) == (["LlamaForCausalLM"],
                                                              ["Qwen2ForCausalLM"])
    assert qwen["hidden_size"] == 96 and not (models / "tokenizer_qwen7b").exists()
    template = (models / "base_llama3b/chat_template.jinja").read_text()
    assert "<|start_header_id|>" in template
    # the Llama tokenizer's own length stages, on the same problems as the primary's
    own = pd.read_parquet(tiny_run / "results/data/tokenizer_llama3b/pairs.parquet")
    primary = pd.read_parquet(tiny_run / "results/data/pairs.parquet")
    assert len(own) > 0 and set(own["original_index"]) <= set(
        pd.read_parquet(tiny_run / "results/data/pairs_unfiltered.parquet")["original_index"])
    assert not own["chosen_len"].equals(primary["chosen_len"])


def test_training_taught_the_tiny_model(tiny_run):
    table1 = pd.read_csv(tiny_run / "results/table1.csv").set_index("role")
    base, sft = table1.loc["baseline", "avg"], table1.loc["sft", "avg"]
    # measured: base 0.0, SFT-5ep 45.0 (pass@1 %, strict grading, forced <think>)
    assert sft > base + 10, (base, sft)
    fig2_curve = pd.read_csv(tiny_run / "results/eval/curves/sft_5ep.csv")
    assert fig2_curve["accuracy"].iloc[-1] > fig2_curve["accuracy"].iloc[0]


def test_stage2_logs_and_curves(tiny_run):
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    for run, spec in cfg["runs"].items():
        log = pd.read_csv(tiny_run / f"results/train/{run}/log.csv")
        for column in ("step", "loss", "lr", "grad_norm", "update_norm", "chosen_logps",
                       "rejected_logps", "tokens_per_s"):
            assert log[column].notna().all(), (run, column)
        assert (log["update_norm"] >= 0).all()
        has_margin = spec["objective"] in ("dpo", "simpo")
        assert log["reward_margin"].notna().all() == has_margin, run
        curve = pd.read_csv(tiny_run / f"results/eval/curves/{run}.csv")
        assert curve["step"].iloc[0] == 0 and curve["step"].iloc[-1] == log["step"].iloc[-1]
        best = json.loads((tiny_run / f"results/eval/curves/{run}.best.json").read_text())
        later = curve[curve["step"] > 0]
        assert best["accuracy"] == pytest.approx(later["accuracy"].max())


def test_second_invocation_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_html_report(tiny_run):
    snakemake(tiny_run, "--report", "results/report.html")
    html = (tiny_run / "results/report.html").read_text(errors="replace")
    for name in ("fig2.png", "fig8.png", "fig9.png", "fig10.png", "fig10_correlation.csv",
                 "table2.csv", "table3.csv", "table4.csv", "table4.md", "table5.csv",
                 "paper_comparison.md",
                 "grader_agreement.csv",
                 "grader_disagreements.csv"):
        assert name in html, name


def test_changing_one_lr_replans_that_run_and_its_descendants(tiny_run, tmp_path):
    override = tmp_path / "lr.yaml"
    override.write_text(yaml.safe_dump({"runs": {"redi_a0.2_lr1e-6": {"lr": 3.0e-6}}}))
    jobs = planned_jobs(snakemake(tiny_run, "-n", "--configfile", str(override)))
    jobs.pop("all", None)
    assert jobs == {"stage2": 1, "eval_curve": 1, "final_eval": 1, "table": 1,
                    "paper_comparison": 1, "grader_agreement": 1, "figure": 1, "table3": 1,
                    "claims": 1}


def test_editing_the_plotting_module_replans_only_figures(tiny_run):
    plotting = tiny_run / "redi/report/plotting.py"
    text, stat = plotting.read_text(), plotting.stat()
    try:
        plotting.write_text(text + "\n# an edit\n")
        jobs = planned_jobs(snakemake(tiny_run, "-n"))
    finally:  # leave the run as it was for other tests
        plotting.write_text(text)
        os.utime(plotting, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    jobs.pop("all", None)
    assert jobs == {"figure": 9}  # one wildcard rule: fig2 ... fig10


# rules whose jobs generate text; the overlay of the real engine may rerun only these
# and what is computed from their outputs
GENERATION_RULES = {"eval_curve", "final_eval", "gen_stats", "ood_eval"}
TRAINING_AND_DATA_RULES = {"toy_corpus", "tokenizer", "base_model", "filter_data",
                           "length_filter", "sft_length", "sft", "ref_logps", "stage2",
                           "validate_benchmarks", "toy_ood"}


def use_vllm_venv(workdir: Path) -> None:
    link = workdir / ".venv-vllm"
    if not link.exists():
        link.symlink_to(require_vllm().parents[1])


def test_real_engine_overlay_reruns_only_generation(tiny_run):
    """configs/tiny_vllm.yaml on a finished tiny run: every generation job of Table 2 is
    planned again (the backend is part of their parameters), no training or data job."""
    use_vllm_venv(tiny_run)
    jobs = planned_jobs(snakemake(tiny_run, "-n", "results/table2.csv", "--configfile",
                                  "configs/tiny_vllm.yaml"))
    assert {"eval_curve", "final_eval"} <= set(jobs)
    assert not set(jobs) & TRAINING_AND_DATA_RULES, jobs


def test_real_engine_agrees_with_hf_on_the_same_checkpoint(tiny_run, tmp_path):
    """The final evaluation of SFT-3ep, 16 samples per problem, by the HF backend (the
    plain run) and by 2 real vLLM engines: the samplers differ, the protocol must not,
    so pass@1 agrees within 3 combined SEM on every toy benchmark."""
    use_vllm_venv(tiny_run)
    run = shutil.copytree(tiny_run, tmp_path / "run", symlinks=True)  # keeps mtimes
    target = "results/eval/final/sft_3ep/summary.json"
    hf = json.loads((run / target).read_text())
    start = time.monotonic()
    snakemake(run, "--cores", "2", target, "--configfile", "configs/tiny_vllm.yaml")
    print(f"\nfinal evaluation of sft_3ep on 2 vLLM engines: {time.monotonic() - start:.0f} s")
    vllm = json.loads((run / target).read_text())
    assert hf["generation"]["backend"] == "hf"
    assert {k: vllm["generation"][k] for k in ("backend", "engines", "device")} == {
        "backend": "vllm", "engines": 2, "device": "cpu"}
    for name, ours in vllm["benchmarks"].items():
        ref = hf["benchmarks"][name]
        assert (ours["n_problems"], ours["n_samples"]) == (ref["n_problems"], 16)
        combined = math.sqrt(ours["pass@1_sem"] ** 2 + ref["pass@1_sem"] ** 2)
        print(f"{name}: hf {ref['pass@1']:.4f} ± {ref['pass@1_sem']:.4f}, "
              f"vllm {ours['pass@1']:.4f} ± {ours['pass@1_sem']:.4f}, "
              f"|diff| / combined SEM {abs(ours['pass@1'] - ref['pass@1']) / combined:.2f}")
        assert abs(ours["pass@1"] - ref["pass@1"]) <= 3 * combined, name
