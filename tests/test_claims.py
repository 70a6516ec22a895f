"""The claims rules on hand-made tables and curves: holds, does not hold, not enough
evidence; the registry; the job's files; the spec of the shipped config."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from redi.report import claims
from redi.report.claims import FAILS, HOLDS, UNKNOWN, Claim, Evidence, Verdict
from redi.workflow import report_plan

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "preset": "tiny", "sem_factor": 1.0, "table2_start": "sft_3ep", "table1_sft": "sft_5ep",
    "groups": {"dpo": {"label": "table2-dpo"}, "simpo": {"label": "table2-simpo"},
               "symmetric": {"label": "table2-symmetric_redi"}, "redi": {"label": "table2-redi"}},
    "runs": {"dpo_small_hi": {"objective": "dpo", "lr": 1e-6, "beta": 0.001},
             "dpo_small_lo": {"objective": "dpo", "lr": 2e-7, "beta": 0.001},
             "dpo_big": {"objective": "dpo", "lr": 1e-6, "beta": 0.1},
             "redi_a0.8": {"objective": "redi", "lr": 1e-6, "alpha": 0.8},
             "redi_a0.5": {"objective": "redi", "lr": 1e-6, "alpha": 0.5},
             "redi_a1.0": {"objective": "redi", "lr": 1e-6, "alpha": 1.0}},
    "table4": [], "table5": {"reference": "sft_3ep", "models": ["sft_3ep", "table1-final"],
                             "benchmarks": [{"name": "gpqa", "label": "GPQA"}]},
}


def table(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    """(label, model, avg, avg_sem) rows, the columns the rules read."""
    return pd.DataFrame(rows, columns=["label", "model", "avg", "avg_sem"])


# The paper's Table 2 Avg ± SEM, with our DPO row raised above REDI's
TABLE2 = table([("sft_3ep", "SFT-3ep", 41.9, 0.3), ("table2-dpo", "DPO", 49.5, 0.4),
                ("table2-simpo", "SimPO", 48.1, 0.4), ("table2-redi", "REDI", 48.3, 0.3)])


def curve(points: list[tuple[int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(points, columns=["step", "accuracy", "sem"])


def test_redi_beats_sft_holds() -> None:
    v = claims.evaluate(claims.CLAIMS["redi_beats_sft"], Evidence({"table2": TABLE2}, spec=SPEC))
    # diff 48.3 - 41.9 = 6.4 > σ = hypot(0.3, 0.3) = 0.424
    assert v.verdict == HOLDS
    assert v.ours == "REDI 48.3 ± 0.3 vs SFT-3ep 41.9 ± 0.3"
    assert v.detail == "diff +6.40, σ 0.42"


def test_redi_beats_dpo_does_not_hold() -> None:
    v = claims.evaluate(claims.CLAIMS["redi_beats_dpo"], Evidence({"table2": TABLE2}, spec=SPEC))
    # diff 48.3 - 49.5 = -1.2 < -σ = -0.5
    assert v.verdict == FAILS
    assert v.detail == "diff -1.20, σ 0.50"


def test_within_noise_and_missing_inputs_lack_evidence() -> None:
    ev = Evidence({"table2": TABLE2}, spec=SPEC)
    # SimPO 48.1 ± 0.4 vs REDI 48.3 ± 0.3: diff 0.2 < σ 0.5
    assert claims.evaluate(claims.CLAIMS["redi_beats_simpo"], ev).verdict == UNKNOWN
    no_table = claims.evaluate(claims.CLAIMS["final_beats_sft5ep"], ev)
    assert (no_table.verdict, no_table.detail) == (UNKNOWN, "no table1 in this run")
    no_bases = claims.evaluate(claims.CLAIMS["other_bases"], ev)
    assert (no_bases.verdict, no_bases.detail) == (UNKNOWN, "no other base models in this config")
    no_curves = claims.evaluate(claims.CLAIMS["dpo_high_lr_collapses"], ev)
    assert (no_curves.verdict, no_curves.detail) == (UNKNOWN, "no curve of run dpo_small_hi")


def test_dpo_curves() -> None:
    curves = {"dpo_small_hi": curve([(0, 0.40, 0.01), (10, 0.55, 0.01), (20, 0.30, 0.01)]),
              "dpo_small_lo": curve([(0, 0.40, 0.01), (10, 0.50, 0.01), (20, 0.60, 0.01)]),
              "dpo_big": curve([(0, 0.40, 0.01), (10, 0.45, 0.01), (20, 0.46, 0.01)])}
    ev = Evidence(curves=curves, spec=SPEC)
    collapse = claims.evaluate(claims.CLAIMS["dpo_high_lr_collapses"], ev)
    # peak 55 % at step 10, last 30 %: drop 25 points > σ = hypot(1, 1) points
    assert collapse.verdict == HOLDS
    assert collapse.detail == "drop 25.00, σ 1.41"
    best = claims.evaluate(claims.CLAIMS["dpo_best_small_beta"], ev)
    # best: β 0.001 at LR 2e-7 (60 %) < its β's largest LR 1e-6; vs β 0.1's 46 %
    assert best.verdict == HOLDS
    assert best.ours.startswith("best dpo_small_lo (β 0.001, LR 2e-07)")
    # the small-β high-LR run best of all: its LR is the grid's largest -> does not hold
    curves["dpo_small_hi"] = curve([(0, 0.40, 0.01), (10, 0.70, 0.01), (20, 0.70, 0.01)])
    assert claims.evaluate(claims.CLAIMS["dpo_best_small_beta"], ev).verdict == FAILS
    # its last checkpoint equal to its peak: no collapse
    assert claims.evaluate(claims.CLAIMS["dpo_high_lr_collapses"], ev).verdict == FAILS


def test_asymmetric_uses_the_largest_alpha_below_one_at_the_same_lr() -> None:
    curves = {"redi_a0.8": curve([(0, 0.4, 0.01), (10, 0.62, 0.01)]),
              "redi_a0.5": curve([(0, 0.4, 0.01), (10, 0.50, 0.01)]),
              "redi_a1.0": curve([(0, 0.4, 0.01), (10, 0.55, 0.01), (20, 0.2, 0.01)])}
    v = claims.evaluate(claims.CLAIMS["asymmetric_beats_symmetric"],
                        Evidence(curves=curves, spec=SPEC))
    assert v.verdict == HOLDS
    assert v.ours == ("LR 1e-06: α 0.8 62.0 ± 1.0 (step 10) vs α 1 55.0 ± 1.0 (step 10)")


def test_pass16_and_out_of_domain() -> None:
    p16_t2 = table([("sft_3ep", "SFT-3ep", 71.1, float("nan")),
                    ("table2-redi", "REDI", 73.5, float("nan"))])
    p16_t1 = table([("sft_5ep", "SFT-5ep", 71.9, float("nan")),
                    ("table1-final", "REDI (final)", 71.8, float("nan"))])
    ev = Evidence({"table2_pass16": p16_t2, "table1_pass16": p16_t1}, spec=SPEC)
    # Table 2 kept, Table 1 drops by 0.1 (no SEM): does not hold
    assert claims.evaluate(claims.CLAIMS["pass16_kept"], ev).verdict == FAILS
    t5 = pd.DataFrame([("sft_3ep", "SFT", 20.0, 1.0), ("table1-final", "REDI", 25.0, 1.0)],
                      columns=["label", "model", "gpqa", "gpqa_sem"])
    v = claims.evaluate(claims.CLAIMS["out_of_domain"], Evidence({"table5": t5}, spec=SPEC))
    assert (v.verdict, v.ours) == (HOLDS, "GPQA: REDI 25.0 ± 1.0 vs SFT 20.0 ± 1.0")


def test_a_registered_claim_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def simpo_beats_sft(ev: Evidence) -> Verdict:
        return claims._beats(ev.table("table2"), "table2-simpo", ev.spec["table2_start"])

    registry = {**claims.CLAIMS, "simpo_beats_sft": Claim(
        "SimPO beats SFT.", "Table 2: SimPO Avg − SFT Avg > σ.", "47.2 vs 41.9", simpo_beats_sft)}
    monkeypatch.setattr(claims, "CLAIMS", registry)
    frame = claims.claims_frame(Evidence({"table2": TABLE2}, spec=SPEC))
    assert list(frame["claim"]) == [*claims.CLAIMS]
    new = frame[frame["claim"] == "simpo_beats_sft"].iloc[0]
    assert (new["verdict"], new["ours"]) == (HOLDS, "SimPO 48.1 ± 0.4 vs SFT-3ep 41.9 ± 0.3")


def test_job_writes_csv_and_markdown(tmp_path: Path) -> None:
    TABLE2.assign(role="", run="", config="", step=pd.NA, checkpoint="", selection="").to_csv(
        tmp_path / "table2.csv", index=False)
    curve([(0, 0.4, 0.01), (10, 0.62, 0.01)]).to_csv(tmp_path / "redi_a0.8.csv", index=False)
    frame = claims.run_claims(SPEC, [tmp_path / "table2.csv"], [tmp_path / "redi_a0.8.csv"],
                              tmp_path / "claims.csv", tmp_path / "claims.md")
    written = pd.read_csv(tmp_path / "claims.csv", keep_default_na=False)
    assert list(written["verdict"]) == list(frame["verdict"])
    assert written.set_index("claim").loc["redi_beats_sft", "verdict"] == HOLDS
    md = (tmp_path / "claims.md").read_text()
    # holds: REDI vs SFT; fails: REDI vs DPO; the rest lack a table, a curve or lie in noise
    assert f"{len(claims.CLAIMS)} claims: 1 holds, 1 does not hold, 8 not enough evidence" in md
    assert "toy data" in md


def test_spec_of_the_shipped_config() -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    spec = report_plan.claims_spec(config)
    assert {k: g["label"] for k, g in spec["groups"].items()} == {
        "dpo": "table2-dpo", "simpo": "table2-simpo", "symmetric": "table2-symmetric_redi",
        "redi": "table2-redi"}
    assert spec["runs"]["dpo_b0.001_lr2e-7"] == {"objective": "dpo", "lr": 2e-7, "beta": 0.001}
    assert spec["table4"] == [("llama3b_sft_3ep", "table4-llama3b"),
                              ("qwen7b_sft_3ep", "table4-qwen7b")]
    inputs = report_plan.claims_inputs(config)
    assert "results/table2_pass16.csv" in inputs["tables"]
    assert "results/eval/curves/redi_a1.0_lr1e-6.csv" in inputs["curves"]
