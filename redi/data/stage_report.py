"""The data stage's report: the jobs' counts merged, beside the paper's sizes (the
report job); a failing job writes it too, then stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from redi.data.loading import UnusableCorpusError

STAGE_REPORT = "report.json"  # the data stage's report, beside each job's own report


def stage_report_path(job_report: str) -> Path:
    """``results/data/report.json``: the data stage's report lies beside each job's own."""
    return Path(job_report).with_name(STAGE_REPORT)


def fail_stage(stage_report: Path, report: dict[str, Any], error: str) -> NoReturn:
    """Write the data stage's report (status failed), then stop the job."""
    from redi.io import write_json

    write_json(stage_report, report)
    raise UnusableCorpusError(f"{error} (counts in {stage_report})")


# The paper's figures for the real corpus (appendix C.2; authors' README).
PAPER_SIZES = {"sft_examples": 77629, "pairs_before_length_filter": 53175,
               "pairs_after_length_filter_approx": "53145-53176 (from 1,661 steps of 32)"}


def merge_reports(filt: dict[str, Any], length: dict[str, Any] | None = None,
                  sft_length: dict[str, Any] | None = None,
                  verify: dict[str, Any] | None = None,
                  error: str | None = None) -> dict[str, Any]:
    """``results/data/report.json`` from the job reports (those written so far)."""
    c = filt["counts"]
    sizes = {"sft_examples": filt["sft_examples"],
             "sft_before_length_filter": filt["sft_examples"],
             "pairs_before_length_filter": filt["pairs_before_length_filter"],
             "share_of_sft_problems_with_pair": filt["share_of_sft_problems_with_pair"]}
    quality = {"pairs_identical_before_length_filter": c["pairs_identical"],
               **{k: c[k] for k in ("kept_rows_duplicate_problem", "sft_duplicate_problems",
                                    "pairs_duplicate_problems", "generations_empty")}}
    report: dict[str, Any] = {"status": "failed" if error else "ok"}
    if error:
        report["error"] = error
    report["raw_source"] = filt["raw_source"]
    report["filter"] = {k: filt[k] for k in ("counts", "dropped", "drop_examples")}
    report["sizes"] = sizes
    report["data_quality"] = quality
    token_lengths: dict[str, Any] = {}
    if sft_length:
        sizes["sft_examples"] = sft_length["sft_out"]
        report["sft_length_rule"] = {k: v for k, v in sft_length.items()
                                     if k not in ("token_lengths", "measured_as")}
        token_lengths.update(sft_length["token_lengths"])
    if length:
        sizes["pairs_after_length_filter"] = length["pairs_out"]
        quality["pairs_identical_after_length_filter"] = length["pairs_identical"]
        report["length_filter"] = {"params": length["params"], "dropped": length["dropped"]}
        token_lengths.update(length["token_lengths"])
    if token_lengths:
        report["token_lengths"] = token_lengths
    report["paper_sizes_on_real_corpus"] = PAPER_SIZES
    if verify:
        report["verify"] = verify
    return report


def run_report(filter_report: str, length_report: str, sft_length_report: str,
               verify_report: str | None, out: str) -> dict[str, Any]:
    from redi.io import read_json, write_json

    verify = read_json(verify_report) if verify_report else None
    report = merge_reports(read_json(filter_report), read_json(length_report),
                           read_json(sft_length_report), verify)
    write_json(out, report)
    return report
