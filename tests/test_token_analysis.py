"""Figures 9 and 10's analysis (redi.eval.token_analysis): samples, grouping, correlation,
and the job on a tiny model."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from redi.eval import token_analysis as ta
from redi.model.models import load_tokenizer
from redi.report import token_stats


def test_pair_sample_is_fixed_and_seeded():
    a = ta.pair_sample(100, 10, seed=3)
    assert a == ta.pair_sample(100, 10, seed=3) == sorted(a) and len(set(a)) == 10
    assert a != ta.pair_sample(100, 10, seed=4)
    assert ta.pair_sample(5, 10, seed=0) == [0, 1, 2, 3, 4]


def test_token_deltas_by_hand():
    """Token 7 twice (-1, -3 before; -0.5, -1.5 after), token 9 once (-2 -> -4)."""
    frame = pd.DataFrame({"step": [0, 0, 0, 5, 5, 5], "sequence": [0, 0, 1, 0, 0, 1],
                          "token_id": [7, 9, 7, 7, 9, 7],
                          "logp": [-1.0, -2.0, -3.0, -0.5, -4.0, -1.5]})
    out = token_stats.token_deltas(frame, 0, 5).set_index("token_id")
    assert out.loc[7].tolist() == [2, -2.0, -1.0, 1.0]
    assert out.loc[9].tolist() == [1, -2.0, -4.0, -2.0]


def test_correlation_by_hand():
    deltas = pd.DataFrame({"token_id": [1, 2, 3, 4], "frequency": [1, 10, 10, 12],
                           "logp_before": [-4.0, -3.0, -2.0, -1.0],
                           "logp_after": [-6.0, -4.0, -2.0, 0.0]})
    deltas["delta_logp"] = deltas["logp_after"] - deltas["logp_before"]  # -2, -1, 0, 1
    all_tokens = token_stats.correlation(deltas, 1)
    assert all_tokens["n_tokens"] == 4 and all_tokens["pearson_r"] == pytest.approx(1.0)
    assert (all_tokens["slope"], all_tokens["intercept"]) == pytest.approx((1.0, 2.0))
    frequent = token_stats.correlation(deltas, 10)
    assert frequent["n_tokens"] == 3 and frequent["pearson_r"] == pytest.approx(1.0)
    assert math.isnan(token_stats.correlation(deltas, 11)["pearson_r"])  # one token: no line


def test_entropy_row_is_a_token_mean():
    row = ta.entropy_row(8, "ck", "train_chosen", sums=[10.0, 2.0], counts=[10, 1])
    assert row["mean_entropy"] == pytest.approx(12 / 11) and row["n_tokens"] == 11


def test_after_step():
    manifest = {"checkpoints": [{"step": 7}, {"step": 14}, {"step": 20}]}
    assert ta.after_step(manifest, "last") == 20 and ta.after_step(manifest, 14) == 14
    with pytest.raises(ValueError, match="not a checkpoint"):
        ta.after_step(manifest, 9)


def test_the_job_on_a_tiny_model(tiny, tmp_path):
    """Two 'checkpoints' (the same base model) scoring the same sequences: identical
    entropies, zero deltas; a sample smaller than the responses is drawn per step."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "toy.json").write_text(json.dumps(
        [{"id": f"q{i}", "problem": f"Compute {i}+1", "answer": str(i + 1)} for i in range(4)]))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"init": str(tiny["base"]), "checkpoints": [
        {"step": 3, "path": str(tiny["base"])}]}))
    responses = pd.DataFrame({
        "step": [0] * 4 + [3] * 4, "benchmark": "toy", "problem_id": ["q0", "q1", "q2", "q3"] * 2,
        "sample": 0, "response": ["<think>\n1+1\n=2\n</think>\nThe result is $\\boxed{2}$."] * 8})
    responses.to_parquet(tmp_path / "responses.parquet")
    params = {"n_pairs": 6, "n_generated": 4, "seed": 0, "micro_batch": 4,
              "max_prompt_length": 128, "max_length": 256, "fig10_after": "last",
              "think_prefix": "<think>\n", "think_prefix_newline": True,
              "benchmark": {"name": "toy", "label": "Toy", "file": "toy.json", "dir": str(bench)}}
    ta.run_token_analysis(str(manifest), str(tiny["pairs"]), str(tmp_path / "responses.parquet"),
                          params, str(tmp_path / "entropy.csv"), str(tmp_path / "tokens.parquet"))
    entropy = pd.read_csv(tmp_path / "entropy.csv")
    assert list(entropy.columns) == ta.ENTROPY_COLUMNS
    assert sorted(set(entropy["sample_type"])) == sorted(ta.SAMPLE_TYPES)
    by_step = entropy.pivot(index="sample_type", columns="step", values="mean_entropy")
    assert (by_step[0] - by_step[3]).abs().max() < 1e-9 and (by_step[0] > 0).all()
    counts = entropy.set_index(["step", "sample_type"])["n_sequences"]
    assert counts[(0, "train_chosen")] == 6 and counts[(3, "test_generated")] == 4
    tokens = pd.read_parquet(tmp_path / "tokens.parquet")
    assert sorted(set(tokens["step"])) == [0, 3]
    drawn = ta.generated_sample(load_tokenizer(tiny["base"]), responses,
                                {f"q{i}": f"Compute {i}+1" for i in range(4)}, 3,
                                {**params, "n_generated": 2})
    assert len(drawn.seqs) == 2 and all(s.n_completion > 0 for s in drawn.seqs)
    deltas = token_stats.token_deltas(tokens, 0, 3)
    assert deltas["delta_logp"].abs().max() < 1e-6 and deltas["frequency"].sum() == len(
        tokens) // 2
