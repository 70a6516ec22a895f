"""The authors' token-length rules for D_Pref and D_SFT (the two length jobs)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from redi.data.filters import EXAMPLES_PER_REASON
from redi.data.stage_report import fail_stage, merge_reports, stage_report_path

log = logging.getLogger(__name__)


def pair_lengths(tokenizer: Any, pairs: Iterable[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token lengths, measured as the authors did."""
    from tqdm import tqdm

    from redi.data.prompts import authors_token_lengths

    return [
        tuple(authors_token_lengths(tokenizer, p["problem"], [p["chosen"], p["rejected"]]))
        for p in tqdm(list(pairs), desc="pair lengths", mininterval=5)
    ]


def response_lengths(tokenizer: Any, rows: Iterable[dict[str, Any]]) -> list[int]:
    from tqdm import tqdm

    from redi.data.prompts import authors_token_lengths

    return [
        authors_token_lengths(tokenizer, r["problem"], [r["response"]])[1]
        for r in tqdm(list(rows), desc="SFT lengths", mininterval=5)
    ]


def sft_sequence_lengths(tokenizer: Any, rows: Sequence[dict[str, Any]],
                         chunk: int = 1000) -> list[tuple[int, int]]:
    """(prompt, completion) token counts of SFT examples as the SFT job tokenizes them
    (as ``redi.train.train_data`` does: chat-template prompt; response + end tokens)."""
    from redi.data.prompts import encode_completions, encode_prompts, sft_suffix

    out: list[tuple[int, int]] = []
    for start in range(0, len(rows), chunk):  # chunks: only the counts are kept
        part = rows[start:start + chunk]
        prompts = encode_prompts(tokenizer, [r["problem"] for r in part])
        completions = encode_completions(
            tokenizer, [r["response"] for r in part], sft_suffix(tokenizer))
        out += [(len(p), len(c)) for p, c in zip(prompts, completions, strict=True)]
    return out


def sft_length_rule(lengths: Sequence[tuple[int, int]], max_length: int,
                    index: Sequence[int]) -> tuple[np.ndarray, dict[str, Any]]:
    """The SFT length rule: the keep mask and its report.

    As the authors' TRL SFT, a sequence longer than ``max_length`` is truncated at
    training (its first ``max_length`` tokens); it is kept and counted here. One
    whose prompt alone has ``max_length`` tokens leaves nothing to train on: dropped.
    """
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1, 2)
    index = np.asarray(index, dtype=np.int64)
    keep = arr[:, 0] < max_length
    truncated = keep & (arr.sum(axis=1) > max_length)
    report = {
        "max_length": max_length,
        "rule": "prompt + response + end tokens longer than max_length: truncated at "
                "training (authors' SFT); prompt alone >= max_length: dropped",
        "sft_in": len(arr),
        "sft_out": int(keep.sum()),
        "truncated": int(truncated.sum()),
        "dropped_prompt_too_long": int((~keep).sum()),
        "truncated_examples": index[truncated][:EXAMPLES_PER_REASON].tolist(),
        "dropped_examples": index[~keep][:EXAMPLES_PER_REASON].tolist(),
    }
    return keep, report


def keep_by_length(
    lengths: tuple[int, int, int], max_prompt_tokens: int, max_response_tokens: int
) -> bool:
    prompt, chosen, rejected = lengths
    return (
        prompt <= max_prompt_tokens
        and chosen <= max_response_tokens
        and rejected <= max_response_tokens
    )


def percentiles(values: Iterable[int]) -> dict[str, float]:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    qs = {f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 99)}
    return {"n": int(arr.size), "mean": float(arr.mean()), **qs, "max": float(arr.max())}


def filter_pairs(tokenizer: Any, pairs, params: dict[str, Any]):
    """The authors' token-length filter of the pairs: (kept pairs, report)."""
    lengths = pair_lengths(tokenizer, pairs.to_dict("records"))
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1, 3)
    pairs = pairs.copy()
    pairs["prompt_len"], pairs["chosen_len"], pairs["rejected_len"] = arr.T
    max_prompt, max_response = params["max_prompt_tokens"], params["max_response_tokens"]
    keep = np.array([keep_by_length(tuple(x), max_prompt, max_response) for x in arr],
                    dtype=bool)
    kept = pairs.loc[keep].reset_index(drop=True)
    report = {
        "pairs_in": len(pairs),
        "pairs_out": len(kept),
        "pairs_identical": int((kept["chosen"] == kept["rejected"]).sum()) if len(kept) else 0,
        "dropped": {
            "prompt_too_long": int((arr[:, 0] > max_prompt).sum()),
            "chosen_too_long": int((arr[:, 1] > max_response).sum()),
            "rejected_too_long": int((arr[:, 2] > max_response).sum()),
            "pairs_dropped": int((~keep).sum()),
        },
        "token_lengths": {
            f"pairs_{name}_{when}": percentiles(arr[mask, col])
            for when, mask in (("before", slice(None)), ("after", keep))
            for col, name in enumerate(("prompt", "chosen", "rejected"))
        },
    }
    return kept, report


def filter_sft(tokenizer: Any, sft, max_length: int):
    """The SFT length rule (``sft_length_rule``): (kept SFT examples, report)."""
    records = sft.to_dict("records")
    lengths = sft_sequence_lengths(tokenizer, records)
    index = [int(r.get("original_index", i)) for i, r in enumerate(records)]
    keep, report = sft_length_rule(lengths, max_length, index)
    kept = sft.loc[keep].reset_index(drop=True)
    sequences = [p + c for p, c in lengths]
    report["token_lengths"] = {
        "sft_response": percentiles(response_lengths(tokenizer, kept.to_dict("records"))),
        "sft_sequence": percentiles(sequences),
    }
    if report["truncated"]:
        log.warning("%d SFT example(s) exceed max_length %d tokens and are truncated at "
                    "training (authors' rule), e.g. original_index %s", report["truncated"],
                    max_length, report["truncated_examples"])
    return kept, report


def run_sft_length(tokenizer_dir: str, params: dict[str, Any], sft_in: str, sft_out: str,
                   report_out: str, filter_report: str | None = None) -> dict[str, Any]:
    """The SFT length rule on D_SFT (its own job: pair limits never rewrite sft.parquet)."""
    import pandas as pd
    from transformers import AutoTokenizer

    from redi.io import read_json, write_json, write_parquet

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    kept, rule = filter_sft(tokenizer, pd.read_parquet(sft_in), params["max_length"])
    report = {"params": params, **rule,
              "measured_as": "sft_sequence: prompt + response + end tokens as the SFT job "
                             "tokenizes them; sft_response: as the authors' length study"}
    if not rule["sft_out"]:
        error = (f"the SFT length rule dropped all {rule['sft_in']} SFT examples: each prompt "
                 f"alone has >= sft.max_length {rule['max_length']} tokens")
        filt = read_json(filter_report) if filter_report else None
        merged = merge_reports(filt, sft_length=report, error=error) if filt else {
            "status": "failed", "error": error, "sft_length": report}
        fail_stage(stage_report_path(report_out), merged, error)
    write_parquet(sft_out, kept)
    write_json(report_out, report)
    log.info("SFT length rule: kept %d of %d SFT examples, %d longer than %d tokens "
             "(truncated at training)", rule["sft_out"], rule["sft_in"], rule["truncated"],
             rule["max_length"])
    return report


def run_length_filter(tokenizer_dir: str, params: dict[str, Any], pairs_in: str,
                      pairs_out: str, report_out: str,
                      filter_report: str | None = None) -> dict[str, Any]:
    """The pairs' token-length filter; a failure report merges ``filter_report``."""
    import pandas as pd
    from transformers import AutoTokenizer

    from redi.io import read_json, write_json, write_parquet

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    kept, pair_report = filter_pairs(tokenizer, pd.read_parquet(pairs_in), params)
    report = {
        "params": params, **pair_report,
        "measured_as": "authors' study_length_distribution.py: prompt and each response "
                       "rendered separately with the chat template (+1 for EOS)",
    }
    if not report["pairs_out"]:
        dropped = report["dropped"]
        error = (f"the length filter dropped all {report['pairs_in']} pairs (prompt > "
                 f"{params['max_prompt_tokens']} tokens: {dropped['prompt_too_long']}, chosen > "
                 f"{params['max_response_tokens']}: {dropped['chosen_too_long']}, rejected > "
                 f"{params['max_response_tokens']}: {dropped['rejected_too_long']})")
        filt = read_json(filter_report) if filter_report else None
        merged = merge_reports(filt, length=report, error=error) if filt else {
            "status": "failed", "error": error, "length_filter": report}
        fail_stage(stage_report_path(report_out), merged, error)
    write_parquet(pairs_out, kept)
    write_json(report_out, report)
    log.info("length filter kept %d of %d pairs", len(kept), report["pairs_in"])
    return report
