"""Evaluation benchmarks: one JSON array of ``{id, problem, answer}`` per set.

The paper's five sets are read from a local folder (``benchmarks_dir``; the
rllm copies in ``../shared/benchmarks`` work offline) or, when it is null,
downloaded from the Hub once by a local rule into ``results/data/benchmarks``
in the same format. ``answer`` keeps its source type: a string (MATH-500,
AIME), a float (AMC: ``142.0``) or a list of alternatives (Minerva,
OlympiadBench); ``redi.grading.gold_candidates`` normalises all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ID_FIELDS = ("unique_id", "id", "idx")


def benchmark_path(spec: dict[str, Any]) -> Path:
    return Path(spec["dir"]) / spec["file"]


def normalize_items(name: str, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{id, problem, answer}`` per row; ids from the source when unique, else ``name/i``."""
    ids = []
    for i, row in enumerate(rows):
        found = next((row[f] for f in ID_FIELDS if row.get(f) not in (None, "")), None)
        ids.append(str(found) if found is not None else f"{name}/{i}")
    if len(set(ids)) != len(ids):
        ids = [f"{name}/{i}" for i in range(len(rows))]
    items = []
    for row, pid in zip(rows, ids, strict=True):
        problem, answer = row.get("problem"), row.get("answer")
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"benchmark {name}: item {pid} has no problem text")
        if answer is None or answer == "" or answer == []:
            raise ValueError(f"benchmark {name}: item {pid} has no answer")
        items.append({"id": pid, "problem": problem, "answer": answer})
    return items


def load_benchmark(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The items of one benchmark spec (``name``, ``file``, ``dir``) from its JSON file."""
    path = benchmark_path(spec)
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON array of problems")
    items = normalize_items(spec["name"], rows)
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


def download_benchmarks(specs: Sequence[dict[str, Any]], out_dir: str | Path) -> list[dict]:
    """Fetch every spec's ``hub`` dataset at its ``revision`` and write
    ``<out_dir>/<file>`` plus ``<out_dir>/download.json`` (needs network)."""
    from datasets import load_dataset

    from redi import hub
    from redi.io import atomic_path

    fetched = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for spec in specs:
            repo = spec.get("hub")
            if repo not in HUB_SOURCES:
                raise ValueError(f"benchmark {spec['name']}: no Hub loader for {repo!r}; "
                                 f"known: {sorted(HUB_SOURCES)} (or set benchmarks_dir)")
            config, split, mapper = HUB_SOURCES[repo]
            commit = hub.resolve(repo, "dataset", spec["revision"])
            rows = load_dataset(repo, config, split=split, revision=commit or spec["revision"])
            items = normalize_items(spec["name"], [mapper(dict(r)) for r in rows])
            (tmp / spec["file"]).write_text(json.dumps(items, indent=1))
            fetched.append(hub.record(repo, "dataset", spec["revision"], commit,
                                      benchmark=spec["name"], config=config, split=split,
                                      file=spec["file"], n_problems=len(items)))
            log.info("downloaded %s (%s@%s): %d problems", spec["name"], repo,
                     commit or spec["revision"], len(items))
        (tmp / DOWNLOAD_RECORD).write_text(json.dumps({"benchmarks": fetched}, indent=1) + "\n")
    return fetched
