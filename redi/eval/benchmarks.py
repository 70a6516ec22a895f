"""Evaluation benchmarks: one JSON array of ``{id, problem, answer}`` per set.

The paper's five sets are read from a local folder (``benchmarks_dir``; the
rllm copies in ``../shared/benchmarks`` work offline) or, when it is null,
downloaded from the Hub once by a local rule into ``results/data/benchmarks``
in the same format. ``answer`` keeps its source type: a string (MATH-500,
AIME), a float (AMC: ``142.0``) or a list of alternatives (Minerva,
OlympiadBench); ``redi.grading.gold_candidates`` normalises all of them.

Every file is checked against one schema before any generation
(:func:`validate_benchmark_file`, run by the data stage): UTF-8, a well-formed
JSON array (``.json``) or one object per line (``.jsonl``), at least one item,
each item an object with a non-empty ``problem`` string and an ``answer`` that
is a non-empty string, a finite number (not a bool) or a non-empty list of
those, and ids (``unique_id``/``id``/``idx``, else the position) unique. Errors
name the file, the item and the rule. :func:`validate_ood_file` does the same
for the out-of-domain files (HumanEval's and GPQA's schemas).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redi.eval import ood_kinds
from redi.io import BenchmarkFileError, sha256_file

log = logging.getLogger(__name__)

ID_FIELDS = ("unique_id", "id", "idx")


def benchmark_path(spec: dict[str, Any]) -> Path:
    return Path(spec["dir"]) / spec["file"]


def read_rows(path: str | Path) -> list[Any]:
    """The rows of a ``.json`` array or a ``.jsonl`` file, decoding and parsing errors
    named with the file and where in it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchmarkFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchmarkFileError(f"{path}: not UTF-8 (byte {exc.start}: {exc.reason})") from exc
    if not text.strip():
        raise BenchmarkFileError(f"{path}: the file is empty (at least one item is required)")
    if path.suffix.lower() == ".jsonl":
        return [_parse(line, path, f"line {n}") for n, line in
                enumerate(text.splitlines(), start=1) if line.strip()]
    rows = _parse(text, path, "")
    if not isinstance(rows, list):
        raise BenchmarkFileError(f"{path}: expected a JSON array of items, got "
                                 f"{type(rows).__name__}")
    return rows


def _parse(text: str, path: Path, where: str) -> Any:
    try:
        # NaN/Infinity are not JSON; Python's parser would accept them silently
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        at = where or f"line {exc.lineno} column {exc.colno}"
        raise BenchmarkFileError(f"{path}: {at}: not well-formed JSON ({exc.msg})") from exc
    except ValueError as exc:
        raise BenchmarkFileError(f"{path}: {where or 'content'}: {exc}") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def answer_error(answer: Any) -> str | None:
    """Why ``answer`` is not gradable (None if it is): a non-empty string, a finite number
    that is not a bool, or a non-empty list of those (alternatives)."""
    if isinstance(answer, list):
        if not answer:
            return "answer is an empty list"
        errors = [answer_error(a) for a in answer if not isinstance(a, list)]
        if any(isinstance(a, list) for a in answer):
            return "answer alternatives must be strings or numbers, not lists"
        return next((f"answer alternative: {e}" for e in errors if e), None)
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return (f"answer must be a string, a number or a list of those, got "
                f"{type(answer).__name__} {answer!r:.40}")
    if isinstance(answer, float) and not math.isfinite(answer):
        return f"answer must be a finite number, got {answer!r}"
    if isinstance(answer, str):
        from redi.grading import gold_latex

        try:
            gold_latex(answer)  # what grading does to it: nothing may be left
        except ValueError:
            return f"answer is empty ({answer!r:.40})"
    return None


def normalize_items(name: str, rows: Sequence[Any], where: str | None = None) -> list[dict[str, Any]]:
    """``{id, problem, answer}`` per row, every row checked against the schema; ids from
    the source (``unique_id``/``id``/``idx``), else ``name/i``; they must be unique.
    ``where`` names the file in errors (default: the benchmark)."""
    where = where or f"benchmark {name}"
    if len(rows) == 0:
        raise BenchmarkFileError(f"{where}: no items (at least one is required)")
    items, first_seen = [], {}
    for i, row in enumerate(rows):
        item = _check_row(row, i, name, where)
        if item["id"] in first_seen:
            raise BenchmarkFileError(f"{where}: item {i} (id {item['id']!r}): ids must be "
                                     f"unique, item {first_seen[item['id']]} has the same id")
        first_seen[item["id"]] = i
        items.append(item)
    return items


def _check_row(row: Any, i: int, name: str, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise BenchmarkFileError(f"{where}: item {i}: must be an object with problem and "
                                 f"answer, got {type(row).__name__} {row!r:.40}")
    found = next((row[f] for f in ID_FIELDS if row.get(f) not in (None, "")), None)
    if isinstance(found, (bool, dict, list, float)):
        raise BenchmarkFileError(f"{where}: item {i}: id must be a string or an integer, "
                                 f"got {found!r:.40}")
    pid = str(found) if found is not None else f"{name}/{i}"
    problem = row.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise BenchmarkFileError(f"{where}: item {i} (id {pid!r}): problem must be a non-empty "
                                 f"string, got {problem!r:.40}")
    if "answer" not in row:
        raise BenchmarkFileError(f"{where}: item {i} (id {pid!r}): answer is missing")
    error = answer_error(row["answer"])
    if error:
        raise BenchmarkFileError(f"{where}: item {i} (id {pid!r}): {error}")
    return {"id": pid, "problem": problem, "answer": row["answer"]}


def validate_benchmark_file(path: str | Path, name: str | None = None) -> int:
    """Check one benchmark file against the schema; returns its number of items."""
    path = Path(path)
    return len(normalize_items(name or path.stem, read_rows(path), where=str(path)))


def validate_ood_file(path: str | Path | None, kind: str) -> int:
    """Check one out-of-domain file by its kind's validator (``redi.eval.ood_kinds``; ``code``:
    HumanEval's schema, None = the packaged HumanEval; ``multiple_choice``: GPQA's);
    returns its number of items."""
    try:
        entry = ood_kinds.get(kind)
    except ValueError as exc:
        raise BenchmarkFileError(f"{path}: {exc}") from None
    return entry.function("validate")(path)


def validate_code(path: str | Path | None) -> int:
    from redi.eval import code_eval

    return code_eval.validate_code_file(path)


def validate_multiple_choice(path: str | Path | None) -> int:
    from redi.eval import multiple_choice

    if path is None:
        raise BenchmarkFileError("multiple-choice benchmark without a file")
    return multiple_choice.validate_file(path)


def validate_all(params: dict[str, Any]) -> dict[str, Any]:
    """Check every benchmark file of a run before any generation: ``params["benchmarks"]``
    (``redi.workflow.plan.benchmark_specs``: name, file, dir) and ``params["ood"]``
    (``redi.workflow.ood_plan.ood_benchmarks``: name, kind, path). Returns the record of what was
    checked (path, items, sha256 per file); raises one error listing every bad file."""
    record: dict[str, Any] = {"benchmarks": {}, "ood": {}}
    errors = []
    checks = [("benchmarks", s["name"], benchmark_path(s),
               lambda s=s: validate_benchmark_file(benchmark_path(s), s["name"]))
              for s in params.get("benchmarks", [])]
    checks += [("ood", s["name"], s.get("path"),
                lambda s=s: validate_ood_file(s.get("path"), s["kind"]))
               for s in params.get("ood", [])]
    for group, name, path, check in checks:
        try:
            n = check()
        except (ValueError, FileNotFoundError) as exc:
            errors.append(f"{group} {name}: {exc}")
            continue
        record[group][name] = {"path": str(path) if path else None, "n_items": n,
                               "sha256": _sha256(path)}
        log.info("%s %s: %d items, valid (%s)", group, name, n, path or "packaged")
    if errors:
        raise BenchmarkFileError(f"{len(errors)} invalid benchmark file(s):\n  "
                                 + "\n  ".join(errors))
    return record


def _sha256(path: str | Path | None) -> str | None:
    return sha256_file(path) if path else None


def load_benchmark(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The items of one benchmark spec (``name``, ``file``, ``dir``) from its JSON file."""
    path = benchmark_path(spec)
    items = normalize_items(spec["name"], read_rows(path), where=str(path))
    log.info("benchmark %s: %d problems from %s", spec["name"], len(items), path)
    return items


# ------------------------------------------------------------------ Hub copies


def _math500(row: dict) -> dict:
    return {"id": row["unique_id"], "problem": row["problem"], "answer": row["answer"]}


def _aime(row: dict) -> dict:
    return {"id": str(row["id"]), "problem": row["problem"], "answer": str(row["answer"])}


def _amc(row: dict) -> dict:
    return {"id": str(row["id"]), "problem": row["problem"], "answer": float(row["answer"])}


def _minerva(row: dict) -> dict:
    from redi.grading import last_boxed

    # field names differ between copies; the answer may only be in the solution
    answer = row.get("answer")
    if answer in (None, "", []):
        answer = last_boxed(row.get("solution") or "")
    problem = row.get("problem") or row.get("question")
    return {"id": str(row.get("idx", row.get("id", ""))), "problem": problem,
            "answer": answer if isinstance(answer, list) else [answer]}


def _olympiad(row: dict) -> dict:
    answer = row["final_answer"]
    return {"id": str(row["id"]), "problem": row["question"],
            "answer": list(answer) if isinstance(answer, (list, tuple)) else [answer]}


# hub id -> (config name, split, row mapper)
HUB_SOURCES: dict[str, tuple[str | None, str, Callable[[dict], dict]]] = {
    "HuggingFaceH4/MATH-500": (None, "test", _math500),
    "HuggingFaceH4/aime_2024": (None, "train", _aime),
    "AI-MO/aimo-validation-amc": (None, "train", _amc),
    "knoveleng/Minerva-Math": (None, "train", _minerva),
    "Hothan/OlympiadBench": ("OE_TO_maths_en_COMP", "train", _olympiad),
}


DOWNLOAD_RECORD = "download.json"  # what was fetched, next to the benchmark files


# what a download job suggests when the Hub and the cache both fail
LOCAL_INSTEAD = ("or set the preset's `benchmarks_dir` to a folder holding every benchmark's "
                 "`file` ({id, problem, answer} JSON; no download)")


def download_benchmarks(specs: Sequence[dict[str, Any]], out_dir: str | Path) -> list[dict]:
    """Every spec's ``hub`` dataset at its pinned ``revision`` (the Hub, or offline the
    Hugging Face cache: ``redi.hub.load_dataset``) written as ``<out_dir>/<file>`` plus
    ``<out_dir>/download.json``; returns the records."""
    from redi.io import atomic_path

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        fetched = [_download_one(spec, tmp) for spec in specs]
        (tmp / DOWNLOAD_RECORD).write_text(json.dumps({"benchmarks": fetched}, indent=1) + "\n")
    return fetched


def _download_one(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from redi import hub

    repo = spec.get("hub")
    if repo not in HUB_SOURCES:
        raise ValueError(f"benchmark {spec['name']}: no Hub loader for {repo!r}; "
                         f"known: {sorted(HUB_SOURCES)} (or set benchmarks_dir)")
    config, split, mapper = HUB_SOURCES[repo]
    rows, commit = hub.load_dataset(repo, config, split, spec["revision"], LOCAL_INSTEAD)
    items = normalize_items(spec["name"], [mapper(dict(r)) for r in rows])
    (out_dir / spec["file"]).write_text(json.dumps(items, indent=1))
    log.info("benchmark %s: %s@%s (commit %s), %d problems", spec["name"], repo,
             spec["revision"], commit, len(items))
    return hub.record(repo, "dataset", spec["revision"], commit, benchmark=spec["name"],
                      config=config, split=split, file=spec["file"], n_problems=len(items))
