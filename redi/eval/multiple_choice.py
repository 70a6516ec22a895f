"""GPQA (Diamond) multiple choice: LightEval's prompt, option order and letter extraction.

What the paper ran is LightEval's ``gpqa:diamond`` as Open-R1 defines it
(``src/open_r1/evaluate.py``, ``gpqa_prompt_fn`` and ``gpqa_metric``; the same
prompt as LightEval's ``default_prompts.gpqa_instruct``):

* Prompt (the user turn; the chat template is applied by the generator): the
  simple-evals instruction, a blank line, the question, a blank line, and the
  options as ``A) ...`` lines (:data:`INSTRUCTION`, :func:`format_prompt`).
* Option order: the three incorrect answers keep their order and the correct
  one is inserted at ``gold_index = random.randint(0, 3)``. LightEval draws it
  from the process-wide ``random`` module (its pipeline seeds 1234), so the
  position depends on the row's place in the run. Here the same draw comes
  from ``random.Random(f"{seed}:{question}")`` with the seed 1234: the same
  rule and seed, but reproducible per question, whatever the file order.
* Scoring: LightEval's extractive match with ``IndicesExtractionConfig(
  prefix_for_extraction="NativeLetters")`` (English literals: "answer", ":"),
  re-implemented in :func:`extract_letter` after
  ``lighteval/metrics/utils/extractive_match_utils.py`` (``lazy_indices_regex``
  and ``extract_target_from_pred``). Pattern groups are tried in priority
  order; inside the first group that matches, the match ending last wins
  (ties: the one starting first). Open-R1's metric keeps
  ``try_extract_without_anchor=False`` (the default here); LightEval's own
  ``gpqa_instruct_metric`` sets it True (``anchorless=True``), which adds a
  bare-letter fallback (so ``\\boxed{C}`` counts only there). A sample is
  correct iff the extracted letter is the gold one.

Read (versions as stored, not pinned to a release tag): open-r1
``src/open_r1/evaluate.py`` @00b5200f, lighteval
``src/lighteval/metrics/utils/extractive_match_utils.py`` @031e09ce,
``src/lighteval/pipeline.py`` @006eb22d (``random.seed(1234)``).

Data: the Hub dataset ``Idavidrein/gpqa`` (config ``gpqa_diamond``, split
``train``, 198 questions; gated: accept its terms and pass a token or set
``HF_TOKEN``), or a local JSON/JSONL/CSV file with the Hub's column names.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

HUB_REPO = "Idavidrein/gpqa"
HUB_CONFIG = "gpqa_diamond"
LIGHTEVAL_SEED = 1234
LETTERS = "ABCD"
COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
           "Incorrect Answer 3")
INSTRUCTION = ("Answer the following multiple choice question. The last line of your response "
               "should be of the following format: 'Answer: $LETTER' (without quotes) where "
               "LETTER is one of ABCD. Think step by step before answering.")


@dataclass(frozen=True)
class MCItem:
    id: str
    question: str
    choices: tuple[str, ...]  # in presentation order (A, B, C, D)
    gold_index: int
    prompt: str

    @property
    def gold_letter(self) -> str:
        return LETTERS[self.gold_index]


def format_prompt(question: str, choices: Sequence[str]) -> str:
    if len(choices) != len(LETTERS):
        raise ValueError(f"GPQA prompts have {len(LETTERS)} options, got {len(choices)}")
    options = "\n".join(f"{letter}) {choice}" for letter, choice in zip(LETTERS, choices,
                                                                        strict=True))
    return f"{INSTRUCTION}\n\n{question}\n\n{options}"


def shuffle_choices(row: Mapping[str, str], seed: int = LIGHTEVAL_SEED) -> tuple[list[str], int]:
    """LightEval's rule: the incorrect answers in order, the correct one inserted at
    ``randint(0, 3)``, drawn from a generator seeded per question."""
    gold_index = random.Random(f"{seed}:{row['Question']}").randint(0, 3)
    choices = [row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    choices.insert(gold_index, row["Correct Answer"])
    return choices, gold_index


def build_items(rows: Sequence[Mapping[str, Any]], source: str = "rows",
                seed: int = LIGHTEVAL_SEED) -> list[MCItem]:
    """Validate rows in the Hub's schema and turn them into prompts with a gold letter."""
    if not rows:
        raise ValueError(f"{source}: no questions")
    items = []
    for i, row in enumerate(rows):
        _validate_row(row, f"{source}: row {i}")
        choices, gold = shuffle_choices(row, seed)
        item_id = str(row.get("Record ID") or f"{Path(source).stem}/{i}")
        items.append(MCItem(item_id, row["Question"], tuple(choices), gold,
                            format_prompt(row["Question"], choices)))
    return items


def _validate_row(row: Mapping[str, Any], where: str) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected an object with columns {list(COLUMNS)}, "
                         f"got {type(row).__name__}")
    for column in COLUMNS:
        if column not in row:
            raise ValueError(f"{where}: missing column {column!r} (has: {sorted(row)})")
        value = row[column]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: column {column!r} must be a non-empty string, "
                             f"got {value!r:.60}")


# ---------------------------------------------------------------------- loading


def load_rows(source: str | Path) -> list[dict[str, Any]]:
    """Rows of a local file (the Hub copy is written locally by :func:`download_hub`)."""
    return load_local(source)


# what the download job suggests when the Hub and the cache both fail
LOCAL_INSTEAD = ("or set the benchmark's `file` to a local .json/.jsonl/.csv with the Hub's "
                 "columns (no download)")


def download_hub(out: str | Path, record_out: str | Path, config: str | None = None,
                 revision: str = "main", repo: str = HUB_REPO) -> dict[str, Any]:
    """The gated Hub dataset at ``revision`` (the Hub, or offline the Hugging Face cache)
    written to ``out`` (JSONL, the Hub's columns: what :func:`load_local` reads), and
    what was fetched to ``record_out``."""
    from redi import hub
    from redi.io import write_json, write_text

    if repo != HUB_REPO:
        raise ValueError(f"no multiple-choice loader for {repo!r} (known: {HUB_REPO})")
    config = config or HUB_CONFIG
    ds, commit = hub.load_dataset(repo, config, "train", revision, LOCAL_INSTEAD)
    rows = [dict(r) for r in ds]
    build_items(rows, source=f"{repo}:{config}")  # the columns the evaluation needs
    write_text(out, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
    record = hub.record(repo, "dataset", revision, commit, config=config, split="train",
                        n_questions=len(rows))
    write_json(record_out, record)
    return record


def load_local(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a .json (array of objects), .jsonl or .csv file with the Hub's columns,
    checked as :func:`validate_file` does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multiple-choice file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise ValueError(f"{path}: unsupported extension {suffix!r} (use .json, .jsonl or .csv)")
    try:
        rows = _read_csv(path) if suffix == ".csv" else _read_json_rows(path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 (byte {exc.start}: {exc.reason})") from exc
    items = build_items(rows, source=str(path))  # validates every row, naming file, row and column
    _check_unique_ids(rows, items, path)
    return rows


def validate_file(path: str | Path) -> int:
    """Check a GPQA-style file (UTF-8, well-formed, at least one row, every column a
    non-empty string, Record IDs unique); returns its number of questions."""
    return len(load_local(path))


def _read_json_rows(path: Path) -> list[Any]:
    """A .json array or .jsonl rows; parse errors name the file and the line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        return [_parse_json(line, path, f"line {n}")
                for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = _parse_json(text, path, "")
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON array of objects, got {type(rows).__name__}")
    return rows


def _parse_json(text: str, path: Path, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = where or f"line {exc.lineno} column {exc.colno}"
        raise ValueError(f"{path}: {at} is not valid JSON ({exc.msg})") from exc


def _check_unique_ids(rows: Sequence[Mapping[str, Any]], items: Sequence[MCItem],
                      path: Path) -> None:
    seen: dict[str, int] = {}
    for i, (row, item) in enumerate(zip(rows, items, strict=True)):
        if row.get("Record ID") in (None, ""):
            continue  # positional ids are unique by construction
        if item.id in seen:
            raise ValueError(f"{path}: row {i} (Record ID {item.id!r}): Record IDs must be "
                             f"unique, row {seen[item.id]} has the same")
        seen[item.id] = i


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (header: {reader.fieldnames})")
        return list(reader)


# ------------------------------------------------------------------- extraction


@lru_cache(maxsize=8)
def _pattern_groups(n_choices: int, anchorless: bool) -> tuple[tuple[re.Pattern[str], ...], ...]:
    """LightEval's index patterns (English), grouped by priority, best first."""
    letters = LETTERS[:n_choices]
    index = "(?P<index>" + "|".join(rf"{c}|\({c}\)" for c in letters) + ")"
    suffix = r"(?:\*\*)?(?:[.,: ]|$)"  # optional bold, then . , : space or the end
    keyed = rf"(?:^| )(?:\*\*)?{index}{suffix}"  # the letter as a word
    groups = [
        [rf"(?i:final answer is):?\s*{index}\.?\s?I hope"],
        [rf"(?i:final answer.{{0,100}}?)\s+is:?\s*{index}"],
        [rf"(?i:answer):.{{0,50}}?{keyed}"],
        [rf"(?i:answer).{{0,50}}?{keyed}"],
        [rf"^(?:\*\*)?{index}{suffix}"],  # the response starts with the letter
        [rf"\n(?:\*\*)?{index}{suffix}"],  # a line starts with the letter
    ]
    if anchorless:
        groups += [[keyed], [index]]
    return tuple(tuple(re.compile(p) for p in group) for group in groups)


def extract_letter(response: str, n_choices: int = 4, anchorless: bool = False) -> str | None:
    """The answer letter LightEval extracts from a response, or None."""
    for group in _pattern_groups(n_choices, anchorless):
        matches = [m for pattern in group for m in pattern.finditer(response)]
        if matches:
            best = max(matches, key=lambda m: (m.end(), -m.start()))
            return best.group("index").strip("()")
    return None


def is_correct(response: str, item: MCItem, anchorless: bool = False) -> bool:
    return extract_letter(response, len(item.choices), anchorless) == item.gold_letter


def grade(items: Sequence[MCItem], responses: Sequence[Sequence[str]],
          anchorless: bool = False) -> np.ndarray:
    """0/1 matrix [questions, samples]; every question needs the same number (>= 1) of samples."""
    if len(responses) != len(items):
        raise ValueError(f"{len(responses)} response lists for {len(items)} questions")
    sizes = {len(row) for row in responses}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every question needs the same number (>= 1) of samples, got sizes "
                         f"{sorted(sizes)}")
    return np.array([[is_correct(r, item, anchorless) for r in row]
                     for item, row in zip(items, responses, strict=True)], dtype=bool)
