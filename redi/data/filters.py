"""The filter job: the authors' row filters and the dual-verifier rule make D_SFT and
D_Pref from the shuffled raw corpus (``loading``); the length rules are in
``length_filter``.

The data stage's rules follow the authors' ``clean_base_shuffled*.py`` and
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

Beyond the authors' rules (their code assumes a well-formed corpus): a row whose
fields have the wrong type (``DROP_REASONS``), a JSONL line that is not UTF-8,
not JSON or not an object, is dropped and counted under its own reason, never
raised; an empty (whitespace-only) generation is never an SFT target or a pair
side; identical chosen/rejected texts and duplicate problems are counted (and
kept, as the authors); SFT examples longer than ``sft.max_length`` are
truncated at training as the authors' TRL SFT did, counted here, and an example
whose prompt alone fills ``max_length`` (nothing left to train on) is dropped.
A corpus that leaves no SFT example or no pair stops the data stage
(:class:`UnusableCorpusError`) after writing ``results/data/report.json``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from redi.data.loading import (
    CARRIED_COLUMNS,
    LINE_REASONS,
    BadLine,
    JsonlCorpus,
    load_raw,
    shuffled_rows,
)
from redi.data.stage_report import fail_stage, merge_reports, stage_report_path

log = logging.getLogger(__name__)


LABEL_KEYS = ("llama_verification", "math_verify_reparsed_answer")


DROP_REASONS = (
    *LINE_REASONS,
    "problem_is_valid_missing", "problem_is_valid_not_str", "problem_is_valid_not_yes",
    "source_cn_k12",
    "problem_missing", "problem_not_str", "empty_problem",
    "generations_missing", "generations_not_list", "no_generations",
    "generations_not_list_of_str",
    "correctness_missing", "correctness_not_dict",
    *(f"{check}_{key}" for key in LABEL_KEYS for check in (
        "labels_missing", "labels_not_list", "labels_not_bool", "length_mismatch")),
    *(f"{column}_not_str" for column in CARRIED_COLUMNS),
    "text_not_utf8",
)


EXAMPLES_PER_REASON = 5  # rows named per drop reason in the report


def _validity_reason(row: dict[str, Any]) -> str | None:
    valid = row.get("problem_is_valid")
    if valid is None:
        return "problem_is_valid_missing"
    if not isinstance(valid, str):
        return "problem_is_valid_not_str"
    return None if valid.strip().lower() == "yes" else "problem_is_valid_not_yes"


def _source_reason(row: dict[str, Any]) -> str | None:
    return "source_cn_k12" if row.get("source") == "cn_k12" else None


def _problem_reason(row: dict[str, Any]) -> str | None:
    problem = row.get("problem")
    if problem is None:
        return "problem_missing"
    if not isinstance(problem, str):
        return "problem_not_str"
    return None if problem.strip() else "empty_problem"


def generations_reason(row: dict[str, Any]) -> str | None:
    generations = row.get("generations")
    if generations is None:
        return "generations_missing"
    if not isinstance(generations, list):
        return "generations_not_list"
    if not generations:
        return "no_generations"
    if not all(isinstance(g, str) for g in generations):
        return "generations_not_list_of_str"
    return None


def _labels_reason(row: dict[str, Any]) -> str | None:
    """The two labels the dual-verifier rule reads (``generations`` is a list already)."""
    correctness = row.get("correctness")
    if correctness is None:
        return "correctness_missing"
    if not isinstance(correctness, dict):
        return "correctness_not_dict"
    for key in LABEL_KEYS:
        labels = correctness.get(key)
        if labels is None:
            return f"labels_missing_{key}"
        if not isinstance(labels, list):
            return f"labels_not_list_{key}"
        if not all(v is None or isinstance(v, bool) for v in labels):
            return f"labels_not_bool_{key}"  # 1/0 or "yes": a guess would decide the pair
        if len(labels) != len(row["generations"]):
            return f"length_mismatch_{key}"
    return None


def _carried_reason(row: dict[str, Any]) -> str | None:
    for column in CARRIED_COLUMNS:  # written to the sets: one type per parquet column
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            return f"{column}_not_str"
    return None


def _is_utf8(text: str) -> bool:
    """False for lone surrogates (JSON's ``"\\ud800"``), which parquet cannot store."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_reason(row: dict[str, Any]) -> str | None:
    texts = [row["problem"], *row["generations"], *(row.get(c) for c in CARRIED_COLUMNS)]
    return None if all(t is None or _is_utf8(t) for t in texts) else "text_not_utf8"


_ROW_CHECKS = (_validity_reason, _source_reason, _problem_reason, generations_reason,
               _labels_reason, _carried_reason, _text_reason)


def drop_reason(row: Any) -> str | None:
    """The first reason (``DROP_REASONS``) that drops ``row``, or None if kept."""
    if isinstance(row, BadLine):
        return row.reason
    if not isinstance(row, dict):
        return "line_not_object"
    for check in _ROW_CHECKS:
        reason = check(row)
        if reason is not None:
            return reason
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


COUNT_KEYS = (
    "rows_in", "rows_kept", "rows_dropped", "generations_kept_rows", "generations_correct",
    "generations_llama_true", "generations_math_verify_true", "kept_rows_with_null_labels",
    "generations_empty", "rows_with_empty_generations", "problems_without_correct",
    "problems_all_correct", "problems_correct_and_incorrect", "kept_rows_duplicate_problem",
    "sft_duplicate_problems", "pairs_duplicate_problems", "pairs_identical",
)


def _problem_key(problem: str) -> bytes:
    """16-byte digest of the stripped problem (duplicate detection in bounded memory)."""
    return hashlib.blake2b(problem.strip().encode("utf-8"), digest_size=16).digest()


class _SetBuilder:
    """D_SFT, D_Pref and the counts, one shuffled row at a time."""

    def __init__(self, carried: Sequence[str] | None) -> None:
        self.carried = carried
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNT_KEYS, 0))
        self.drops: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.sft: list[dict[str, Any]] = []
        self.pairs: list[dict[str, Any]] = []
        self.seen: dict[str, set[bytes]] = {"rows": set(), "sft": set(), "pairs": set()}

    def add(self, row: Any) -> None:
        self.counts["rows_in"] += 1
        reason = drop_reason(row)
        if reason is None:
            self._keep(row)
            return
        self.drops[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append({"line": row.line, "error": row.detail} if isinstance(row, BadLine)
                            else {"original_index": row.get("original_index")
                                  if isinstance(row, dict) else None})

    def _seen(self, name: str, key: bytes) -> bool:
        seen = key in self.seen[name]
        self.seen[name].add(key)
        return seen

    def _keep(self, row: dict[str, Any]) -> None:
        c = self.counts
        gens, labels = row["generations"], row["correctness"]
        c["rows_kept"] += 1
        c["generations_kept_rows"] += len(gens)
        if any(v is None for k in LABEL_KEYS for v in labels[k]):
            c["kept_rows_with_null_labels"] += 1
        flags = correct_flags(row)
        c["generations_correct"] += sum(flags)
        c["generations_llama_true"] += sum(bool(v) for v in labels["llama_verification"])
        c["generations_math_verify_true"] += sum(
            bool(v) for v in labels["math_verify_reparsed_answer"])
        # an empty trace is no target and no rejected side, whatever its labels
        usable = [i for i, g in enumerate(gens) if g.strip()]
        c["generations_empty"] += len(gens) - len(usable)
        c["rows_with_empty_generations"] += len(usable) < len(gens)
        key = _problem_key(row["problem"])
        c["kept_rows_duplicate_problem"] += self._seen("rows", key)
        good = next((i for i in usable if flags[i]), None)
        bad = next((i for i in usable if not flags[i]), None)
        self._emit(row, key, good, bad)

    def _emit(self, row: dict[str, Any], key: bytes, good: int | None, bad: int | None) -> None:
        c = self.counts
        if good is None:
            c["problems_without_correct"] += 1
            return
        carried = self.carried if self.carried is not None else [
            col for col in CARRIED_COLUMNS if col in row]
        base = {"original_index": int(row["original_index"]), "problem": row["problem"],
                **{col: row.get(col) for col in carried}}
        gens = row["generations"]
        self.sft.append({**base, "response": gens[good], "chosen_gen_idx": good})
        c["sft_duplicate_problems"] += self._seen("sft", key)
        if bad is None:
            c["problems_all_correct"] += 1
            return
        c["problems_correct_and_incorrect"] += 1
        c["pairs_identical"] += gens[good] == gens[bad]  # kept, as the authors (README)
        c["pairs_duplicate_problems"] += self._seen("pairs", key)
        self.pairs.append({**base, "chosen": gens[good], "rejected": gens[bad],
                           "chosen_gen_idx": good, "rejected_gen_idx": bad})

    def report(self) -> dict[str, Any]:
        c = self.counts
        c["rows_dropped"] = sum(self.drops.values())
        if c["rows_in"] != c["rows_kept"] + c["rows_dropped"]:
            raise AssertionError(f"rows not accounted for: {dict(c)}")
        n_sft, n_pairs = len(self.sft), len(self.pairs)
        return {
            "counts": dict(sorted(c.items())),
            "dropped": dict(self.drops),
            "drop_examples": self.examples,
            "sft_examples": n_sft,
            "pairs_before_length_filter": n_pairs,
            "share_of_sft_problems_with_pair": round(n_pairs / n_sft, 4) if n_sft else 0.0,
        }


def build_sets(
    rows: Iterable[Any], carried: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Apply the filters and pairing rule to rows (already shuffled).

    Returns ``(sft, pairs, report)``; every input row is accounted for in the
    report's ``counts`` (kept) or ``dropped`` (under its first reason). ``carried``:
    the ``CARRIED_COLUMNS`` the sets get (None: those present in each row).
    """
    builder = _SetBuilder(carried)
    for row in rows:
        builder.add(row)
    return builder.sft, builder.pairs, builder.report()


def _dropped_text(dropped: dict[str, int]) -> str:
    top = sorted((kv for kv in dropped.items() if kv[1]), key=lambda kv: -kv[1])  # stable
    return ", ".join(f"{r}: {n}" for r, n in top) or "none"


def unusable_reason(report: dict[str, Any], source: str) -> str | None:
    """Why the filtered corpus cannot train both stages (no SFT example or no pair)."""
    c, n_sft = report["counts"], report["sft_examples"]
    if n_sft and report["pairs_before_length_filter"]:
        return None
    read = (f"of the {c['rows_in']} rows read from {source!r}, {c['rows_dropped']} were "
            f"dropped ({_dropped_text(report['dropped'])}) and {c['rows_kept']} kept")
    if not n_sft:
        return (f"the corpus gives no SFT example: {read}; none of the kept rows has a "
                "correct (Llama judge AND Math-Verify) non-empty generation")
    return (f"the corpus gives no preference pair: {read}; each of the {n_sft} problems "
            "with a correct generation has no incorrect non-empty one")


def _add_lines(report: dict[str, Any], corpus: JsonlCorpus) -> None:
    """Name the JSONL line of each dropped row the report cites."""
    for examples in report["drop_examples"].values():
        for example in examples:
            index = example.get("original_index")
            if isinstance(index, int) and 0 <= index < len(corpus):
                example["line"] = int(corpus.line_numbers[index])


def _log_drops(report: dict[str, Any], source: str) -> None:
    for reason, n in report["dropped"].items():
        if n:
            log.warning("%s: dropped %d row(s): %s, e.g. %s", source, n, reason,
                        report["drop_examples"][reason][:3])


def run_filter(raw_source: str, params: dict[str, Any], sft_out: str, pairs_out: str,
               report_out: str) -> dict[str, Any]:
    import pandas as pd

    from redi.io import write_json, write_parquet

    corpus = load_raw(raw_source)
    log.info("raw corpus %s: %d rows", raw_source, len(corpus))
    carried = [c for c in CARRIED_COLUMNS if c in corpus.column_names]
    sft, pairs, report = build_sets(shuffled_rows(corpus, params["shuffle_seed"]), carried)
    if isinstance(corpus, JsonlCorpus):
        _add_lines(report, corpus)
    report["raw_source"] = raw_source
    report["params"] = params
    _log_drops(report, raw_source)
    error = unusable_reason(report, raw_source)
    if error:
        fail_stage(stage_report_path(report_out), merge_reports(report, error=error), error)
    write_parquet(sft_out, pd.DataFrame(sft))
    write_parquet(pairs_out, pd.DataFrame(pairs))
    write_json(report_out, report)
    log.info("SFT examples: %d, pairs before the length filter: %d (%d with identical texts)",
             len(sft), len(pairs), report["counts"]["pairs_identical"])
    return report
