"""Config schema validation, cross-references and per-job params."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from redi import config as rc

from .conftest import ROOT


@pytest.fixture()
def cfg() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_shipped_config_is_valid_for_both_presets(cfg):
    for preset in ("tiny", "paper"):
        c = copy.deepcopy(cfg)
        c["preset"] = preset
        rc.validate_config(c)


def test_paper_grid_has_the_papers_21_runs(cfg):
    runs = cfg["runs"]
    by_obj = {o: [r for r in runs.values() if r["objective"] == o and r["init"] == "sft_3ep"]
              for o in ("dpo", "simpo", "redi")}
    assert len(by_obj["dpo"]) == 11 and len(by_obj["simpo"]) == 2 and len(by_obj["redi"]) == 7
    assert sorted(r["lr"] for r in by_obj["dpo"] if r["beta"] == 0.1) == [1e-8, 1e-7, 1e-6]
    for beta in (0.01, 0.001):
        assert sorted(r["lr"] for r in by_obj["dpo"] if r["beta"] == beta) == [
            1e-7, 2e-7, 5e-7, 1e-6]
    assert sorted((r["alpha"], r["lr"]) for r in by_obj["redi"]) == [
        (0.2, 1e-6), (0.5, 1e-6), (0.5, 2e-6), (0.8, 1e-6), (1.0, 1e-7), (1.0, 2e-7),
        (1.0, 1e-6)]
    final = [r for r in runs.values() if r["init"] == "sft_5ep"]
    assert final == [{"objective": "redi", "init": "sft_5ep", "lr": 1e-6, "alpha": 0.8}]
    assert len(runs) == 21


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c["runs"]["redi_a0.8_lr1e-6"].update(objective="ppo"),
         "runs.redi_a0.8_lr1e-6.objective"),
        (lambda c: c["runs"]["redi_a0.8_lr1e-6"].update(alpha=1.5),
         "runs.redi_a0.8_lr1e-6.alpha"),
        (lambda c: c["runs"]["redi_a0.8_lr1e-6"].update(alpha=-0.1),
         "runs.redi_a0.8_lr1e-6.alpha"),
        (lambda c: c["runs"]["dpo_b0.1_lr1e-6"].update(lr=0), "runs.dpo_b0.1_lr1e-6.lr"),
        (lambda c: c["runs"]["dpo_b0.1_lr1e-6"].update(lr=-1e-6), "runs.dpo_b0.1_lr1e-6.lr"),
        (lambda c: c.update(preset="huge"), "preset"),
        (lambda c: c["runs"]["dpo_b0.1_lr1e-6"].pop("beta"), "runs.dpo_b0.1_lr1e-6"),
        (lambda c: c["runs"]["dpo_b0.1_lr1e-6"].update(alpha=0.5), "runs.dpo_b0.1_lr1e-6.alpha"),
        (lambda c: c["runs"]["redi_a0.8_lr1e-6"].update(init="sft_4ep"),
         "runs.redi_a0.8_lr1e-6.init"),
        (lambda c: c["tables"]["table2"]["groups"][0]["runs"].append("dpo_nope"),
         "tables.table2.groups.0.runs.11"),
        (lambda c: c["tables"]["table2"]["groups"][1].update(pin="dpo_b0.1_lr1e-6"),
         "tables.table2.groups.1.pin"),
        (lambda c: c["figures"].update(fig8="nope"), "figures.fig8"),
        (lambda c: c["presets"]["tiny"]["stage2"].update(lr_scale=0),
         "presets.tiny.stage2.lr_scale"),
        (lambda c: c.update(raw_data="corpus.csv"), "raw_data"),
        (lambda c: c["presets"]["tiny"].update(intermediate_benchmark="gsm8k"),
         "presets.tiny.intermediate_benchmark"),
        (lambda c: c.update(unknown_key=1), "<root>"),
    ],
)
def test_invalid_config_names_the_key(cfg, mutate, key):
    mutate(cfg)
    with pytest.raises(rc.ConfigError) as err:
        rc.validate_config(cfg)
    assert f"'{key}'" in str(err.value)


def test_schema_defaults_are_filled(cfg):
    del cfg["verify_labels"]
    del cfg["tables"]["table1"]["final_checkpoint"]
    rc.validate_config(cfg)
    assert cfg["verify_labels"] is False
    assert cfg["tables"]["table1"]["final_checkpoint"] == "best"


def test_canonical_json_ignores_key_order_and_rejects_nan():
    a = rc.canonical_json({"b": 1, "a": {"y": 2.5, "x": [1, 2]}})
    b = rc.canonical_json({"a": {"x": [1, 2], "y": 2.5}, "b": 1})
    assert a == b == '{"a":{"x":[1,2],"y":2.5},"b":1}'
    with pytest.raises(ValueError):
        rc.canonical_json({"lr": float("nan")})


def test_stage2_params_scale_the_lr_and_keep_the_papers(cfg):
    rc.validate_config(cfg)
    p = rc.stage2_params(cfg, "redi_a0.8_lr1e-6")
    assert p["paper_lr"] == 1e-6
    assert p["lr"] == pytest.approx(1e-6 * cfg["presets"]["tiny"]["stage2"]["lr_scale"])
    assert p["alpha"] == 0.8 and p["objective"] == "redi" and p["init"] == "sft_3ep"
    assert p["weight_decay"] == 1e-4 and p["warmup_ratio"] == 0.1 and p["seed"] == 42
    cfg["preset"] = "paper"
    p = rc.stage2_params(cfg, "redi_a0.8_lr1e-6")
    assert p["lr"] == 1e-6 and p["global_batch"] == 32 and p["max_length"] == 19800
    s = rc.sft_params(cfg, 5)
    assert (s["lr"], s["global_batch"], s["epochs"], s["max_length"]) == (5e-5, 128, 5, 32768)


def test_one_run_change_changes_only_that_runs_params(cfg):
    rc.validate_config(cfg)
    before = {r: rc.canonical_json(rc.stage2_params(cfg, r)) for r in cfg["runs"]}
    cfg["runs"]["dpo_b0.01_lr2e-7"]["lr"] = 3e-7
    after = {r: rc.canonical_json(rc.stage2_params(cfg, r)) for r in cfg["runs"]}
    assert [r for r in before if before[r] != after[r]] == ["dpo_b0.01_lr2e-7"]
    assert json.loads(after["dpo_b0.01_lr2e-7"])["paper_lr"] == 3e-7


def test_run_labels(cfg):
    assert rc.run_label(cfg, "dpo_b0.001_lr2e-7") == "DPO β=0.001 LR=2e-7"
    assert rc.run_label(cfg, "simpo_b2_g1_lr5e-7") == "SimPO β=2 γ=1 LR=5e-7"
    assert rc.run_label(cfg, "redi_a0.8_lr1e-6_sft5ep") == "REDI α=0.8 LR=1e-6 from sft_5ep"
    assert rc.run_label(cfg, "sft_3ep") == "SFT 3 epochs"
