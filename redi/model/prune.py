"""Removing the checkpoint weights no job still needs (opt-in: the preset's
``prune_checkpoints``; docs/CLUSTER.md).

One definition of what a run keeps (``kept_steps``), used by the prune jobs and by the
cost planner's pruned disk: its final checkpoint (the init of its stage-2 runs, Table
4's ``last``), its best one (``<run>.best.json``), every checkpoint of a run Figures
8-10 read, and no resume state (a finished run deletes its own; one an interrupted
deletion left goes too: a finished run is not resumed).

A prune job runs after the run's curve and every job that loads one of its checkpoints
(``redi.workflow.plan.prune_inputs``). It removes the weight files of the other checkpoints and
every resume state, leaves the manifest, the log and each checkpoint's small files
(config, tokenizer) as they are, and gives every folder it removed files from its
modification time back: Snakemake compares modification times, so nothing downstream
looks changed. Its marker (``pruned.json``) lists each removed file with its size; the
checkpoint verification (``redi.model.checkpoints.check_not_pruned``) names it when a job asks
for a removed checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redi.io import read_json, write_json

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
RESUME = "resume"


def kept_steps(steps: Sequence[int], best: int | None, every: bool) -> list[int]:
    """The checkpoints pruning keeps of a run that saved ``steps`` (in order: the last
    is its final checkpoint): all of them for a run Figures 8-10 read (``every``), else
    the final one and ``best`` (None before the curve is written)."""
    if every or not steps:
        return list(steps)
    return sorted({steps[-1], *([best] if best in steps else [])})


def _is_weights(name: str) -> bool:
    return "/" not in name and name.endswith(WEIGHT_SUFFIXES)


def _weight_names(entry: dict[str, Any], folder: Path) -> list[str]:
    """A checkpoint's weight files: from its manifest record (so a second pruning still
    lists what the first removed), else what its folder holds."""
    names = entry.get("files") or (
        [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else [])
    return sorted(n for n in names if _is_weights(n))


def _removal(entry: dict[str, Any], kept: bool) -> list[dict[str, Any]]:
    """What pruning removes of one checkpoint: its weights unless kept, its resume state."""
    folder = Path(entry["path"])
    records = entry.get("files") or {}
    out = []
    for name in [] if kept else _weight_names(entry, folder):
        path = folder / name
        size = path.stat().st_size if path.exists() else records[name]["size"]
        out.append({"checkpoint": entry["path"], "step": int(entry["step"]), "file": name,
                    "bytes": size, "kind": "weights", "earlier": not path.exists()})
    resume = folder / RESUME
    if resume.is_dir():
        out += [{"checkpoint": entry["path"], "step": int(entry["step"]),
                 "file": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size,
                 "kind": "resume", "earlier": False}
                for p in sorted(resume.rglob("*")) if p.is_file()]
    return out


@contextmanager
def kept_mtimes(folders: Sequence[Path]) -> Iterator[None]:
    """Give ``folders`` their access and modification times back after the block:
    removing a file changes its folder's mtime, which Snakemake would read as new."""
    times = {f: (f.stat().st_atime_ns, f.stat().st_mtime_ns) for f in folders if f.is_dir()}
    try:
        yield
    finally:
        for folder, ns in times.items():
            os.utime(folder, ns=ns)


def _remove(folder: Path, items: list[dict[str, Any]]) -> None:
    for item in items:
        if item["kind"] == "weights" and not item["earlier"]:
            (folder / item["file"]).unlink()
    if any(item["kind"] == "resume" for item in items):
        shutil.rmtree(folder / RESUME)


def prune_run(manifest_path: str | os.PathLike, best_path: str | os.PathLike,
              every: bool, out: str | os.PathLike) -> dict[str, Any]:
    """Remove what no job needs of the run of ``manifest_path`` and write the marker
    ``out`` (also returned): the checkpoints kept and why, each file removed with its
    size (``earlier``: already absent, removed by a previous pruning)."""
    manifest = read_json(manifest_path)
    best = int(read_json(best_path)["step"])
    entries = manifest["checkpoints"]
    steps = [int(e["step"]) for e in entries]
    keep = set(kept_steps(steps, best, every))
    plans = [(Path(e["path"]), _removal(e, int(e["step"]) in keep)) for e in entries]
    with kept_mtimes([folder for folder, items in plans if items]):
        for folder, items in plans:
            _remove(folder, items)
    removed = [item for _, items in plans for item in items]
    marker = {
        "run": manifest["run"], "manifest": str(manifest_path), "best_step": best,
        "every_checkpoint": every,
        "kept": [{"step": s, "checkpoint": e["path"],
                  "because": _reasons(s, steps[-1], best, every)}
                 for s, e in zip(steps, entries, strict=True) if s in keep],
        "removed": removed,
        "removed_bytes": sum(i["bytes"] for i in removed if not i["earlier"]),
    }
    write_json(out, marker)
    log.info("%s: kept %d of %d checkpoints, removed %d files (%.3f GB)", manifest["run"],
             len(keep), len(steps), len(removed), marker["removed_bytes"] / 1e9)
    return marker


def _reasons(step: int, final: int, best: int, every: bool) -> list[str]:
    """Why a checkpoint is kept, as the marker says."""
    reasons = [("final", step == final), ("best", step == best), ("figures 8-10", every)]
    return [name for name, applies in reasons if applies]
