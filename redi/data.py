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

import codecs
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("problem", "problem_is_valid", "source", "generations", "correctness")
LABEL_KEYS = ("llama_verification", "math_verify_reparsed_answer")
CARRIED_COLUMNS = ("answer", "source", "uuid")
# drop reasons, in the order they are checked (a row counts under its first):
# JSONL lines that hold no row, then the authors' filters with the type checks
# each needs ("missing" = absent or null), then the columns the sets carry
LINE_REASONS = ("line_not_utf8", "line_invalid_json", "line_not_object")
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
STAGE_REPORT = "report.json"  # the data stage's report, beside each job's own report


class RawDataError(ValueError):
    """The raw corpus cannot be read as OpenR1-Math-Raw."""


class UnusableCorpusError(RawDataError):
    """The corpus was read but leaves no SFT example or no preference pair."""


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that holds no row (counted under ``reason``; ``line`` is 1-based)."""

    reason: str
    line: int
    detail: str


# ------------------------------------------------------------------ loading


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def parse_line(raw: bytes, line: int) -> dict[str, Any] | BadLine:
    """One JSONL line: the row, or why it holds none."""
    if line == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadLine("line_not_utf8", line,
                       f"byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        return BadLine("line_invalid_json", line, f"invalid JSON: {str(e)[:200]}")
    if not isinstance(value, dict):
        return BadLine("line_not_object", line,
                       f"a JSON {_JSON_TYPES.get(type(value), 'value')}, not an object")
    return value


class JsonlCorpus:
    """A local JSON Lines corpus, read line by line (never whole into memory).

    Its rows are the non-blank lines, numbered from 0 in file order (the row
    index ``datasets`` gives a clean file). A line that is not UTF-8, not JSON or
    not an object is yielded as a :class:`BadLine` for the filter to count; a file
    without a single JSON object is unreadable (:class:`RawDataError`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets, self.line_numbers, self.column_names = _index_jsonl(path)

    def __len__(self) -> int:
        return len(self.offsets)

    def rows(self, order: Iterable[int]) -> Iterator[dict[str, Any] | BadLine]:
        with open(self.path, "rb") as f:
            for i in order:
                f.seek(int(self.offsets[i]))
                yield parse_line(f.readline(), int(self.line_numbers[i]))


def _index_jsonl(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Byte offsets and line numbers of the non-blank lines; the keys they use."""
    offsets: list[int] = []
    numbers: list[int] = []
    columns: dict[str, None] = {}
    first_bad: BadLine | None = None
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                offsets.append(offset)
                numbers.append(number)
                parsed = parse_line(raw, number)
                if isinstance(parsed, BadLine):
                    first_bad = first_bad or parsed
                else:
                    columns.update(dict.fromkeys(parsed))
            offset += len(raw)
    if not offsets:
        raise RawDataError(f"raw data {str(path)!r} is empty: no JSON lines")
    if not columns and first_bad is not None:
        raise RawDataError(
            f"raw data {str(path)!r}: none of its {len(offsets)} lines is a JSON object "
            f"(line {first_bad.line}: {first_bad.detail}); expected UTF-8 JSON Lines, "
            "one OpenR1-Math-Raw row per line")
    return np.asarray(offsets, dtype=np.int64), np.asarray(numbers, dtype=np.int64), list(columns)


def _unreadable(path: Path, e: Exception) -> RawDataError:
    cause = e.__cause__ or e  # datasets wraps the Arrow error it met
    return RawDataError(f"raw data {str(path)!r} is not a readable parquet file "
                        f"({type(cause).__name__}: {cause})")


def _load_parquet(path: Path):
    import datasets
    import pyarrow.parquet as pq

    try:  # the footer first: Arrow's own message for an empty or foreign file
        n_rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as e:  # ArrowInvalid, OSError: the file is unreadable
        raise _unreadable(path, e) from e
    if n_rows == 0:
        raise RawDataError(f"raw data {str(path)!r} has no rows")
    try:
        return datasets.Dataset.from_parquet(str(path))
    except Exception as e:  # a corrupt page, a type datasets cannot map
        raise _unreadable(path, e) from e


def load_raw(source: str):
    """The raw corpus file: a ``datasets.Dataset`` (Arrow, memory-mapped) for a
    ``.parquet`` file, a :class:`JsonlCorpus` for a ``.jsonl`` file (the Hub's corpus is
    the ``download_raw`` job's parquet file).

    An unreadable, empty or schema-less file raises :class:`RawDataError` naming it.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"raw_data file {source!r} does not exist")
    if not path.is_file():
        raise RawDataError(f"raw_data {source!r} is not a file")
    if path.suffix == ".jsonl":
        corpus = JsonlCorpus(path)
    elif path.suffix == ".parquet":
        corpus = _load_parquet(path)
    else:
        raise RawDataError(f"raw_data {source!r}: expected a .jsonl or .parquet file")
    check_columns(corpus.column_names, source)
    if "original_index" in corpus.column_names:
        log.warning("raw data %s has a column original_index: replaced by the row index",
                    source)
    return corpus


def check_columns(columns: Iterable[str], source: str) -> None:
    columns = set(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise RawDataError(
            f"raw data {source!r} lacks OpenR1-Math-Raw column(s) {missing}; "
            f"has {sorted(columns)}"
        )


def shuffled_rows(corpus, seed: int,
                  batch_size: int = 1000) -> Iterator[dict[str, Any] | BadLine]:
    """Rows with ``original_index``, in the order of ``ds.shuffle(seed)`` (the authors')."""
    if isinstance(corpus, JsonlCorpus):
        # datasets' shuffle is this permutation (numpy's default_rng(seed))
        order = np.random.default_rng(seed).permutation(len(corpus))
        for index, row in zip(order, corpus.rows(order), strict=True):
            yield row if isinstance(row, BadLine) else {**row, "original_index": int(index)}
        return
    if "original_index" in corpus.column_names:
        corpus = corpus.remove_columns("original_index")
    ds = corpus.add_column("original_index", np.arange(len(corpus), dtype=np.int64))
    ds = ds.shuffle(seed=seed)
    for batch in ds.iter(batch_size=batch_size):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys), strict=True):
            yield dict(zip(keys, values, strict=True))


# ---------------------------------------------------------------- filtering


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


def _generations_reason(row: dict[str, Any]) -> str | None:
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


_ROW_CHECKS = (_validity_reason, _source_reason, _problem_reason, _generations_reason,
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


def sft_sequence_lengths(tokenizer: Any, rows: Sequence[dict[str, Any]],
                         chunk: int = 1000) -> list[tuple[int, int]]:
    """(prompt, completion) token counts of SFT examples as the SFT job tokenizes them
    (``redi.batching``: chat-template prompt; response + end tokens)."""
    from redi import batching

    out: list[tuple[int, int]] = []
    for start in range(0, len(rows), chunk):  # chunks: only the counts are kept
        part = rows[start:start + chunk]
        prompts = batching.encode_prompts(tokenizer, [r["problem"] for r in part])
        completions = batching.encode_completions(
            tokenizer, [r["response"] for r in part], batching.sft_suffix(tokenizer))
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


def stage_report_path(job_report: str) -> Path:
    """``results/data/report.json``: the data stage's report lies beside each job's own."""
    return Path(job_report).with_name(STAGE_REPORT)


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


def _fail(stage_report: Path, report: dict[str, Any], error: str) -> NoReturn:
    """Write the data stage's report (status failed), then stop the job."""
    from redi.io import write_json

    write_json(stage_report, report)
    raise UnusableCorpusError(f"{error} (counts in {stage_report})")


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
        _fail(stage_report_path(report_out), merge_reports(report, error=error), error)
    write_parquet(sft_out, pd.DataFrame(sft))
    write_parquet(pairs_out, pd.DataFrame(pairs))
    write_json(report_out, report)
    log.info("SFT examples: %d, pairs before the length filter: %d (%d with identical texts)",
             len(sft), len(pairs), report["counts"]["pairs_identical"])
    return report


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
        _fail(stage_report_path(report_out), merged, error)
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
        _fail(stage_report_path(report_out), merged, error)
    write_parquet(pairs_out, kept)
    write_json(report_out, report)
    log.info("length filter kept %d of %d pairs", len(kept), report["pairs_in"])
    return report


def _verifiable(row: Any) -> bool:
    """Rows whose generations and Math-Verify labels can be re-graded."""
    if not isinstance(row, dict) or _generations_reason(row) is not None:
        return False
    correctness = row.get("correctness")
    return isinstance(correctness, dict) and isinstance(
        correctness.get("math_verify_reparsed_answer"), list)


def run_verify(raw_source: str, params: dict[str, Any], out: str, workers: int) -> dict[str, Any]:
    """Re-grade every generation of the structurally valid rows with Math-Verify."""
    from redi.grading import Grader
    from redi.io import write_json

    corpus = load_raw(raw_source)
    rows = [r for r in shuffled_rows(corpus, 0) if _verifiable(r)]
    golds, reparsed, generations, skipped = [], [], [], 0
    usable = []
    for row in rows:
        if not isinstance(row.get("answer"), str) or not row["answer"]:
            skipped += 1
            continue
        usable.append(row)
        answers = row.get("reparsed_answers")
        answers = answers if isinstance(answers, list) else []
        for i, gen in enumerate(row["generations"]):
            golds.append(row["answer"])
            ans = answers[i] if i < len(answers) and isinstance(answers[i], str) else ""
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
