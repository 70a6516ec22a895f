"""Data stages: raw corpus loading, the authors' filters, pairing, length filter.

The rules follow the authors' ``clean_base_shuffled*.py`` and
``study_length_distribution.py`` exactly:

1. add ``original_index`` and shuffle the whole corpus with seed 42;
2. drop rows whose ``problem_is_valid`` is not "yes" (case-insensitive, stripped),
   ``source == "cn_k12"``, an empty problem or no generations, or a
   ``llama_verification`` / ``math_verify_reparsed_answer`` list whose length
   differs from ``generations`` -- each drop is counted under its first reason;
3. a generation is correct iff ``llama_verification[i]`` AND
   ``math_verify_reparsed_answer[i]`` (None counts as False);
4. D_SFT: the first correct generation of each problem; D_Pref: problems with
   at least one correct and one not-correct generation, y_w = first correct,
   y_l = first not-correct;
5. length filter: prompt <= max_prompt_tokens and each response <=
   max_response_tokens, measured as the authors did (``prompts.authors_token_lengths``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

HUB_DATASET = "open-r1/OpenR1-Math-Raw"
REQUIRED_COLUMNS = ("problem", "problem_is_valid", "source", "generations", "correctness")
LABEL_KEYS = ("llama_verification", "math_verify_reparsed_answer")
# drop reasons, in the order the authors' filters apply them
DROP_REASONS = (
    "problem_is_valid_not_yes",
    "source_cn_k12",
    "empty_problem",
    "no_generations",
    "correctness_missing",
    "length_mismatch_llama_verification",
    "length_mismatch_math_verify_reparsed_answer",
)
CARRIED_COLUMNS = ("answer", "source", "uuid")


class RawDataError(ValueError):
    """The raw corpus does not have the OpenR1-Math-Raw schema."""


# ------------------------------------------------------------------ loading


def load_raw(source: str):
    """The raw corpus as a ``datasets.Dataset`` (Arrow, memory-mapped).

    ``source`` is ``hub`` or a local ``.jsonl`` / ``.parquet`` file.
    """
    import datasets

    if source == "hub":
        ds = datasets.load_dataset(HUB_DATASET, split="train")
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"raw_data file {source!r} does not exist")
        if path.suffix == ".jsonl":
            ds = datasets.load_dataset("json", data_files=str(path), split="train")
        elif path.suffix == ".parquet":
            ds = datasets.Dataset.from_parquet(str(path))
        else:
            raise RawDataError(f"raw_data {source!r}: expected a .jsonl or .parquet file")
    check_columns(ds.column_names, source)
    return ds


def check_columns(columns: Iterable[str], source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in set(columns)]
    if missing:
        raise RawDataError(
            f"raw data {source!r} lacks OpenR1-Math-Raw column(s) {missing}; "
            f"has {sorted(columns)}"
        )


def shuffled_rows(ds, seed: int, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Rows with ``original_index``, in the order of ``ds.shuffle(seed)`` (the authors')."""
    ds = ds.add_column("original_index", np.arange(len(ds), dtype=np.int64))
    ds = ds.shuffle(seed=seed)
    for batch in ds.iter(batch_size=batch_size):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys), strict=True):
            yield dict(zip(keys, values, strict=True))


# ---------------------------------------------------------------- filtering


def drop_reason(row: dict[str, Any]) -> str | None:
    """The first of the authors' filters that drops ``row``, or None if kept."""
    valid = row.get("problem_is_valid")
    if not isinstance(valid, str) or valid.strip().lower() != "yes":
        return "problem_is_valid_not_yes"
    if row.get("source") == "cn_k12":
        return "source_cn_k12"
    problem = row.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        return "empty_problem"
    generations = row.get("generations")
    if not generations:
        return "no_generations"
    correctness = row.get("correctness")
    if not isinstance(correctness, dict) or any(
        correctness.get(k) is None for k in LABEL_KEYS
    ):
        return "correctness_missing"
    for key in LABEL_KEYS:
        if len(correctness[key]) != len(generations):
            return f"length_mismatch_{key}"
    return None


def correct_flags(row: dict[str, Any]) -> list[bool]:
    """Dual-verifier rule: Llama judge AND Math-Verify (reparsed); None is False."""
    c = row["correctness"]
    return [
        bool(judge) and bool(verifier)
        for judge, verifier in zip(
            c["llama_verification"], c["math_verify_reparsed_answer"], strict=True
        )
    ]


def _check_types(row: dict[str, Any]) -> None:
    index = row.get("original_index")
    gens = row["generations"]
    if not isinstance(gens, list) or not all(isinstance(g, str) for g in gens):
        raise RawDataError(f"row original_index={index}: 'generations' must be a list of str")
    for key in LABEL_KEYS:
        labels = row["correctness"][key]
        if not isinstance(labels, list) or not all(v is None or isinstance(v, bool) for v in labels):
            raise RawDataError(
                f"row original_index={index}: correctness.{key} must be a list of bool/None, "
                f"got {labels!r}"
            )


def build_sets(
    rows: Iterable[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Apply the filters and pairing rule to rows (already shuffled).

    Returns ``(sft, pairs, counts)``; every input row is accounted for in
    ``counts`` (kept or dropped with its reason).
    """
    counts: Counter[str] = Counter()
    drops: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
    sft: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for row in rows:
        counts["rows_in"] += 1
        reason = drop_reason(row)
        if reason is not None:
            drops[reason] += 1
            continue
        _check_types(row)
        counts["rows_kept"] += 1
        counts["generations_kept_rows"] += len(row["generations"])
        labels = row["correctness"]
        if any(v is None for k in LABEL_KEYS for v in labels[k]):
            counts["kept_rows_with_null_labels"] += 1
        flags = correct_flags(row)
        counts["generations_correct"] += sum(flags)
        n_judge = sum(bool(v) for v in labels["llama_verification"])
        n_verify = sum(bool(v) for v in labels["math_verify_reparsed_answer"])
        counts["generations_llama_true"] += n_judge
        counts["generations_math_verify_true"] += n_verify
        first_good = next((i for i, f in enumerate(flags) if f), None)
        first_bad = next((i for i, f in enumerate(flags) if not f), None)
        if first_good is None:
            counts["problems_without_correct"] += 1
            continue
        base = {
            "original_index": int(row["original_index"]),
            "problem": row["problem"],
            **{c: row.get(c) for c in CARRIED_COLUMNS if c in row},
        }
        sft.append({**base, "response": row["generations"][first_good],
                    "chosen_gen_idx": first_good})
        if first_bad is None:
            counts["problems_all_correct"] += 1
            continue
        counts["problems_correct_and_incorrect"] += 1
        pairs.append(
            {
                **base,
                "chosen": row["generations"][first_good],
                "rejected": row["generations"][first_bad],
                "chosen_gen_idx": first_good,
                "rejected_gen_idx": first_bad,
            }
        )
    counts["rows_dropped"] = sum(drops.values())
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_dropped"]
    report = {
        "counts": dict(sorted(counts.items())),
        "dropped": dict(drops),
        "sft_examples": len(sft),
        "pairs_before_length_filter": len(pairs),
        "share_of_sft_problems_with_pair": round(len(pairs) / len(sft), 4) if sft else 0.0,
    }
    return sft, pairs, report


# ------------------------------------------------------------ length filter


def pair_lengths(tokenizer: Any, pairs: Iterable[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token lengths, measured as the authors did."""
    from tqdm import tqdm

    from redi.prompts import authors_token_lengths

    return [
        tuple(authors_token_lengths(tokenizer, p["problem"], [p["chosen"], p["rejected"]]))
        for p in tqdm(list(pairs), desc="pair lengths", mininterval=5)
    ]


def response_lengths(tokenizer: Any, rows: Iterable[dict[str, Any]]) -> list[int]:
    from tqdm import tqdm

    from redi.prompts import authors_token_lengths

    return [
        authors_token_lengths(tokenizer, r["problem"], [r["response"]])[1]
        for r in tqdm(list(rows), desc="SFT lengths", mininterval=5)
    ]


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


def verify_agreement(rows: list[dict[str, Any]], grades_reparsed, grades_strict) -> dict[str, Any]:
    """Confusion counts of our Math-Verify re-run vs the corpus labels."""
    label_keys = ("math_verify_reparsed_answer",)
    out: dict[str, Any] = {}
    for name, grades in (("reparsed_answer", grades_reparsed), ("strict_generation", grades_strict)):
        table: Counter[str] = Counter()
        k = 0
        for row in rows:
            labels = row["correctness"][label_keys[0]]
            for i in range(len(row["generations"])):
                label = labels[i] if i < len(labels) else None
                table[f"label_{label}_ours_{grades[k].correct}"] += 1
                table["timed_out"] += grades[k].timed_out
                k += 1
        known = sum(v for key, v in table.items() if key.startswith("label_T")
                    or key.startswith("label_F"))
        agree = table["label_True_ours_True"] + table["label_False_ours_False"]
        out[name] = {"counts": dict(sorted(table.items())),
                     "agreement": round(agree / known, 4) if known else None}
    return out


# ------------------------------------------------------------------ stages


def run_filter(raw_source: str, params: dict[str, Any], sft_out: str, pairs_out: str,
               report_out: str) -> dict[str, Any]:
    import pandas as pd

    from redi.io import write_json, write_parquet

    ds = load_raw(raw_source)
    log.info("raw corpus %s: %d rows", raw_source, len(ds))
    sft, pairs, report = build_sets(shuffled_rows(ds, params["shuffle_seed"]))
    report["raw_source"] = raw_source
    report["params"] = params
    write_parquet(sft_out, pd.DataFrame(sft))
    write_parquet(pairs_out, pd.DataFrame(pairs))
    write_json(report_out, report)
    log.info("SFT examples: %d, pairs before the length filter: %d",
             len(sft), len(pairs))
    return report


def run_length_filter(tokenizer_dir: str, params: dict[str, Any], sft_path: str, pairs_in: str,
                      pairs_out: str, report_out: str) -> dict[str, Any]:
    import pandas as pd
    from transformers import AutoTokenizer

    from redi.io import write_json, write_parquet

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pairs = pd.read_parquet(pairs_in)
    sft = pd.read_parquet(sft_path)
    lengths = pair_lengths(tokenizer, pairs.to_dict("records"))
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1, 3)
    pairs["prompt_len"], pairs["chosen_len"], pairs["rejected_len"] = arr.T
    keep = np.array([keep_by_length(tuple(x), params["max_prompt_tokens"],
                                    params["max_response_tokens"]) for x in arr], dtype=bool)
    kept = pairs[keep].reset_index(drop=True)
    write_parquet(pairs_out, kept)
    sft_lengths = response_lengths(tokenizer, sft.to_dict("records"))
    report = {
        "params": params,
        "pairs_in": len(pairs),
        "pairs_out": len(kept),
        "dropped": {
            "prompt_too_long": int((arr[:, 0] > params["max_prompt_tokens"]).sum()),
            "chosen_too_long": int((arr[:, 1] > params["max_response_tokens"]).sum()),
            "rejected_too_long": int((arr[:, 2] > params["max_response_tokens"]).sum()),
            "pairs_dropped": int((~keep).sum()),
        },
        "token_lengths": {
            "sft_response": percentiles(sft_lengths),
            "pairs_prompt_before": percentiles(arr[:, 0]),
            "pairs_chosen_before": percentiles(arr[:, 1]),
            "pairs_rejected_before": percentiles(arr[:, 2]),
            "pairs_prompt_after": percentiles(arr[keep, 0]),
            "pairs_chosen_after": percentiles(arr[keep, 1]),
            "pairs_rejected_after": percentiles(arr[keep, 2]),
        },
        "measured_as": "authors' study_length_distribution.py: prompt and each response "
                       "rendered separately with the chat template (+1 for EOS)",
    }
    write_json(report_out, report)
    log.info("length filter kept %d of %d pairs", len(kept), len(pairs))
    return report


def run_verify(raw_source: str, params: dict[str, Any], out: str, workers: int) -> dict[str, Any]:
    """Re-grade every generation of the structurally valid rows with Math-Verify."""
    from redi.grading import Grader
    from redi.io import write_json

    ds = load_raw(raw_source)
    rows = [r for r in shuffled_rows(ds, 0) if r.get("generations")
            and isinstance(r.get("correctness"), dict)
            and r["correctness"].get("math_verify_reparsed_answer") is not None]
    golds, reparsed, generations, skipped = [], [], [], 0
    usable = []
    for row in rows:
        if row.get("answer") in (None, ""):
            skipped += 1
            continue
        usable.append(row)
        answers = row.get("reparsed_answers") or []
        for i, gen in enumerate(row["generations"]):
            golds.append(row["answer"])
            ans = answers[i] if i < len(answers) else ""
            reparsed.append(f"$\\boxed{{{ans}}}$" if ans else "")
            generations.append(gen)
    with Grader(workers=workers, timeout_s=params["timeout_s"]) as grader:
        g_reparsed = grader.grade_many(reparsed, golds, "math_verify")
        g_strict = grader.grade_many(generations, golds, "strict")
    report = {
        "params": params,
        "rows_checked": len(usable),
        "rows_without_gold_answer": skipped,
        "generations_checked": len(generations),
        **verify_agreement(usable, g_reparsed, g_strict),
        "note": "reparsed_answer = Math-Verify(gold, reparsed_answers[i]) -- the definition of "
                "the corpus label; strict_generation = our strict grader on the generation",
    }
    write_json(out, report)
    return report


# The paper's figures for the real corpus (appendix C.2; authors' README).
PAPER_SIZES = {"sft_examples": 77629, "pairs_before_length_filter": 53175,
               "pairs_after_length_filter_approx": "53145-53176 (from 1,661 steps of 32)"}


def run_report(filter_report: str, length_report: str, verify_report: str | None,
               out: str) -> dict[str, Any]:
    from redi.io import read_json, write_json

    filt, length = read_json(filter_report), read_json(length_report)
    report = {
        "raw_source": filt["raw_source"],
        "filter": {"counts": filt["counts"], "dropped": filt["dropped"]},
        "sizes": {
            "sft_examples": filt["sft_examples"],
            "pairs_before_length_filter": filt["pairs_before_length_filter"],
            "pairs_after_length_filter": length["pairs_out"],
            "share_of_sft_problems_with_pair": filt["share_of_sft_problems_with_pair"],
        },
        "length_filter": {"params": length["params"], "dropped": length["dropped"]},
        "token_lengths": length["token_lengths"],
        "paper_sizes_on_real_corpus": PAPER_SIZES,
    }
    if verify_report:
        report["verify"] = read_json(verify_report)
    write_json(out, report)
    return report
