"""Tables 1-2, their markdown twins and the comparison with the paper's numbers."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from redi.eval import metrics
from redi.report import agreement, comparison, table3, tables
from redi.workflow import paths, report_plan
from tests.conftest import ROOT
from tests.support.reports import summary

BENCHMARKS = [{"name": "b1", "label": "Bench-1"}, {"name": "b2", "label": "Bench-2"}]


def write_summaries(root: Path, summaries: list[dict]) -> list[Path]:
    paths = []
    for s in summaries:
        path = root / s["label"] / "summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(s))
        paths.append(path)
    return paths


TABLE2_SPEC = {
    "table": "table2",
    "preset": "tiny",
    "title": "Table 2 (preset tiny): ablation from SFT-3ep.",
    "title_pass16": "Table 2 (preset tiny), pass@16: ablation from SFT-3ep.",
    "selection": "Method rows: best run and checkpoint by peak accuracy.",
    "benchmarks": BENCHMARKS,
    "rows": [
        {"label": "sft_3ep", "model": "SFT-3ep", "role": "start", "runs": ["sft_3ep"],
         "selection": "final checkpoint"},
        {"label": "table2-dpo", "model": "DPO", "role": "group",
         "runs": ["dpo_b0.1_lr1e-6", "dpo_b0.001_lr2e-7"],
         "selection": "best of 2 runs, peak checkpoint"},
    ],
    "run_labels": {"sft_3ep": "SFT 3 epochs", "dpo_b0.1_lr1e-6": "DPO β=0.1 LR=1e-6",
                   "dpo_b0.001_lr2e-7": "DPO β=0.001 LR=2e-7"},
}

TABLE2_SUMMARIES = [
    summary("sft_3ep", {"kind": "sft", "run": "sft_3ep", "step": 150,
                        "checkpoint": "results/train/sft_3ep/checkpoints/step-000150"},
            {"b1": (0.41, 0.004, 0.9), "b2": (0.125, 0.003, 0.5)}),
    summary("table2-dpo", {"kind": "group", "run": "dpo_b0.001_lr2e-7", "step": 24,
                           "checkpoint": "results/train/dpo_b0.001_lr2e-7/checkpoints/step-000024",
                           "selected_from": ["dpo_b0.1_lr1e-6", "dpo_b0.001_lr2e-7"]},
            {"b1": (0.4625, 0.005, 0.925), "b2": (0.1, 0.006, 0.55)}),
]


def test_pass1_table_exact_csv(tmp_path):
    paths = write_summaries(tmp_path / "final", TABLE2_SUMMARIES)
    out = tmp_path / "out"
    tables.run_tables(TABLE2_SPEC, paths, out / "t.csv", out / "t.md", out / "t16.csv",
                         out / "t16.md")
    # avg = (41 + 12.5)/2; avg_sem = sqrt(0.4^2 + 0.3^2)/2 = 0.25
    # avg = (46.25 + 10)/2 = 28.125; avg_sem = sqrt(0.5^2 + 0.6^2)/2 = 0.390512...
    assert (out / "t.csv").read_text() == (
        "model,b1,b1_sem,b2,b2_sem,avg,avg_sem,role,run,config,step,checkpoint,selection,label\n"
        "SFT-3ep,41.0,0.4,12.5,0.3,26.75,0.25,start,sft_3ep,3 epochs,150,"
        "results/train/sft_3ep/checkpoints/step-000150,final checkpoint,sft_3ep\n"
        "DPO,46.25,0.5,10.0,0.6,28.125,0.3905,group,dpo_b0.001_lr2e-7,β=0.001 LR=2e-7,24,"
        "results/train/dpo_b0.001_lr2e-7/checkpoints/step-000024,"
        "\"best of 2 runs, peak checkpoint\",table2-dpo\n"
    )
    assert (out / "t16.csv").read_text() == (
        "model,b1,b2,avg,role,run,config,step,checkpoint,selection,label\n"
        "SFT-3ep,90.0,50.0,70.0,start,sft_3ep,3 epochs,150,"
        "results/train/sft_3ep/checkpoints/step-000150,final checkpoint,sft_3ep\n"
        "DPO,92.5,55.0,73.75,group,dpo_b0.001_lr2e-7,β=0.001 LR=2e-7,24,"
        "results/train/dpo_b0.001_lr2e-7/checkpoints/step-000024,"
        "\"best of 2 runs, peak checkpoint\",table2-dpo\n"
    )
    assert (out / "t.md").read_text() == (
        "**Table 2 (preset tiny): ablation from SFT-3ep.** pass@1 (%) over 16 samples ± SEM "
        "(spread of the 16 per-sample benchmark scores, paper App. C.5). Avg: unweighted mean "
        "over the 2 benchmarks, Avg SEM = √(Σ SEM²)/2. Method rows: best run and checkpoint "
        "by peak accuracy. Grader: strict. Best value per column in bold.\n"
        "\n"
        "| Model | Config | Bench-1 | Bench-2 | Avg |\n"
        "|:--|:--|--:|--:|--:|\n"
        "| SFT-3ep | 3 epochs | 41.0 ± 0.4 | **12.5 ± 0.3** | 26.8 ± 0.2 |\n"
        "| DPO | β=0.001 LR=2e-7 | **46.2 ± 0.5** | 10.0 ± 0.6 | **28.1 ± 0.4** |\n"
        "\n"
        "Rows (run, checkpoint step, checkpoint; summary label):\n"
        "\n"
        "- SFT-3ep: `sft_3ep`, step 150, `results/train/sft_3ep/checkpoints/step-000150` "
        "(final checkpoint; `sft_3ep`)\n"
        "- DPO: `dpo_b0.001_lr2e-7`, step 24, "
        "`results/train/dpo_b0.001_lr2e-7/checkpoints/step-000024` "
        "(best of 2 runs, peak checkpoint; `table2-dpo`)\n"
    )
    md16 = (out / "t16.md").read_text()
    assert md16.startswith("**Table 2 (preset tiny), pass@16: ablation from SFT-3ep.** pass@16 "
                           "(%): share of problems solved by at least one of 16 samples. Avg: "
                           "unweighted mean over the 2 benchmarks.")
    assert "| DPO | β=0.001 LR=2e-7 | **92.5** | **55.0** | **73.8** |" in md16


def test_table4_relative_improvement_of_avg_over_the_sft_row(tmp_path):
    """Table 4's extra columns: (Avg - Avg_SFT) / Avg_SFT in % from unrounded values, and
    the paper's number on the REDI row; pass@16 has neither."""
    spec = {**TABLE2_SPEC, "title": "Table 4 (preset tiny): other base models.",
            "title_pass16": "Table 4 (preset tiny), pass@16: other base models.",
            "rows": [
                {**TABLE2_SPEC["rows"][0], "role": "sft"},
                {**TABLE2_SPEC["rows"][1], "role": "final", "relative_to": "sft_3ep",
                 "paper_relative": 17.7}]}
    paths = write_summaries(tmp_path / "final", TABLE2_SUMMARIES)
    out = tmp_path / "out"
    tables.run_tables(spec, paths, out / "t.csv", out / "t.md", out / "t16.csv",
                         out / "t16.md")
    frame = pd.read_csv(out / "t.csv")
    # Avg 26.75 -> 28.125: +1.375 / 26.75 = +5.1402 %
    assert frame["avg_rel"].tolist()[1] == pytest.approx(5.1402, abs=1e-4)
    assert math.isnan(frame["avg_rel"][0]) and math.isnan(frame["avg_rel_paper"][0])
    assert frame["avg_rel_paper"][1] == 17.7
    md = (out / "t.md").read_text()
    assert "| Model | Config | Bench-1 | Bench-2 | Avg | vs SFT | paper |" in md
    assert "| **28.1 ± 0.4** | +5.1 % | +17.7 % |" in md and "| 26.8 ± 0.2 | — | — |" in md
    assert "avg_rel" not in (out / "t16.csv").read_text()
    assert "vs SFT" not in (out / "t16.md").read_text()


def test_avg_is_mean_of_unrounded_values_and_avg_sem_the_paper_formula():
    # R1-Distill, paper Table 1: rounded cells give 48.54, the paper prints 48.6
    assert tables.average([83.2, 28.3, 62.1, 26.0, 43.1]) == pytest.approx(48.54)
    # Avg SEM of the paper's REDI row (Table 2): sqrt(.2²+1.4²+.8²+.5²+.3²)/5 = sqrt(2.98)/5
    assert metrics.average_sem([0.2, 1.4, 0.8, 0.5, 0.3]) == pytest.approx(0.345254, abs=1e-6)


def test_baseline_rows_and_bold_ties():
    spec = {**TABLE2_SPEC, "rows": [
        {"label": "baseline-x", "model": "Model X", "role": "baseline", "source": "org/x",
         "selection": "external model"},
        {"label": "sft_3ep", "model": "SFT-3ep", "role": "start", "runs": ["sft_3ep"],
         "selection": "final checkpoint"},
    ]}
    summaries = {
        "baseline-x": summary("baseline-x", {"kind": "baseline"},
                              {"b1": (0.4104, 0.004, 0.9), "b2": (0.2, 0.003, 0.5)}),
        "sft_3ep": TABLE2_SUMMARIES[0],
    }
    frame = tables.pass1_table(spec, summaries)
    assert frame.loc[0, ["run", "config", "checkpoint"]].tolist() == ["", "", "org/x"]
    assert pd.isna(frame.loc[0, "step"])
    md = tables.table_markdown(frame, spec, "pass@1", tables.protocol(spec, summaries))
    # 41.04 and 41.0 both show as 41.0: both bold
    assert "| Model X | — | **41.0 ± 0.4** | **20.0 ± 0.3** |" in md
    assert "| SFT-3ep | 3 epochs | **41.0 ± 0.4** | 12.5 ± 0.3 |" in md
    assert "- Model X: external model `org/x` (external model; `baseline-x`)" in md


def test_rows_the_paper_quotes_are_marked():
    spec = {**TABLE2_SPEC, "rows": [
        {"label": "baseline-x", "model": "Model X", "role": "baseline", "source": "org/x",
         "selection": "external model", "quoted_in_paper": True},
        {"label": "baseline-y", "model": "Model Y", "role": "baseline", "source": "org/y",
         "selection": "external model", "quoted_in_paper": False},
    ]}
    scores = {"b1": (0.5, 0.004, 0.9), "b2": (0.25, 0.003, 0.5)}
    summaries = {label: summary(label, {"kind": "baseline"}, scores)
                 for label in ("baseline-x", "baseline-y")}
    frame = tables.pass1_table(spec, summaries)
    md = tables.table_markdown(frame, spec, "pass@1", tables.protocol(spec, summaries))
    assert "| Model X\\* | — | **50.0 ± 0.4** |" in md
    assert "| Model Y | — | **50.0 ± 0.4** |" in md
    assert "\\* The paper quotes this model's officially reported pass@1" in md
    unmarked = {**spec, "rows": [{**r, "quoted_in_paper": False} for r in spec["rows"]]}
    assert "\\*" not in tables.table_markdown(frame, unmarked, "pass@1",
                                                  tables.protocol(spec, summaries))


def test_stale_summary_naming_a_run_outside_the_group_is_refused():
    stale = summary("table2-dpo", {"kind": "group", "run": "dpo_b0.01_lr1e-7", "step": 8,
                                   "checkpoint": "c"}, {"b1": (0.5, 0.01, 0.9),
                                                        "b2": (0.5, 0.01, 0.9)})
    with pytest.raises(ValueError, match="names run 'dpo_b0.01_lr1e-7', not one of"):
        tables.pass1_table(TABLE2_SPEC, {"sft_3ep": TABLE2_SUMMARIES[0], "table2-dpo": stale})


def test_missing_benchmark_is_named():
    partial = summary("sft_3ep", TABLE2_SUMMARIES[0]["model"], {"b1": (0.5, 0.01, 0.9)})
    with pytest.raises(ValueError, match="summary of 'sft_3ep' has no benchmark 'b2'"):
        tables.pass1_table({**TABLE2_SPEC, "rows": TABLE2_SPEC["rows"][:1]},
                              {"sft_3ep": partial})


def test_config_text_strips_the_method():
    assert tables.config_text("DPO β=0.001 LR=2e-7") == "β=0.001 LR=2e-7"
    assert tables.config_text("REDI α=0.8 LR=1e-6 from sft_5ep") == "α=0.8 LR=1e-6 from sft_5ep"
    assert tables.config_text("SFT 5 epochs") == "5 epochs"
    assert tables.config_text("custom") == "custom"


# ------------------------------------------------------------- comparison


def test_sem_units():
    # combined: 1.0 / sqrt(0.3² + 0.4²) = 2.0
    assert comparison.sem_units(1.0, 0.3, 0.4) == (pytest.approx(2.0), "combined")
    assert comparison.sem_units(-1.5, 0.5, None) == (pytest.approx(-3.0), "reproduced")
    assert comparison.sem_units(-1.5, 0.5, math.nan) == (pytest.approx(-3.0), "reproduced")
    assert comparison.sem_units(2.0, None, None) == (None, "none")
    assert comparison.sem_units(2.0, 0.0, None) == (None, "reproduced")


PAPER_BENCH = [{"name": n, "label": lab} for n, lab in zip(
    ["math500", "aime24", "amc23", "minerva", "olympiadbench"], comparison.PAPER_BENCHMARKS,
    strict=True)]


def _table(rows: list[dict], sem: bool) -> pd.DataFrame:
    """An in-memory table CSV for the paper preset (five benchmarks)."""
    records = []
    for r in rows:
        rec = {"model": r["model"], "role": r["role"], "run": r.get("run", ""),
               "config": r.get("config", ""), "step": r.get("step"), "checkpoint": "",
               "selection": "", "label": ""}
        for b, v in zip(PAPER_BENCH, r["values"], strict=True):
            rec[b["name"]] = v
            if sem:
                rec[b["name"] + "_sem"] = r["sem"]
        rec["avg"] = sum(r["values"]) / 5
        if sem:
            rec["avg_sem"] = r["sem"]
        records.append(rec)
    frame = pd.DataFrame(records)
    frame["step"] = frame["step"].astype("Int64")
    return frame


REPORTED = pd.DataFrame(
    [
        ["T2", "Qwen-SFT-1.5B-3ep", "start", "pass@1", 76.7, 18.1, 52.8, 24.6, 37.5, 41.9],
        ["T2", "Qwen-SFT-1.5B-3ep", "start", "sem", 0.3, 1.1, 0.6, 0.5, 0.3, 0.3],
        ["T2", "REDI", "alpha=0.8 lr=1e-6", "pass@1", 81.7, 27.3, 58.8, 30.4, 43.4, 48.3],
        ["T2", "REDI", "alpha=0.8 lr=1e-6", "sem", 0.2, 1.4, 0.8, 0.5, 0.3, 0.3],
        ["T1", "Qwen2.5-Math-1.5B-Instruct (official)", "", "pass@1", 75.8, 10.0, 60.0, 29.4,
         38.1, 42.7],
        ["T1", "Qwen2.5-Math-1.5B (Base; README only; from EMPO)", "", "pass@1", 52.2, 10.0,
         42.5, 10.7, 25.2, 28.1],
        ["T4", "Qwen-REDI-1.5B", "alpha=0.8 lr=1e-6", "pass@16", 95.0, 66.7, 90.4, 57.0, 65.8,
         None],
    ],
    columns=["table", "model", "config", "metric", *comparison.PAPER_BENCHMARKS, "Avg"],
)


def _paper_tables() -> dict[str, pd.DataFrame]:
    return {
        "table2": _table([
            {"model": "SFT-3ep", "role": "start", "run": "sft_3ep", "step": 150,
             "config": "3 epochs", "values": [77.0, 18.1, 52.8, 24.6, 37.5], "sem": 0.4},
            {"model": "REDI", "role": "group", "run": "redi_a0.8_lr1e-6", "step": 1000,
             "config": "α=0.8 LR=1e-6", "values": [80.7, 27.3, 58.8, 30.4, 43.4], "sem": 0.5},
        ], sem=True),
        "table1": _table([
            {"model": "Qwen2.5-Math-1.5B-Instruct", "role": "baseline",
             "values": [75.0, 10.0, 60.0, 29.4, 38.1], "sem": 0.2},
        ], sem=True),
        "table1_pass16": _table([
            {"model": "REDI (final)", "role": "final", "run": "redi_a0.8_lr1e-6_sft5ep",
             "step": 1661, "values": [96.0, 66.7, 90.4, 57.0, 65.8], "sem": 0},
        ], sem=False),
    }  # no T3 rows in REPORTED: table2_pass16 is not needed


def test_comparison_arithmetic_and_matching():
    comp = comparison.compare_with_paper(REPORTED, _paper_tables(), PAPER_BENCH, "paper")
    assert list(comp.columns) == comparison.COMPARISON_COLUMNS
    assert len(comp) == 6 + 6 + 6 + 6 + 5  # every reported cell, pass@16 Avg left out
    cell = comp.set_index(["paper_table", "model", "benchmark"])
    # start row, MATH-500: (77.0 - 76.7) / sqrt(0.4² + 0.3²) = 0.3 / 0.5 = 0.6
    start = cell.loc[("T2", "Qwen-SFT-1.5B-3ep", "MATH-500")]
    assert start[["reported", "reported_sem", "reproduced", "reproduced_sem", "diff",
                  "diff_sem_units"]].tolist() == pytest.approx([76.7, 0.3, 77.0, 0.4, 0.3, 0.6])
    assert start["sem_basis"] == "combined"
    assert (start["our_run"], start["our_step"], start["status"]) == ("sft_3ep", 150, "compared")
    # REDI row, MATH-500: (80.7 - 81.7) / sqrt(0.5² + 0.2²) = -1.8570
    redi = cell.loc[("T2", "REDI", "MATH-500")]
    assert redi["diff"] == pytest.approx(-1.0)
    assert redi["diff_sem_units"] == pytest.approx(-1.857)
    # Avg: (80.7+27.3+58.8+30.4+43.4)/5 = 48.12 vs 48.3, SEM basis sqrt(.5² + .3²)
    avg = cell.loc[("T2", "REDI", "Avg")]
    assert avg["reproduced"] == pytest.approx(48.12)
    assert avg["diff_sem_units"] == pytest.approx(-0.18 / math.hypot(0.5, 0.3), abs=1e-4)
    # no SEM in the paper for the Instruct model: our SEM alone; matched by name
    inst = cell.loc[("T1", "Qwen2.5-Math-1.5B-Instruct (official)", "MATH-500")]
    assert (inst["diff"], inst["sem_basis"]) == (pytest.approx(-0.8), "reproduced")
    assert inst["diff_sem_units"] == pytest.approx(-4.0)
    # the base model is not a configured baseline
    base = cell.loc[("T1", "Qwen2.5-Math-1.5B (Base; README only; from EMPO)", "AIME24")]
    assert base["status"] == "no counterpart: no baseline row named 'Qwen2.5-Math-1.5B'"
    assert pd.isna(base["reproduced"]) and base["reported"] == 10.0
    # pass@16: a difference, no SEM units
    p16 = cell.loc[("T4", "Qwen-REDI-1.5B", "MATH-500")]
    assert (p16["diff"], p16["sem_basis"]) == (pytest.approx(1.0), "none")
    assert pd.isna(p16["diff_sem_units"])
    assert ("T4", "Qwen-REDI-1.5B", "Avg") not in cell.index


def test_comparison_markdown_shows_paper_ours_and_delta():
    comp = comparison.compare_with_paper(REPORTED, _paper_tables(), PAPER_BENCH, "paper")
    md = comparison.comparison_markdown(comp, "paper", PAPER_BENCH, "strict")
    assert "Not comparable" not in md
    assert "## Table 2: ablation from SFT-3ep → `results/table2.csv` (pass@1, %)" in md
    assert ("| REDI (alpha=0.8 lr=1e-6) | paper | 81.7 ± 0.2 | 27.3 ± 1.4 | 58.8 ± 0.8 | "
            "30.4 ± 0.5 | 43.4 ± 0.3 | 48.3 ± 0.3 |") in md
    assert ("|  | ours: REDI `redi_a0.8_lr1e-6` step 1000 | 80.7 ± 0.5 | 27.3 ± 0.5 | "
            "58.8 ± 0.5 | 30.4 ± 0.5 | 43.4 ± 0.5 | 48.1 ± 0.5 |") in md
    assert "|  | Δ (SEM units) | -1.0 (-1.9) | 0.0 (0.0) |" in md
    assert "|  | Δ (SEM units) | +1.0 | 0.0 | 0.0 | 0.0 | 0.0 |" in md  # pass@16, T4
    # a paper row without a counterpart: the reason, no Δ row
    assert ("|  | ours (no counterpart: no baseline row named 'Qwen2.5-Math-1.5B') | — | — | "
            "— | — | — | — |\n\n## Table 2") in md


def test_tiny_preset_is_flagged_not_comparable():
    tiny = [{"name": "toy_arith", "label": "Toy-Arith"}, {"name": "toy_frac", "label": "Toy-Frac"}]
    comp = comparison.compare_with_paper(REPORTED, _paper_tables(), tiny, "tiny")
    assert len(comp) == 29
    assert set(comp["status"]) == {
        "not comparable: the tiny preset evaluates Toy-Arith, Toy-Frac, not the paper's "
        "benchmarks"}
    assert comp["reproduced"].isna().all() and comp["reported"].notna().all()
    md = comparison.comparison_markdown(comp, "tiny", tiny, "strict")
    assert md.startswith(
        "# Reproduced vs reported numbers (preset `tiny`)\n\n**Not comparable.** The `tiny` "
        "preset evaluates toy benchmarks (Toy-Arith, Toy-Frac), not the paper's (MATH-500, "
        "AIME24, AMC23, Minerva, OlympiadBench)")
    assert "| Qwen-REDI-1.5B (alpha=0.8 lr=1e-6) | paper | 95.0 | 66.7 | 90.4 | 57.0 | 65.8 |" in md
    assert "| ours" not in md and "Δ" not in md  # the paper's values only


def test_shipped_reported_results_cover_the_papers_tables():
    reported = comparison.load_reported(ROOT / paths.REPORTED_RESULTS)
    values = reported[reported["metric"] != "sem"]
    assert values.groupby("table").size().to_dict() == {"T1": 5, "T2": 5, "T3": 5, "T4": 3}
    # REDI's Table 2 Avg reproduces from its cells and its Avg SEM from the formula
    redi = reported[(reported["table"] == "T2") & (reported["model"] == "REDI")]
    cells = redi[redi["metric"] == "pass@1"].iloc[0]
    sems = redi[redi["metric"] == "sem"].iloc[0]
    bench = list(comparison.PAPER_BENCHMARKS)
    assert round(tables.average(cells[bench].tolist()), 1) == cells["Avg"]
    assert round(metrics.average_sem(sems[bench].tolist()), 1) == sems["Avg"]


# -------------------------------------- job parameters (redi.workflow.plan, for the rules)


@pytest.fixture()
def cfg() -> dict:
    import yaml

    from redi.workflow import config as rc


    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    return config


def test_table2_spec_rows_in_the_papers_order(cfg):
    cfg["tables"]["table2"]["groups"][1]["pin"] = "simpo_b2_g1_lr5e-7"
    spec = report_plan.table_spec(cfg, "table2")
    assert [(r["label"], r["model"], r["role"], r["selection"]) for r in spec["rows"]] == [
        ("sft_3ep", "SFT-3ep", "start", "final checkpoint"),
        ("table2-dpo", "DPO", "group", "best of 11 runs, peak checkpoint"),
        ("table2-simpo", "SimPO", "group", "pinned run, peak checkpoint"),
        ("table2-symmetric_redi", "Symmetric REDI", "group", "best of 3 runs, peak checkpoint"),
        ("table2-redi", "REDI", "group", "best of 4 runs, peak checkpoint"),
    ]
    assert spec["rows"][2]["runs"] == ["simpo_b2_g1_lr5e-7"]
    assert spec["run_labels"]["dpo_b0.001_lr2e-7"] == "DPO β=0.001 LR=2e-7"
    assert spec["benchmarks"] == [{"name": "toy_arith", "label": "Toy-Arith"},
                                  {"name": "toy_frac", "label": "Toy-Frac"},
                                  {"name": "toy_long", "label": "Toy-Long (OOD)"}]
    assert spec["title_pass16"] == "Table 2 (preset tiny), pass@16: ablation from SFT-3ep."
    assert spec["selection"] == (
        "Method rows: the best run of each group and its checkpoint, both by peak intermediate "
        "Toy-Arith accuracy (pass@1 over 4 samples; config `pin` forces a run); SFT-3ep: its "
        "final checkpoint.")


def test_table1_spec_paper_preset(cfg):
    cfg["preset"] = "paper"
    cfg["tables"]["table1"]["final_checkpoint"] = "last"
    spec = report_plan.table_spec(cfg, "table1")
    assert [(r["label"], r["model"], r["role"]) for r in spec["rows"]] == [
        ("baseline-r1_distill_1.5b", "DeepSeek-R1-Distill-Qwen-1.5B", "baseline"),
        ("baseline-qwen_math_instruct_1.5b", "Qwen2.5-Math-1.5B-Instruct", "baseline"),
        ("sft_5ep", "SFT-5ep", "sft"),
        ("table1-final", "REDI (final)", "final"),
    ]
    assert spec["rows"][0]["source"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    # the paper's Instruct row is Qwen's official number: marked as quoted
    assert [r.get("quoted_in_paper") for r in spec["rows"][:2]] == [False, True]
    assert spec["selection"] == ("REDI (final): run `redi_a0.8_lr1e-6_sft5ep`, its last "
                                 "checkpoint; SFT-5ep: its final checkpoint; baselines as "
                                 "released.")
    assert [b["label"] for b in spec["benchmarks"]] == list(comparison.PAPER_BENCHMARKS)


def test_figure_params(cfg):
    fig3 = report_plan.figure_params(cfg, "fig3")
    assert fig3["runs"] == ["dpo_b0.001_lr1e-6", "dpo_b0.01_lr1e-7", "dpo_b0.1_lr1e-8"]
    assert fig3["benchmark"] == {"name": "toy_arith", "label": "Toy-Arith"}
    assert fig3["step_sizes"] == ["lr_x_grad_norm", "update_norm"]
    # the palette: SFT runs, then every run of any figure in order of appearance (20 runs)
    assert fig3["palette"][:3] == ["sft_3ep", "sft_5ep", "dpo_b0.001_lr1e-6"]
    assert len(fig3["palette"]) == 20
    # its own runs in full; the others only as far as they fix colours and dashes
    assert fig3["specs"]["dpo_b0.1_lr1e-8"] == {"objective": "dpo", "init": "sft_3ep",
                                               "lr": 1e-8, "beta": 0.1}
    assert fig3["specs"]["redi_a0.8_lr1e-6"] == {"objective": "redi"}
    assert fig3["specs"]["dpo_b0.01_lr5e-7"] == {"objective": "dpo", "beta": 0.01}
    assert set(fig3["labels"]) == set(fig3["runs"])
    fig7 = report_plan.figure_params(cfg, "fig7")
    assert fig7["specs"]["redi_a0.8_lr1e-6"] == {"objective": "redi", "init": "sft_3ep",
                                                "lr": 1e-6, "alpha": 0.8}
    # another figure's LR does not change this figure's job parameters
    changed = copy.deepcopy(cfg)
    changed["runs"]["redi_a0.2_lr1e-6"]["lr"] = 3e-6
    # (and as a --configfile override would leave it: that run first)
    changed["runs"] = {"redi_a0.2_lr1e-6": changed["runs"].pop("redi_a0.2_lr1e-6"),
                       **changed["runs"]}
    assert report_plan.figure_params(changed, "fig3") == fig3
    assert report_plan.figure_params(changed, "fig7") != fig7
    assert report_plan.figure_params(cfg, "fig2")["runs"] == ["sft_3ep", "sft_5ep"]
    fig8 = report_plan.figure_params(cfg, "fig8")
    assert fig8["runs"] == ["redi_a0.8_lr1e-6"]
    assert fig8["benchmark"] == {"name": "toy_long", "label": "Toy-Long (OOD)"}


def test_training_time_table():

    paper = pd.read_csv(ROOT / paths.TRAINING_TIMES)
    stages = {"sft_3ep": ["sft_3ep"], "redi_1ep": ["redi_a", "redi_b", "redi_c"],
              "dpo_1ep": ["dpo_missing"]}
    manifests = {"sft_3ep": {"wall_time_s": 7200.0}, "redi_a": {"wall_time_s": 360.0},
                 "redi_b": {"wall_time_s": 720.0}, "redi_c": {"wall_time_s": 36000.0}}
    times = table3.training_time_table(paper, stages, manifests).set_index("stage")
    assert times.loc["sft_3ep", ["paper_hours", "paper_gpu_hours", "our_runs",
                                 "our_hours_median"]].tolist() == [8.0, 64.0, 1, 2.0]
    assert times.loc["redi_1ep", "our_hours_median"] == pytest.approx(0.2)  # median of 3
    assert times.loc["dpo_1ep", "our_runs"] == 0 and pd.isna(times.loc["dpo_1ep",
                                                                        "our_hours_median"])
    md = table3.training_time_markdown(times.reset_index(), "tiny", 0)
    assert "(preset `tiny`, CPU per training job)" in md
    assert "| sft_3ep | 8 h | 64 | 8xA100-80GB | 2 h (1 run) |" in md
    assert "| redi_1ep | 4.17 h | 33.3 | 8xA100-80GB | 12 min (3 runs) |" in md
    assert "| eval_5bench_16samples | 20 h | 160 | 8xA100-80GB | — |" in md


def test_comparison_params_time_every_run(cfg):
    params = report_plan.comparison_params(cfg)
    stages = params["training_stages"]
    assert stages["sft_5ep"] == ["sft_5ep"]
    assert len(stages["dpo_1ep"]) == 11 and len(stages["simpo_1ep"]) == 2
    assert len(stages["redi_1ep"]) == 8  # the seven ablation runs and the final model
    assert (params["grader"], params["train_gpus"]) == ("rllm", 0)


# ------------------------------------------------------- grader agreement

AGREE_SPEC = {"preset": "tiny", "graders": ["rllm", "strict"], "max_examples": 2,
              "benchmarks": BENCHMARKS, "rows": [{"label": "m1", "model": "Model 1"}]}


def samples_frame(rllm: list[int], strict: list[int], per_problem: int = 4) -> pd.DataFrame:
    n = len(rllm)
    return pd.DataFrame({
        "problem_id": [f"p{i // per_problem}" for i in range(n)],
        "sample": [i % per_problem for i in range(n)],
        "response": ["long text"] * n,  # not read
        "gold": [json.dumps(["0.5", "1/2"]) if i < per_problem else json.dumps(142.0)
                 for i in range(n)],
        "extracted_rllm": [None if i == 2 else f"a{i}" for i in range(n)],
        "correct_rllm": [bool(c) for c in rllm],
        "extracted_strict": [f"a{i}" for i in range(n)],
        "correct_strict": [bool(c) for c in strict],
    })


def write_samples(root: Path, frames: dict[tuple[str, str], pd.DataFrame]) -> list[str]:
    paths = []
    for (label, bench), frame in frames.items():
        path = root / label / f"{bench}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
        paths.append(str(path))
    return paths


def test_agreement_table_numbers_through_the_job_script(tmp_path):
    import subprocess
    import sys


    # b1: rllm 3/8, strict 4/8, verdicts differ on samples 1, 2 (p0) and 3 (p1)
    frames = {("m1", "b1"): samples_frame([1, 1, 0, 0, 1, 0, 0, 0], [1, 0, 1, 0, 1, 0, 0, 1]),
              ("m1", "b2"): samples_frame([1, 1, 1, 1], [1, 1, 1, 1])}
    paths = write_samples(tmp_path / "final", frames)
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(ROOT / "scripts/grader_agreement.py"),
                    "--params", json.dumps(AGREE_SPEC), "--samples", *paths,
                    "--csv", str(out / "a.csv"), "--examples", str(out / "d.csv"),
                    "--md", str(out / "a.md"), "--log", str(out / "a.log")],
                   check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert (out / "a.csv").read_text() == (
        "model,benchmark,n_samples,pass@1_rllm,pass@1_strict,agreement,n_disagree,"
        "only_rllm,only_strict,label,benchmark_name\n"
        "Model 1,Bench-1,8,37.5,50.0,62.5,3,1,2,m1,b1\n"
        "Model 1,Bench-2,4,100.0,100.0,100.0,0,0,0,m1,b2\n")
    examples = pd.read_csv(out / "d.csv")
    assert examples[["problem_id", "sample"]].values.tolist() == [["p0", 1], ["p0", 2]]
    assert examples["correct_rllm"].tolist() == [True, False]
    assert examples["gold"].tolist() == ['["0.5", "1/2"]'] * 2
    assert examples["extracted_strict"].tolist() == ["a1", "a2"]
    assert examples["extracted_rllm"].isna().tolist() == [False, True]
    md = (out / "a.md").read_text()
    assert "Over all 12 samples: 75.00 % agree." in md
    assert "| Model 1 | Bench-1 | 37.5 | 50.0 | 62.50 | 3 | 1 | 2 |" in md
    assert '| Model 1 | Bench-1 | p0 #2 | `["0.5", "1/2"]` | ✗ — | ✓ `a2` |' in md


def test_agreement_inputs_are_checked(tmp_path):
    frames = {("m1", "b1"): samples_frame([1], [1])}
    with pytest.raises(ValueError, match="'m1', benchmark 'b2'"):
        agreement.agreement_tables(AGREE_SPEC, frames)
    (path,) = write_samples(tmp_path, {("m1", "b1"): frames["m1", "b1"].drop(
        columns=["correct_rllm"])})
    with pytest.raises(ValueError, match=r"lacks columns \['correct_rllm'\]"):
        agreement.read_samples(path, ["rllm", "strict"])


def test_agreement_spec_covers_every_table_model(cfg):
    spec = report_plan.agreement_spec(cfg)
    assert spec["graders"] == ["rllm", "strict"]
    assert [r["label"] for r in spec["rows"]] == [
        "baseline-tiny-base", "sft_5ep", "table1-final", "sft_3ep", "table2-dpo",
        "table2-simpo", "table2-symmetric_redi", "table2-redi",
        "llama3b_sft_3ep", "table4-llama3b", "qwen7b_sft_3ep", "table4-qwen7b"]
    cfg["evaluation"]["final"]["grader"] = "strict"
    assert report_plan.agreement_spec(cfg)["graders"] == ["strict", "rllm"]
