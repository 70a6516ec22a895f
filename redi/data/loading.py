"""The raw corpus: JSONL (indexed, every line checked) or Parquet, its columns checked,
its rows in the authors' seeded shuffle."""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


REQUIRED_COLUMNS = ("problem", "problem_is_valid", "source", "generations", "correctness")


CARRIED_COLUMNS = ("answer", "source", "uuid")


# drop reasons, in the order they are checked (a row counts under its first):
# JSONL lines that hold no row, then the authors' filters with the type checks
# each needs ("missing" = absent or null), then the columns the sets carry
LINE_REASONS = ("line_not_utf8", "line_invalid_json", "line_not_object")


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
