"""The cost plan: job counts, checkpoints, GPU-hours, wall time and disk checked by hand
against the paper's times, and the exact command a user runs, in a copy of the workflow."""

from __future__ import annotations

import csv
import math

import pytest
import yaml

from redi.model import prune
from redi.workflow import config as rc
from redi.workflow import cost_plan as cp
from redi.workflow import paths
from tests.conftest import ROOT, copy_workflow, snakemake

TIMES = cp.load_times(ROOT / paths.TRAINING_TIMES)


def load_config(preset: str) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = preset
    rc.validate_config(config)
    return config


@pytest.fixture(scope="module")
def paper() -> cp.Planner:
    return cp.Planner(load_config("paper"), TIMES)


@pytest.fixture(scope="module")
def tiny() -> cp.Planner:
    return cp.Planner(load_config("tiny"), TIMES)


def rows_by_target(planner: cp.Planner) -> dict[str, dict]:
    return {r["target"]: r for r in cp.target_rows(planner)}


def test_parameter_counts_are_the_hub_models():
    # the models' published sizes (their model cards: 1.54B, 3.21B, 7.62B)
    assert cp.parameters(cp.HUB_ARCHITECTURES["Qwen/Qwen2.5-Math-1.5B"]) == 1_543_714_304
    assert cp.parameters(cp.HUB_ARCHITECTURES["meta-llama/Llama-3.2-3B"]) == 3_212_749_824
    assert cp.parameters(cp.HUB_ARCHITECTURES["Qwen/Qwen2.5-Math-7B"]) == 7_615_616_512


def test_paper_checkpoints_per_run(paper):
    # SFT: 607 steps an epoch (77,629 / 128); every 200 steps and every epoch's end
    assert paper.jobs["train:sft_5ep"].checkpoints == 15 + 5
    assert paper.jobs["train:sft_3ep"].checkpoints == 9 + 3
    # stage 2: 1,662 steps (53,175 / 32): 200 ... 1,600 and the last
    assert paper.jobs["train:redi_a0.8_lr1e-6"].checkpoints == 9
    assert cp.checkpoint_steps(53175, 32, 1, 200, False)[-2:] == [1600, 1662]


def test_paper_table2_by_hand(paper):
    row = rows_by_target(paper)["results/table2.csv"]
    # SFT-3ep, 11 DPO runs (3/4 of the paper's DPO time each) and their one reference
    # pass (1/4), 2 SimPO and 7 REDI runs
    training = 64 + 41.3 / 4 + 11 * 41.3 * 3 / 4 + 2 * 38.7 + 7 * 33.3
    # 12 + 20 x 9 checkpoints at MATH-500 x4 (5.3 GPU-h each); the start and 4 groups'
    # final evaluations (160 GPU-h each)
    assert row["checkpoints"] == 12 + 20 * 9
    evaluation = 192 * 5.3 + 5 * 160
    assert row["gpu_hours"] == pytest.approx(training + evaluation, abs=0.1)
    assert row["wall_h_one_node"] == pytest.approx(row["gpu_hours"] / 8, abs=0.1)
    # longest chain: SFT-3ep (8 h), its curve (12 x 5.3 / 8, which ends after the
    # reference pass and DPO's training, 5.2 h), a stage-2 curve (it starts from the SFT
    # curve's step 0; 9 x 5.3 / 8), the group's final evaluation (20 h)
    assert 12 * 5.3 / 8 > 41.3 / 8
    chain = 8 + 12 * 5.3 / 8 + 9 * 5.3 / 8 + 20
    assert row["wall_h_critical_path"] == pytest.approx(chain, abs=0.1)


def test_paper_disk_by_hand(paper):
    n = 1_543_714_304
    # bf16 weights of every checkpoint; a finished run deleted its resume state
    assert paper.jobs["train:sft_5ep"].disk == 20 * 2 * n
    table1 = rows_by_target(paper)["results/table1.csv"]
    r1 = cp.parameters(cp.HUB_ARCHITECTURES["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"])
    downloads = 2 * n + 2 * r1 + 2 * n  # the base model and the two baselines
    assert table1["disk_gb"] == pytest.approx((29 * 2 * n + downloads) / 1e9, abs=1e-3)
    # pruned: the final and best of each run
    assert table1["disk_gb_pruned"] == pytest.approx((4 * 2 * n + downloads) / 1e9, abs=1e-3)


def test_pruned_disk_is_what_the_prune_jobs_keep(paper, monkeypatch):
    n = 1_543_714_304
    weights = 2 * n
    # the final and (counted apart) best checkpoint, no resume state: redi.prune's rule
    assert paper.jobs["train:sft_5ep"].disk_pruned == 2 * weights
    assert prune.kept_steps([200, 400, 607], 200, every=False) == [200, 607]
    # Figure 8-10's run keeps all 9
    assert paper.full_runs == {"redi_a0.8_lr1e-6"}
    assert paper.jobs["train:redi_a0.8_lr1e-6"].disk_pruned == 9 * weights
    assert paper.jobs["train:redi_a0.5_lr1e-6"].disk_pruned == 2 * weights
    # one definition: the planner follows a change of redi.prune's
    monkeypatch.setattr(prune, "kept_steps", lambda steps, best, every: list(steps[-1:]))
    planner = cp.Planner(load_config("paper"), TIMES)
    assert planner.jobs["train:sft_5ep"].disk_pruned == weights
    assert planner.jobs["train:redi_a0.8_lr1e-6"].disk_pruned == weights
    assert planner.jobs["train:sft_5ep"].disk == 20 * weights


@pytest.mark.parametrize("on", [False, True])
def test_markdown_says_whether_pruning_is_on(on):
    config = load_config("paper")
    config["presets"]["paper"]["prune_checkpoints"] = on
    planner = cp.Planner(config, TIMES)
    md = cp.markdown(planner, cp.target_rows(planner))
    state = "on** (`presets.paper.prune_checkpoints: true`)" if on else (
        "off** (`presets.paper.prune_checkpoints: false`)")
    assert f"Pruning is **{state}" in md
    # both columns either way
    assert "| disk_gb | disk_gb_pruned |" in md


def test_paper_totals(paper):
    rows = rows_by_target(paper)
    every = rows["all"]
    assert every["jobs"] == len(paper.jobs)
    assert every["gpu_hours"] == pytest.approx(sum(j.gpu_hours for j in paper.jobs.values()),
                                               abs=0.1)
    # no target costs more than the whole experiment; claims need every table
    assert all(r["gpu_hours"] <= every["gpu_hours"] for r in rows.values())
    assert rows["results/claims.csv"]["gpu_hours"] >= rows["results/table4.csv"]["gpu_hours"]


def test_tiny_preset_counts_and_no_gpu_time(tiny):
    # 697 SFT traces / 16 = 44 steps an epoch: epoch ends only (save_every_steps 1000)
    assert tiny.jobs["train:sft_3ep"].checkpoints == 3
    assert tiny.jobs["train:sft_5ep"].checkpoints == 5
    # 436 pairs / 16 = 28 steps: 7, 14, 21, 28
    assert tiny.jobs["train:redi_a0.8_lr1e-6"].checkpoints == 4
    # the tiny Qwen2: 3 layers of 49,408 parameters, the final norm, a tied 512 x 64 embedding
    n = 3 * 49408 + 64 + 512 * 64
    assert tiny.params(None) == n
    assert tiny.jobs["train:sft_3ep"].disk == 3 * 4 * n  # fp32 on CPU
    row = rows_by_target(tiny)["results/table2.csv"]
    assert row["checkpoints"] == 3 + 20 * 4
    assert (row["gpu_hours"], row["wall_h_one_node"], row["wall_h_critical_path"]) == (
        0.0, None, None)


def read_csv(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["target"]: r for r in csv.DictReader(f)}


def test_snakemake_target(tmp_path, paper):
    work = copy_workflow(tmp_path / "wf")
    dry = snakemake(work, "results/plan/cost.md", "--config", "preset=paper", "-n")
    assert "cost_plan" in dry.stdout and "total            1" in dry.stdout
    snakemake(work, "results/plan/cost.md", "--config", "preset=paper", "--cores", "1")
    rows = read_csv(work / "results/plan/cost.csv")
    expected = rows_by_target(paper)
    assert set(rows) == set(expected)
    for target, row in rows.items():
        assert math.isclose(float(row["gpu_hours"]), expected[target]["gpu_hours"])
        assert math.isclose(float(row["disk_gb"]), expected[target]["disk_gb"])
    md = (work / "results/plan/cost.md").read_text()
    assert "| results/table2.csv | 49 | 48 | 192 |" in md
    assert "## Assumptions" in md
    assert "Pruning is **off**" in md  # the paper preset's default
