"""The data stage run by Snakemake on the tiny preset: outputs, reruns, dry runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from redi.data import filters, loading

from .conftest import planned_jobs, snakemake

REPORT = "results/data/report.json"


def clone_run(src: Path, dst: Path) -> Path:
    """Copy a workflow directory with its results and metadata (mtimes kept)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_report_counts_match_the_filters(data_workflow):
    report = json.loads((data_workflow / REPORT).read_text())
    ds = loading.load_raw(str(data_workflow / "results/data/raw_toy.parquet"))
    sft, pairs, expected = filters.build_sets(loading.shuffled_rows(ds, 42))
    assert report["filter"]["counts"] == expected["counts"]
    assert report["filter"]["dropped"] == expected["dropped"]
    assert report["sizes"]["sft_examples"] == len(sft)
    assert report["sizes"]["pairs_before_length_filter"] == len(pairs)
    # the toy corpus exercises each of the authors' filters, and has no malformed row
    assert {k: v for k, v in report["filter"]["dropped"].items() if v} == {
        "problem_is_valid_not_yes": 23, "source_cn_k12": 75, "empty_problem": 4,
        "no_generations": 9, "length_mismatch_llama_verification": 14,
        "length_mismatch_math_verify_reparsed_answer": 17}
    assert report["status"] == "ok"
    assert report["sizes"] == {"sft_examples": 697, "sft_before_length_filter": 697,
                               "pairs_before_length_filter": 466,
                               "pairs_after_length_filter": 436,
                               "share_of_sft_problems_with_pair": 0.6686}
    # identical chosen/rejected texts (a noisy judge on one trace): counted, kept
    assert report["data_quality"] == {
        "pairs_identical_before_length_filter": 34, "pairs_identical_after_length_filter": 34,
        "kept_rows_duplicate_problem": 0, "sft_duplicate_problems": 0,
        "pairs_duplicate_problems": 0, "generations_empty": 0}
    rule = report["sft_length_rule"]
    assert (rule["max_length"], rule["sft_in"], rule["sft_out"], rule["truncated"],
            rule["dropped_prompt_too_long"]) == (512, 697, 697, 1, 0)
    assert report["token_lengths"]["sft_sequence"]["max"] == 533
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
    # sft.parquet is not rewritten: SFT does not rerun for the pairs' limits
    assert planned_jobs(proc) == {"length_filter": 1, "data_report": 1}
    assert "Params have changed" in proc.stdout + proc.stderr


def test_sft_max_length_change_replans_only_the_sft_length_rule(data_workflow, tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("presets:\n  tiny:\n    sft:\n      max_length: 256\n")
    proc = snakemake(data_workflow, "-n", REPORT, "--configfile", str(override))
    assert planned_jobs(proc) == {"sft_length": 1, "data_report": 1}


def test_editing_a_module_reruns_only_its_users(data_workflow, tmp_path):
    work = clone_run(data_workflow, tmp_path / "wf")
    stage_report_py = work / "redi" / "data" / "stage_report.py"
    stage_report_py.write_text(stage_report_py.read_text() + "\n# an edit\n")
    proc = snakemake(work, "-n", REPORT)
    # toy_corpus and tokenizer do not import redi/data/stage_report.py
    assert planned_jobs(proc) == {"filter_data": 1, "sft_length": 1, "length_filter": 1,
                                  "data_report": 1}


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


# after HAND_ROWS: malformed lines (JSONL lines 15-17), rows (original_index 17-25)
BAD_LINES = [b"{not json", b"\xff\xfe not UTF-8", b"[1, 2]"]
MORE_ROWS = [
    {**_row(gens=("a", "b"), llama=(True, False), mv=(True, False)), "generations": "ab"},
    _row(gens=(GOOD, BAD), llama=(1, 1), mv=(True, False)),               # int labels
    _row(gens=(None, None), llama=(True, False), mv=(True, False)),       # null traces
    _row(problem=7),                                                      # int problem
    _row(gens=("", GOOD), llama=(True, True), mv=(True, True)),           # SFT gen 1 only
    _row(gens=(GOOD, "  "), llama=(True, False), mv=(True, False)),       # SFT only: no pair
    _row(gens=(GOOD, GOOD), llama=(True, False), mv=(True, True)),        # identical pair
    _row(gens=(GOOD + " Wait" * 600,)),                                   # SFT, truncated
    _row(problem="Here is a long warm-up. " * 200 + "1+2"),               # prompt > max_length
]


def test_local_jsonl_counts_are_exact(data_workflow, tmp_path):
    work = clone_run(data_workflow, tmp_path / "wf")
    rows = work / "rows.jsonl"
    lines = [json.dumps(r).encode() for r in HAND_ROWS] + BAD_LINES + [
        json.dumps(r).encode() for r in MORE_ROWS]
    rows.write_bytes(b"\n".join(lines) + b"\n")
    snakemake(work, "--cores", "2", REPORT, "--config", "raw_data=rows.jsonl")
    report = json.loads((work / REPORT).read_text())
    assert report["raw_source"] == "rows.jsonl" and report["status"] == "ok"
    assert {k: v for k, v in report["filter"]["dropped"].items() if v} == {
        "line_not_utf8": 1, "line_invalid_json": 1, "line_not_object": 1,
        "problem_is_valid_not_yes": 1, "source_cn_k12": 1, "problem_not_str": 1,
        "empty_problem": 1, "generations_not_list": 1, "no_generations": 1,
        "generations_not_list_of_str": 1, "labels_not_bool_llama_verification": 1,
        "length_mismatch_llama_verification": 1,
        "length_mismatch_math_verify_reparsed_answer": 1}
    examples = report["filter"]["drop_examples"]
    assert examples["line_not_utf8"] == [{"line": 16, "error": "byte 0xff at column 1 is not UTF-8"}]
    assert examples["labels_not_bool_llama_verification"] == [{"original_index": 18, "line": 19}]
    counts = report["filter"]["counts"]
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_dropped"]) == (26, 13, 13)
    assert (counts["problems_correct_and_incorrect"], counts["problems_all_correct"],
            counts["problems_without_correct"], counts["kept_rows_with_null_labels"]) == (
        6, 6, 1, 2)
    assert (counts["generations_empty"], counts["rows_with_empty_generations"]) == (2, 2)
    assert report["sizes"] == {"sft_examples": 10, "sft_before_length_filter": 12,
                               "pairs_before_length_filter": 6, "pairs_after_length_filter": 4,
                               "share_of_sft_problems_with_pair": 0.5}
    # one problem text but the warm-up ones: duplicates counted, kept (as the authors)
    assert report["data_quality"] == {
        "pairs_identical_before_length_filter": 1, "pairs_identical_after_length_filter": 1,
        "kept_rows_duplicate_problem": 10, "sft_duplicate_problems": 9,
        "pairs_duplicate_problems": 4, "generations_empty": 2}
    assert report["length_filter"]["dropped"] == {
        "prompt_too_long": 1, "chosen_too_long": 0, "rejected_too_long": 1,
        "pairs_dropped": 2}
    rule = report["sft_length_rule"]
    # both warm-up prompts fill max_length (512): nothing left to train on
    assert (rule["truncated"], rule["truncated_examples"], rule["dropped_prompt_too_long"],
            sorted(rule["dropped_examples"])) == (1, [24], 2, [13, 25])
    pairs = pd.read_parquet(work / "results/data/pairs.parquet")
    by_index = {r.original_index: r for r in pairs.itertuples()}
    assert (by_index[1].chosen_gen_idx, by_index[1].rejected_gen_idx) == (1, 0)
    assert (by_index[10].chosen_gen_idx, by_index[10].rejected_gen_idx) == (1, 0)
    assert (by_index[23].chosen, by_index[23].rejected) == (GOOD, GOOD)
    assert set(by_index) == {0, 1, 10, 23}
    sft = pd.read_parquet(work / "results/data/sft.parquet")
    assert sorted(sft["original_index"]) == [0, 1, 2, 10, 11, 12, 21, 22, 23, 24]
    assert sft.set_index("original_index").loc[21, "chosen_gen_idx"] == 1
    assert set(sft["response"]) <= {GOOD, BAD, GOOD + " Wait" * 600}


def test_a_corpus_that_leaves_no_pair_stops_the_data_stage(data_workflow, tmp_path):
    work = clone_run(data_workflow, tmp_path / "wf")
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        _row(), _row(valid="No"), _row(gens=(GOOD, BAD), llama=("yes", "no"), mv=(True, False))]))
    proc = snakemake(work, "--cores", "2", REPORT, "--config", "raw_data=rows.jsonl",
                     check=False)
    assert proc.returncode != 0
    report = json.loads((work / REPORT).read_text())
    why = ("the corpus gives no preference pair: of the 3 rows read from 'rows.jsonl', 2 were "
           "dropped (problem_is_valid_not_yes: 1, labels_not_bool_llama_verification: 1) and "
           "1 kept; each of the 1 problems with a correct generation has no incorrect "
           "non-empty one")
    assert (report["status"], report["error"]) == ("failed", why)
    assert report["sizes"]["sft_examples"] == 1
    log = (work / "results/logs/filter_data.log").read_text()
    assert "Traceback (most recent call last)" in log and why in log
    assert not (work / "results/data/pairs_unfiltered.parquet").exists()


def test_paper_preset_dry_run_plans_the_download(data_workflow):
    proc = snakemake(data_workflow, "-n", REPORT, "--config", "preset=paper")
    # the tokenizer alone: the data stages never wait on the base model
    assert planned_jobs(proc) == {"download_raw": 1, "tokenizer": 1, "filter_data": 1,
                                  "sft_length": 1, "length_filter": 1, "data_report": 1}


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
