"""Figures 9 and 10's analysis (redi.eval.token_analysis): samples, the paper's selection,
grouping, correlation, and the job on a tiny model."""

from __future__ import annotations

import copy
import json
import logging
import math
import random

import pandas as pd
import pytest
import yaml

from redi.eval import benchmarks
from redi.eval import token_analysis as ta
from redi.model.models import load_tokenizer
from redi.report import token_stats
from redi.workflow import config as rc
from redi.workflow import plan
from tests.conftest import BENCHMARKS_DIR, ROOT


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


def toy_job(tiny, tmp_path, selection: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The job on a toy benchmark of 4 problems, two 'checkpoints' (the same base model),
    one generation per problem and step: params, responses, entropy rows."""
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
    params = {"selection": selection, "n_pairs": 6, "n_generated": 4, "seed": 0,
              "micro_batch": 4, "max_prompt_length": 128, "max_length": 256,
              "fig10_after": "last", "think_prefix": "<think>\n", "think_prefix_newline": True,
              "benchmark": {"name": "toy", "label": "Toy", "file": "toy.json", "dir": str(bench)}}
    ta.run_token_analysis(str(manifest), str(tiny["pairs"]), str(tmp_path / "responses.parquet"),
                          params, str(tmp_path / "entropy.csv"), str(tmp_path / "tokens.parquet"))
    return params, responses, pd.read_csv(tmp_path / "entropy.csv")


def test_the_job_on_a_tiny_model(tiny, tmp_path):
    """Identical entropies, zero deltas; a sample smaller than the responses is drawn
    per step."""
    params, responses, entropy = toy_job(tiny, tmp_path, "sample")
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


def test_the_job_scores_the_paper_selection(tiny, tmp_path, monkeypatch, caplog):
    """With a hand-made paper list: its 2 pairs and its one toy problem at every step;
    the prompts without generations are logged as not matched."""
    monkeypatch.setattr(ta, "PAPER_SAMPLE", write_paper_csv(tmp_path / "paper.csv", TOY_PAPER))
    with caplog.at_level(logging.INFO, logger="redi.eval.token_analysis"):
        _, _, entropy = toy_job(tiny, tmp_path, "paper")
    counts = entropy.set_index(["step", "sample_type"])["n_sequences"]
    assert [counts[(s, k)] for s in (0, 3) for k in ta.SAMPLE_TYPES] == [2, 2, 1] * 2
    assert "training pairs: rows [11, 3]" in caplog.text
    assert "the first sample of ['q2']" in caplog.text
    left = [r.getMessage() for r in caplog.records if "not matched" in r.getMessage()]
    assert len(left) == 2 and "not among the project's benchmarks" in left[0]
    assert "no generations of it (the job scores Figure 8's toy generations)" in left[1]


# ------------------------------------------------------- the paper's selection

COLUMNS = ["kind", "source", "row", "benchmark", "ids", "answer", "what"]
# a hand-made paper list: two pairs, a toy problem, one without and one of another benchmark
TOY_PAPER = [
    ["train", "pairs", 11, "", "", "", "pair A"],
    ["train", "pairs", 3, "", "", "", "pair B"],
    ["test", "Hub toy", 5, "toy", "toy/2|q2", "3", "toy problem q2"],
    ["test", "Hub other", 1, "", "", "", "a problem of no benchmark"],
    ["test", "Hub math", 7, "math500", "m7", "1", "a MATH problem"],
]
TOY_ITEMS = [{"id": f"q{i}", "problem": f"Compute {i}+1", "answer": str(i + 1)} for i in range(4)]


def write_paper_csv(path, rows):
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def test_the_selection_picks_the_named_items(tmp_path):
    items = ta.paper_items(write_paper_csv(tmp_path / "p.csv", TOY_PAPER))
    assert ta.paper_pair_rows(20, items) == [11, 3]
    # the shipped list by default: the authors' four rows
    assert ta.pair_rows(53_175, {"selection": "paper"}) == [41905, 7296, 1639, 48598]
    ids, left_out = ta.paper_test_ids(items, "toy", TOY_ITEMS)
    assert ids == ["q2"] and len(left_out) == 2
    assert left_out[0].startswith("a problem of no benchmark (Hub other row 1)")
    keys = [(p, s) for p in ("q0", "q1", "q2", "q3") for s in (2, 0, 1)]
    assert ta.generated_keys(pd.DataFrame(keys, columns=["problem_id", "sample"]), 5,
                             {"selection": "paper"}, ids) == {("q2", 0)}
    sample = {"selection": "sample", "seed": 0, "n_generated": 5, "n_pairs": 4}
    assert len(ta.generated_keys(pd.DataFrame(keys, columns=["problem_id", "sample"]), 5,
                                 sample, ids)) == 5
    assert ta.pair_rows(20, sample) == ta.pair_sample(20, 4, 0)


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[2].__setitem__(4, "toy/9|q9"),
     r"toy problem q2 \(Hub toy row 5\) is not in benchmark toy: no item with id toy/9 or q9"),
    (lambda rows: rows[2].__setitem__(5, "4"),
     r"toy problem q2 .*item q2 of toy has answer '3', not '4'"),
])
def test_a_missing_named_prompt_is_an_error(tmp_path, change, message):
    rows = copy.deepcopy(TOY_PAPER)
    change(rows)
    items = ta.paper_items(write_paper_csv(tmp_path / "p.csv", rows))
    with pytest.raises(ta.PaperSampleError, match=message):
        ta.paper_test_ids(items, "toy", TOY_ITEMS)


def test_missing_pairs_and_generations_are_errors(tmp_path):
    items = ta.paper_items(write_paper_csv(tmp_path / "p.csv", TOY_PAPER))
    with pytest.raises(ta.PaperSampleError, match=r"training pair rows \[11\] .* \(8 rows\)"):
        ta.paper_pair_rows(8, items)
    with pytest.raises(ta.PaperSampleError, match=r"no generation of \['q2'\] at step 4"):
        ta.paper_generation_keys([("q0", 0), ("q1", 0)], ["q2"], 4)


def test_the_shipped_list_is_the_authors_draw():
    """The authors' preprocess_data.py: random.Random(42), 4 pairs of their filtered set
    (any size 1,661 steps allow), then AIME24 (30 rows), AIME25 (30), MATH-500 (500)."""
    items = ta.paper_items()
    for n in range(53_145, 53_177):
        rng = random.Random(42)
        train = rng.sample(range(n), 4)
        tests = rng.sample(range(30), 1) + rng.sample(range(30), 1) + rng.sample(range(500), 2)
        assert [i.row for i in items if i.kind == "train"] == train
        assert [i.row for i in items if i.kind == "test"] == tests
    assert [i.source for i in items if i.kind == "test"] == [
        "HuggingFaceH4/aime_2024 (train)", "yentinglin/aime_2025 (train)",
        "HuggingFaceH4/MATH-500 (test)", "HuggingFaceH4/MATH-500 (test)"]


@pytest.mark.parametrize("name, file", [("aime24", "aime.json"), ("math500", "math.json")])
def test_the_shipped_test_prompts_are_in_the_benchmark_files(name, file):
    """Each named problem of a project benchmark is found (id and answer); AIME25 is
    left out by name."""
    bench = benchmarks.load_benchmark({"name": name, "file": file, "dir": str(BENCHMARKS_DIR)})
    ids, left_out = ta.paper_test_ids(ta.paper_items(), name, bench)
    assert ids == {"aime24": ["aime24/2"], "math500": [
        "test/intermediate_algebra/1898.json", "test/number_theory/516.json"]}[name]
    assert any(line.startswith("AIME25") and "not among the project's benchmarks" in line
               for line in left_out)


def shipped(preset: str) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = preset
    rc.validate_config(config)
    return config


@pytest.mark.parametrize("value, ok", [("paper", True), ("sample", True), ("random", False),
                                       (None, False)])
def test_the_schema_checks_the_selection(value, ok):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = "paper"
    config["presets"]["paper"]["analysis"]["selection"] = value
    if ok:
        rc.validate_config(config)
        assert plan.analysis_params(config)["selection"] == value
    else:
        with pytest.raises(rc.ConfigError, match="selection"):
            rc.validate_config(config)


def test_the_selection_per_preset_and_its_default():
    assert plan.analysis_params(shipped("paper"))["selection"] == "paper"
    assert plan.analysis_params(shipped("tiny"))["selection"] == "sample"
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = "tiny"
    del config["presets"]["tiny"]["analysis"]["selection"]
    rc.validate_config(config)
    assert plan.analysis_params(config)["selection"] == "sample"
