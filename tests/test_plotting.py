"""Figures 2-8 from synthetic curves, and the report rules in a Snakemake copy."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from redi.report import plotting
from redi.workflow import config as rc
from redi.workflow import plan
from tests.support.reports import summary

from .conftest import ROOT, copy_workflow, planned_jobs, snakemake

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = [f"fig{n}" for n in range(2, 9)]


def curve(run: str, steps: int = 5, every: int = 8, peak: float = 0.6) -> pd.DataFrame:
    """A curves CSV: step 0 = the init model, then every saved checkpoint."""
    rows = []
    for i in range(steps):
        step = i * every
        acc = 0.3 + (peak - 0.3) * math.sin(math.pi * i / (steps - 1) / 1.5)
        rows.append({"step": step, "epoch": step / (every * (steps - 1)),
                     "checkpoint": f"results/train/{run}/checkpoints/step-{step:06d}",
                     "accuracy": acc, "sem": 0.02, "n_problems": 64, "n_samples": 4})
    return pd.DataFrame(rows)


def train_log(steps: int = 32, lr: float = 1e-6, collapse: bool = False) -> pd.DataFrame:
    """A training log.csv: one row per optimizer step."""
    rows = []
    for step in range(1, steps + 1):
        drop = 0.3 * step if collapse and step > steps // 2 else 0.0
        rows.append({"step": step, "epoch": step / steps, "loss": 0.69 - 0.01 * step,
                     "lr": lr, "grad_norm": 2.0, "update_norm": 1e3 * lr * (1 + drop),
                     "lr_x_grad_norm": 2.0 * lr, "chosen_logps": -0.5 - 0.01 * step - drop,
                     "rejected_logps": -0.7 - 0.02 * step - drop, "reward_margin": 0.1,
                     "reward_accuracy": 0.6, "tokens": 4096, "tokens_per_s": 1e4,
                     "elapsed_s": 0.5 * step})
    return pd.DataFrame(rows)


def genstats(benchmark: str, steps: int = 5, every: int = 8) -> pd.DataFrame:
    rows = []
    for i in range(steps):
        tokens = 300.0 - 10 * i
        wait = 2.0 + (1.0 if i == 2 else 0.0)
        rows.append({"step": i * every, "benchmark": benchmark, "n_responses": 512,
                     "mean_tokens": tokens, "mean_wait": wait,
                     "wait_per_1k_tokens": 1000 * wait / tokens, "accuracy": 0.4})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cfg() -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    return config


def styles_for(cfg: dict) -> tuple[dict, dict]:
    runs = ["sft_3ep", "sft_5ep", *cfg["runs"]]
    specs = {r: {"objective": "sft"} if r.startswith("sft_") else cfg["runs"][r] for r in runs}
    labels = {r: plan.run_label(cfg, r) for r in runs}
    return plotting.run_styles(runs, specs, labels), specs


def assert_images(tmp_path: Path, make, name: str) -> None:
    """``make()`` draws the figure: valid, non-empty PNG and PDF, identical when redrawn."""
    files = []
    for attempt in ("first", "again"):
        png, pdf = tmp_path / f"{name}.{attempt}.png", tmp_path / f"{name}.{attempt}.pdf"
        plotting.save_figure(make(), png, pdf)
        files.append((png.read_bytes(), pdf.read_bytes()))
    png, pdf = files[0]
    assert png[:8] == PNG_MAGIC and len(png) > 20_000
    assert pdf[:5] == b"%PDF-" and pdf.rstrip().endswith(b"%%EOF") and len(pdf) > 5_000
    assert files[1] == files[0]  # no timestamps: a rerun gives identical files


def test_fig2(tmp_path, cfg):
    styles, _ = styles_for(cfg)
    curves = {"sft_3ep": curve("sft_3ep"), "sft_5ep": curve("sft_5ep", steps=7, peak=0.7)}
    def make():
        return plotting.plot_fig2(curves, styles, "Toy-Arith")

    fig = make()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "Toy-Arith accuracy (%)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SFT 3 epochs", "SFT 5 epochs"]
    assert ax.lines[0].get_ydata()[0] == pytest.approx(30.0)  # fractions shown in percent
    assert_images(tmp_path, make, "fig2")


@pytest.mark.parametrize("name", ["fig3", "fig5", "fig6", "fig7"])
def test_dynamics_figures(tmp_path, cfg, name):
    styles, _ = styles_for(cfg)
    runs = cfg["figures"][name]
    curves = {r: curve(r) for r in runs}
    logs = {r: train_log(lr=cfg["runs"][r]["lr"], collapse=i == 0) for i, r in enumerate(runs)}
    def make():
        return plotting.plot_dynamics(curves, logs, styles, "Toy-Arith")

    fig = make()
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["Toy-Arith accuracy", "Chosen LogPS",
                                             "Rejected LogPS", "Step size (LR × grad norm)",
                                             "Update norm"]
    assert [a.get_ylabel() for a in axes] == ["accuracy (%)", "mean log-prob per token (nats)",
                                              "mean log-prob per token (nats)",
                                              "LR × ‖∇L‖₂ (pre-clip)", "‖Δθ‖₂ per step"]
    assert axes[3].get_yscale() == axes[4].get_yscale() == "log"
    assert [len(a.lines) for a in axes] == [len(runs)] * 5
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [plan.run_label(cfg, r) for r in runs]
    assert fig.get_size_inches().tolist() == pytest.approx([7.0, 2.2])
    assert_images(tmp_path, make, name)


def test_step_size_panels_plot_the_logged_columns(cfg):
    """The step-size panel plots the log's LR x grad norm (the authors' quantity), the
    next one its update norm, each run's values unchanged."""
    styles, _ = styles_for(cfg)
    runs = cfg["figures"]["fig3"]
    logs = {}
    for i, run in enumerate(runs):
        log = train_log(steps=4, lr=cfg["runs"][run]["lr"])
        log["lr_x_grad_norm"] = [1e-9 * (i + 1) * k for k in (1.0, 2.0, 3.0, 4.0)]
        log["update_norm"] = [1e-4 * (i + 1) * k for k in (4.0, 3.0, 2.0, 1.0)]
        logs[run] = log
    fig = plotting.plot_dynamics({r: curve(r) for r in runs}, logs, styles, "Toy-Arith")
    step_size, update = fig.axes[3], fig.axes[4]
    for i, run in enumerate(runs):
        assert step_size.lines[i].get_label() == update.lines[i].get_label() == styles[run].label
        assert list(step_size.lines[i].get_xdata()) == [1, 2, 3, 4]
        assert list(step_size.lines[i].get_ydata()) == pytest.approx(
            [1e-9 * (i + 1) * k for k in (1, 2, 3, 4)], rel=1e-12)
        assert list(update.lines[i].get_ydata()) == pytest.approx(
            [1e-4 * (i + 1) * k for k in (4, 3, 2, 1)], rel=1e-12)


def test_dynamics_step_size_panels_are_an_option(cfg):
    styles, _ = styles_for(cfg)
    run = cfg["figures"]["fig6"][0]
    fig = plotting.plot_dynamics({run: curve(run)}, {run: train_log()}, styles, "Toy-Arith",
                                 step_sizes=["update_norm"])
    assert len(fig.axes) == 4 and fig.axes[3].get_ylabel() == "‖Δθ‖₂ per step"
    assert fig.axes[3].lines[0].get_ydata()[0] == pytest.approx(1e-3)  # 1e3 x lr 1e-6
    with pytest.raises(ValueError, match="step sizes must be some of"):
        plotting.plot_dynamics({run: curve(run)}, {run: train_log()}, styles, "Toy-Arith",
                               step_sizes=["grad_norm"])


def test_fig4_splits_by_beta(tmp_path, cfg):
    styles, specs = styles_for(cfg)
    runs = cfg["figures"]["fig4"]
    def make():
        return plotting.plot_fig4({r: curve(r) for r in runs}, styles, specs, "Toy-Arith")

    fig = make()
    assert [a.get_title() for a in fig.axes] == ["DPO β = 0.001", "DPO β = 0.01"]
    assert [len(a.lines) for a in fig.axes] == [4, 4]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "DPO β=0.001 LR=1e-6", "DPO β=0.001 LR=5e-7", "DPO β=0.001 LR=2e-7",
        "DPO β=0.001 LR=1e-7"]
    assert_images(tmp_path, make, "fig4")


def test_fig4_needs_beta(cfg):
    styles, specs = styles_for(cfg)
    with pytest.raises(ValueError, match=r"Figure 4 splits DPO runs by β; \['redi_a0.8_lr1e-6'\]"):
        plotting.plot_fig4({"redi_a0.8_lr1e-6": curve("r")}, styles, specs, "Toy-Arith")


def test_fig8(tmp_path, cfg):
    styles, _ = styles_for(cfg)
    stats = pd.concat([genstats("toy_long"), genstats("toy_arith").assign(mean_tokens=1.0)])
    def make():
        return plotting.plot_fig8(stats, "toy_long", "Toy-Long (OOD)", styles["redi_a0.8_lr1e-6"])

    fig = make()
    assert [a.get_ylabel() for a in fig.axes] == ["tokens per response", "“Wait” per response",
                                                  "“Wait” per 1,000 tokens"]
    assert fig.axes[0].lines[0].get_ydata().tolist() == [300.0, 290.0, 280.0, 270.0, 260.0]
    assert fig.get_suptitle() == "REDI α=0.8 LR=1e-6, Toy-Long (OOD)"
    assert_images(tmp_path, make, "fig8")


def test_fig9(tmp_path, cfg):
    styles, _ = styles_for(cfg)
    rows = [{"step": s, "checkpoint": f"c{s}", "sample_type": k, "n_sequences": 4,
             "n_tokens": 40, "mean_entropy": e - 0.1 * s}
            for s in (0, 7, 14) for k, e in (("train_chosen", 1.0), ("train_rejected", 1.2),
                                              ("test_generated", 1.5))]

    def make():
        return plotting.plot_fig9(pd.DataFrame(rows), styles["redi_a0.8_lr1e-6"], "Fig. 8's")

    fig = make()
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["train_chosen", "train_rejected",
                                                       "test_generated"]
    assert ax.lines[2].get_ydata().tolist() == pytest.approx([1.5, 0.8, 0.1])
    assert_images(tmp_path, make, "fig9")


def test_fig10(tmp_path, cfg):
    """Token 1 rises from a high LogP before, tokens 2 and 3 fall from low ones."""
    styles, _ = styles_for(cfg)
    tokens = pd.DataFrame({"step": [0] * 12 + [21] * 12, "sequence": 0,
                           "token_id": [1] * 10 + [2, 3] * 1 + [1] * 10 + [2, 3],
                           "logp": [-0.5] * 10 + [-3.0, -2.0] + [-0.25] * 10 + [-4.0, -2.5]})

    def make():
        return plotting.plot_fig10(tokens, styles["redi_a0.8_lr1e-6"], 21)

    fig = make()
    left, right = fig.axes
    # Δ = 0.5 * before + 0.5 for all three tokens (0.25, -1.0, -0.5): exactly on a line
    assert left.get_title() == "tokens with frequency ≥ 1: n = 3, r = 1.000"
    assert right.get_title().startswith("tokens with frequency ≥ 10: n = 1, r = nan")
    assert left.get_ylabel() == "Δ LogP (step 21 − SFT)"
    assert_images(tmp_path, make, "fig10")


def test_styles_fixed_per_run_and_distinct_within_each_figure(cfg):
    styles, _ = styles_for(cfg)
    assert styles["sft_3ep"].color == "#000000"
    for name in ("fig3", "fig4", "fig5", "fig6", "fig7"):
        runs = cfg["figures"][name]
        assert len({(styles[r].color, styles[r].linestyle) for r in runs}) == len(runs)
    # symmetric REDI dashed, asymmetric solid; DPO dashes by β
    assert styles["redi_a1.0_lr1e-6"].linestyle == "--"
    assert styles["redi_a0.8_lr1e-6"].linestyle == "-"
    assert [styles[r].linestyle for r in cfg["figures"]["fig3"]] == ["-", "--", ":"]


def test_accuracy_in_percent_is_refused(cfg):
    styles, _ = styles_for(cfg)
    bad = curve("sft_3ep").assign(accuracy=lambda f: 100 * f["accuracy"])
    with pytest.raises(ValueError, match="curve sft_3ep: accuracy must be a fraction"):
        plotting.plot_fig2({"sft_3ep": bad}, styles, "Toy-Arith")


# ------------------------------------------------- Snakemake: report rules


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _write(path: Path, text: str, age_s: float) -> None:
    """Write a file dated ``age_s`` seconds ago (upstream files older than downstream)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def write_fake_upstream(workdir: Path, cfg: dict) -> None:
    """Every declared output of the training and evaluation jobs the report rules
    depend on, per the file contracts, dated in DAG order and after the workflow's
    own files, so that Snakemake sees the upstream as complete."""
    old = time.time() - 3600
    for path in workdir.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    preset = cfg["presets"][cfg["preset"]]
    names = [b["name"] for b in preset["benchmarks"]]
    results = workdir / "results"
    train_age, curve_age, final_age = 400, 300, 200

    for run in ["sft_3ep", "sft_5ep", *cfg["runs"]]:
        checkpoints = [{"step": s, "epoch": s / 32,
                        "path": f"results/train/{run}/checkpoints/step-{s:06d}"}
                       for s in (8, 16, 24, 32)]
        manifest = {
            "run": run, "stage": "sft" if run.startswith("sft_") else "stage2", "params": {},
            "total_steps": 32, "steps_per_epoch": 32,
            "checkpoints": [*checkpoints[:-1], {**checkpoints[-1], "final": True}],
            "final_checkpoint": checkpoints[-1]["path"], "log": f"results/train/{run}/log.csv",
            "wall_time_s": 1.0}
        _write(results / "train" / run / "manifest.json", json.dumps(manifest), train_age)
        _write(results / "train" / run / "log.csv", train_log().to_csv(index=False), train_age)
        _write(results / "eval" / "curves" / f"{run}.csv", curve(run).to_csv(index=False),
               curve_age)
        best = {"run": run, "step": 16, "epoch": 0.5, "accuracy": 0.6,
                "checkpoint": checkpoints[1]["path"]}
        _write(results / "eval" / "curves" / f"{run}.best.json", json.dumps(best), curve_age)

    def final(label: str, run: str | None, runs: list[str], shift: float) -> None:
        model = {"kind": "baseline"} if run is None else {
            "kind": "run", "run": run, "step": 16, "selected_from": runs,
            "checkpoint": f"results/train/{run}/checkpoints/step-000016"}
        scores = {n: (0.3 + shift + 0.05 * i, 0.01, 0.8) for i, n in enumerate(names)}
        folder = results / "eval" / "final" / label
        _write(folder / "summary.json", json.dumps(summary(label, model, scores)), final_age)
        for name in names:  # per-sample outputs: declared, not read by the report
            _write(folder / f"{name}.parquet", "not read", final_age)

    t1, t2 = cfg["tables"]["table1"], cfg["tables"]["table2"]
    final(t2["start"], t2["start"], [t2["start"]], 0.0)
    final(t1["sft"], t1["sft"], [t1["sft"]], 0.02)
    for i, g in enumerate(t2["groups"]):
        final(f"table2-{_slug(g['label'])}", g["runs"][-1], g["runs"], 0.01 * i)
    final("table1-final", t1["final"], [t1["final"]], 0.05)
    for b in preset["baselines"]:
        final(f"baseline-{b['name']}", None, [], -0.2)
    _write(results / "eval" / "genstats" / f"{cfg['figures']['fig8']}.csv",
           genstats(preset["fig8_benchmark"]).to_csv(index=False), final_age)


# one wildcard rule per registry (redi.workflow.report_plan.TABLES, redi.report.plotting.FIGURES)
REPORT_RULES = {"table": 2, "paper_comparison": 1, "figure": len(FIGURES)}


def test_report_rules_run_and_only_figures_replan_after_a_plotting_edit(tmp_path, cfg):
    workdir = copy_workflow(tmp_path / "wf")
    write_fake_upstream(workdir, cfg)
    targets = [
        *(f"results/{t}{s}.{e}" for t in ("table1", "table2") for s in ("", "_pass16")
          for e in ("csv", "md")),
        "results/paper_comparison.csv", "results/paper_comparison.md",
        *(f"results/figures/{f}.{e}" for f in FIGURES for e in ("png", "pdf")),
    ]
    # only the report rules are planned: the fake upstream is complete (checked
    # before running anything, so a broken fake never starts training)
    assert planned_jobs(snakemake(workdir, "-n", *targets)) == REPORT_RULES
    snakemake(workdir, "--cores", "2", "--allowed-rules", *REPORT_RULES, "--", *targets)
    for target in targets:
        assert (workdir / target).stat().st_size > 0, target

    # the tables from the shipped config: the paper's row order and traceable runs
    table2 = pd.read_csv(workdir / "results/table2.csv")
    assert table2["model"].tolist() == ["SFT-3ep", "DPO", "SimPO", "Symmetric REDI", "REDI"]
    assert table2["run"].tolist() == ["sft_3ep", "dpo_b0.001_lr1e-7", "simpo_b10_g5_lr3e-7",
                                      "redi_a1.0_lr1e-7", "redi_a0.8_lr1e-6"]
    assert table2["config"].tolist()[1:] == ["β=0.001 LR=1e-7", "β=10 γ=5 LR=3e-7",
                                             "α=1 LR=1e-7", "α=0.8 LR=1e-6"]
    table1 = pd.read_csv(workdir / "results/table1.csv")
    assert table1["model"].tolist() == ["Tiny base model (no SFT)", "SFT-5ep", "REDI (final)"]
    assert table1.loc[2, "config"] == "α=0.8 LR=1e-6 from sft_5ep"
    comparison = pd.read_csv(workdir / "results/paper_comparison.csv")
    assert len(comparison) == 30 + 30 + 25 + 15
    assert comparison["status"].str.startswith("not comparable: the tiny preset").all()
    comparison_md = (workdir / "results/paper_comparison.md").read_text()
    assert "**Not comparable.**" in comparison_md
    assert "| redi_1ep | 4.17 h | 33.3 | 8xA100-80GB | 1 s (8 runs) |" in comparison_md

    # the HTML report embeds every figure and table with its caption
    snakemake(workdir, "--report", "results/report.html", *targets)
    html = (workdir / "results/report.html").read_text()
    for name in ("fig2.png", "fig8.png", "table1.csv", "table2_pass16.md",
                 "paper_comparison.csv"):
        assert name in html, name
    for caption in ("Figure 3: DPO training dynamics", "Figure 8: generation statistics",
                    "Rows in the paper's order", "Reproduction of <em>REDI",
                    "checkpoints as Table 2 (grader"):  # a pass@16 twin's caption
        assert caption in html, caption

    assert "Nothing to be done" in snakemake(workdir, "-n", *targets).stdout
    plotting_py = workdir / "redi" / "report" / "plotting.py"
    plotting_py.write_text(plotting_py.read_text() + "\n# an edit\n")
    assert planned_jobs(snakemake(workdir, "-n", *targets)) == {"figure": len(FIGURES)}
