"""The data stage run by Snakemake on the tiny preset: outputs, reruns, dry runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from redi import data

from .conftest import planned_jobs, snakemake

REPORT = "results/data/report.json"


def clone_run(src: Path, dst: Path) -> Path:
    """Copy a workflow directory with its results and metadata (mtimes kept)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_report_counts_match_the_filters(data_workflow):
    report = json.loads((data_workflow / REPORT).read_text())
    ds = data.load_raw(str(data_workflow / "results/data/raw_toy.parquet"))
    sft, pairs, expected = data.build_sets(data.shuffled_rows(ds, 42))
    assert report["filter"]["counts"] == expected["counts"]
    assert report["filter"]["dropped"] == expected["dropped"]
    assert report["sizes"]["sft_examples"] == len(sft)
    assert report["sizes"]["pairs_before_length_filter"] == len(pairs)
    assert all(v > 0 for v in report["filter"]["dropped"].values() if v is not None) or True
    dropped = report["filter"]["dropped"]
    assert all(dropped[k] > 0 for k in dropped if k != "correctness_missing")
    # the SFT set keeps the authors' shuffled order and their first-correct rule
    written = pd.read_parquet(data_workflow / "results/data/sft.parquet")
    assert list(written["original_index"]) == [s["original_index"] for s in sft]
    assert list(written["response"]) == [s["response"] for s in sft]
    lengths = report["length_filter"]["dropped"]
    assert lengths["pairs_dropped"] > 0
    assert report["sizes"]["pairs_after_length_filter"] == (
        len(pairs) - lengths["pairs_dropped"])
    after = pd.read_parquet(data_workflow / "results/data/pairs.parquet")
    assert len(after) == report["sizes"]["pairs_after_length_filter"]
    limits = report["length_filter"]["params"]
    assert after["prompt_len"].max() <= limits["max_prompt_tokens"]
    assert max(after["chosen_len"].max(), after["rejected_len"].max()) <= (
        limits["max_response_tokens"])
    for key in ("sft_response", "pairs_prompt_after", "pairs_chosen_after"):
        assert report["token_lengths"][key]["n"] > 0


def test_second_invocation_does_nothing(data_workflow):
    proc = snakemake(data_workflow, "-n", REPORT)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_length_limit_change_replans_only_downstream(data_workflow, tmp_path):
    # nested overrides go through --configfile: --config delivers nested leaves as strings
    override = tmp_path / "override.yaml"
    override.write_text("presets:\n  tiny:\n    data:\n      max_response_tokens: 150\n")
    proc = snakemake(data_workflow, "-n", REPORT, "--configfile", str(override))
    assert planned_jobs(proc) == {"length_filter": 1, "data_report": 1}
    assert "Params have changed" in proc.stdout + proc.stderr


def test_editing_a_module_reruns_only_its_users(data_workflow, tmp_path):
    work = clone_run(data_workflow, tmp_path / "wf")
    data_py = work / "redi" / "data.py"
    data_py.write_text(data_py.read_text() + "\n# an edit\n")
    proc = snakemake(work, "-n", REPORT)
    # toy_corpus and base_model do not import redi/data.py
    assert planned_jobs(proc) == {"filter_data": 1, "length_filter": 1, "data_report": 1}


def _row(problem="Evaluate from left to right: 1+2", valid="Yes", source="olympiads",
         gens=("<think>\n1+2\n=3\n</think>\n\\boxed{3}",), llama=(True,), mv=(True,)):
    return {"problem": problem, "solution": "", "answer": "3", "problem_type": "Algebra",
            "question_type": "math-word-problem", "problem_is_valid": valid,
            "solution_is_valid": "Yes", "source": source, "synthetic": False,
            "generations": list(gens), "generations_count": len(gens),
            "reparsed_answers": ["3"] * len(gens),
            "correctness": {"llama_verification": list(llama), "math_verify_answer": list(mv),
                            "math_verify_reparsed_answer": list(mv)}}


GOOD = "<think>\n1+2\n=3\n</think>\n\\boxed{3}"
BAD = "<think>\n1+2\n=4\n</think>\n\\boxed{4}"
HAND_ROWS = [
    _row(gens=(GOOD, BAD), llama=(True, False), mv=(True, False)),         # pair
    _row(valid=" YES ", gens=(BAD, GOOD), llama=(False, True), mv=(True, True)),  # pair 1/0
    _row(gens=(GOOD, GOOD), llama=(True, True), mv=(True, True)),          # SFT only
    _row(gens=(BAD, GOOD), llama=(True, None), mv=(False, True)),          # none correct
    _row(valid="No"),
    _row(source="cn_k12"),
    _row(problem=""),
    _row(gens=(), llama=(), mv=()),
    _row(gens=(GOOD, BAD), llama=(True,), mv=(True, False)),               # judge list short
    _row(gens=(GOOD,), llama=(True,), mv=(True, False)),                   # verify list long
    _row(gens=(BAD, GOOD, GOOD), llama=(False, True, True), mv=(None, True, True)),  # pair 1/0
    _row(gens=(GOOD,)),                                                    # SFT only
    _row(gens=(GOOD, BAD + " Wait" * 400), llama=(True, False), mv=(True, False)),  # too long
    _row(problem="Here is a long warm-up. " * 60 + "1+2",
         gens=(GOOD, BAD), llama=(True, False), mv=(True, False)),          # prompt too long
]


def test_local_jsonl_counts_are_exact(data_workflow, tmp_path):
    work = clone_run(data_workflow, tmp_path / "wf")
    rows = work / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in HAND_ROWS))
    snakemake(work, "--cores", "2", REPORT, "--config", "raw_data=rows.jsonl")
    report = json.loads((work / REPORT).read_text())
    assert report["raw_source"] == "rows.jsonl"
    assert report["filter"]["dropped"] == {
        "problem_is_valid_not_yes": 1, "source_cn_k12": 1, "empty_problem": 1,
        "no_generations": 1, "correctness_missing": 0,
        "length_mismatch_llama_verification": 1,
        "length_mismatch_math_verify_reparsed_answer": 1}
    counts = report["filter"]["counts"]
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_dropped"]) == (14, 8, 6)
    assert (counts["problems_correct_and_incorrect"], counts["problems_all_correct"],
            counts["problems_without_correct"], counts["kept_rows_with_null_labels"]) == (
        5, 2, 1, 2)
    assert report["sizes"] == {"sft_examples": 7, "pairs_before_length_filter": 5,
                               "pairs_after_length_filter": 3,
                               "share_of_sft_problems_with_pair": round(5 / 7, 4)}
    assert report["length_filter"]["dropped"] == {
        "prompt_too_long": 1, "chosen_too_long": 0, "rejected_too_long": 1,
        "pairs_dropped": 2}
    pairs = pd.read_parquet(work / "results/data/pairs.parquet")
    by_index = {r.original_index: r for r in pairs.itertuples()}
    assert (by_index[1].chosen_gen_idx, by_index[1].rejected_gen_idx) == (1, 0)
    assert (by_index[10].chosen_gen_idx, by_index[10].rejected_gen_idx) == (1, 0)
    assert set(by_index) == {0, 1, 10}


def test_paper_preset_dry_run_plans_the_download(data_workflow):
    proc = snakemake(data_workflow, "-n", REPORT, "--config", "preset=paper")
    assert planned_jobs(proc) == {"download_raw": 1, "base_model": 1, "filter_data": 1,
                                  "length_filter": 1, "data_report": 1}


def test_invalid_config_stops_before_any_job(data_workflow, tmp_path):
    proc = snakemake(data_workflow, "-n", REPORT, "--config", "preset=huge", check=False)
    assert proc.returncode != 0
    assert "invalid config key 'preset'" in proc.stdout + proc.stderr
    bad_alpha = tmp_path / "bad_alpha.yaml"
    bad_alpha.write_text("runs:\n  redi_a0.8_lr1e-6:\n    objective: redi\n    init: sft_3ep\n"
                         "    lr: 1.0e-6\n    alpha: 2.0\n")
    proc = snakemake(data_workflow, "-n", REPORT, "--configfile", str(bad_alpha), check=False)
    assert proc.returncode != 0
    assert "invalid config key 'runs.redi_a0.8_lr1e-6.alpha'" in proc.stdout + proc.stderr
