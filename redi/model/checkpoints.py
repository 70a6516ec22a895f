"""A training run's folder: checkpoints (Hugging Face folders + the latest resume
state), ``log.csv`` and the manifest (docs/ARCHITECTURE.md, Training).

Ranks share the folder: rank 0 writes the model, the log and the renames; every
rank writes its own resume shards; they meet at a barrier wherever one rank's
write must be complete before another rank goes on.

Integrity: each save records the size and sha256 of every file it wrote, hashed
right after writing (page cache), in the manifest entry (``files``: the model
folder) and in the resume state (the whole step folder). ``check_model_folder``
checks a run's checkpoint against that record before any job loads it.

A run pruned by ``redi.prune`` keeps its manifest; ``pruned.json`` beside it lists the
weights removed, and a job that asks for one of them gets ``PrunedCheckpointError``
naming that marker and the file, not a missing-file error.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from redi.io import (
    FileIntegrityError,
    atomic_path,
    file_records,
    naming_file,
    read_json,
    verify_files,
)

log = logging.getLogger(__name__)

LOG_COLUMNS = [
    "step", "epoch", "loss", "lr", "grad_norm", "update_norm", "lr_x_grad_norm",
    "chosen_logps", "rejected_logps", "reward_margin", "reward_accuracy", "tokens",
    "tokens_sq", "tokens_per_s", "elapsed_s",
]


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


# torch reports a failed write (a full disk) or read as a RuntimeError naming no file
TORCH_IO_ERRORS = (OSError, RuntimeError)


def save_checkpoint(acc: Any, lm: Any, tokenizer: Any, init: str, ckpt_dir: Path, step: int,
                    state: dict[str, Any], previous: list[dict[str, Any]]) -> None:
    """``ckpt_dir/step-N``: the model, tokenizer and generation config (rank 0), the
    resume state of every rank, then renamed into place; older checkpoints drop
    their resume state (only the latest is resumed from). The entry of ``step`` in
    ``state["checkpoints"]`` (the caller's dict) gets the model files' record.

    A failed write raises ``JobFileError`` naming the file and removes the partial
    folder: no half-written checkpoint is ever renamed into place or listed."""
    name = checkpoint_name(step)
    final, tmp = ckpt_dir / name, ckpt_dir / f".{name}.tmp"
    try:
        _write_checkpoint(acc, lm, tokenizer, init, tmp, state, name)
    except BaseException:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if acc.is_main_process:
        with naming_file(final, "renaming a checkpoint into"):
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        for old in previous:
            shutil.rmtree(Path(old["path"]) / "resume", ignore_errors=True)
    acc.wait_for_everyone()


def _write_checkpoint(acc: Any, lm: Any, tokenizer: Any, init: str, tmp: Path,
                      state: dict[str, Any], name: str) -> None:
    if acc.is_main_process:
        with naming_file(tmp, errors=TORCH_IO_ERRORS):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            lm.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            generation = Path(init) / "generation_config.json"
            if generation.exists():  # stop tokens (<|im_end|>) exactly as the init model's
                shutil.copy2(generation, tmp / "generation_config.json")
    acc.wait_for_everyone()
    # accelerate warns that it drops the tied lm_head copy: expected (it is re-tied on load)
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    with naming_file(tmp / "resume", errors=TORCH_IO_ERRORS):
        acc.save_state(str(tmp / "resume"))  # every process (DeepSpeed partitions)
    # save_state ends without a barrier: no rank may rename the folder while
    # another still writes its shard or RNG state into it
    acc.wait_for_everyone()
    if acc.is_main_process:
        _write_state(tmp, name, state)


def _write_state(tmp: Path, name: str, state: dict[str, Any]) -> None:
    """``trainer_state.json`` with the record of every file of the step folder; the
    listed entry of this checkpoint gets its model files' (``resume/`` is deleted
    once a later checkpoint exists, the model files stay)."""
    files = file_records(tmp)
    for entry in state["checkpoints"]:
        if Path(entry["path"]).name == name:
            entry["files"] = {k: v for k, v in files.items() if not k.startswith("resume/")}
    path = tmp / "resume" / STATE_FILE
    with naming_file(path):
        path.write_text(json.dumps({**state, "files": files}))


def _looks_local(name: str) -> bool:
    """A path, not a Hub id (``owner/name`` or ``name``)."""
    return Path(name).is_absolute() or name.startswith(".") or len(Path(name).parts) > 2


def _listed_files(manifest: dict[str, Any], folder: str | os.PathLike
                  ) -> dict[str, Any] | None:
    """The file record of the checkpoint ``folder`` in ``manifest``, if it has one."""
    name = Path(folder).name
    for entry in manifest.get("checkpoints", []):
        if Path(entry["path"]).name == name and "files" in entry:
            return entry["files"]
    return None


def recorded_files(folder: Path) -> tuple[dict[str, Any], Path] | None:
    """The record of a run's checkpoint (``<run>/checkpoints/step-N``) in its run's
    ``manifest.json`` and that manifest's path; None for any other folder."""
    manifest = folder.parent.parent / "manifest.json"
    if folder.parent.name != "checkpoints" or not manifest.is_file():
        return None
    files = _listed_files(read_json(manifest), folder)
    return None if files is None else (files, manifest)


# beside a run's manifest: the files ``redi.prune`` removed (``removed``: checkpoint,
# file, bytes, kind)
PRUNE_MARKER = "pruned.json"
STATE_FILE = "trainer_state.json"  # the Trainer's own state in a checkpoint's resume/


class PrunedCheckpointError(FileIntegrityError):
    """A job asked for a checkpoint whose weights were removed by pruning."""


def _run_dir(folder: Path) -> Path | None:
    """The run folder of a run's checkpoint (``<run>/checkpoints/step-N``), else None."""
    return folder.parent.parent if folder.parent.name == "checkpoints" else None


def check_not_pruned(path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose weights its run's prune marker lists as removed (and
    that are still absent: a retrained run's files are checked as usual)."""
    folder = Path(path)
    run_dir = _run_dir(folder)
    marker = None if run_dir is None else run_dir / PRUNE_MARKER
    if marker is None or not marker.is_file():
        return
    gone = [r for r in read_json(marker).get("removed", [])
            if r["kind"] == "weights" and Path(r["checkpoint"]).name == folder.name
            and not (folder / r["file"]).exists()]
    if gone:
        first = gone[0]
        raise PrunedCheckpointError(
            f"checkpoint '{folder}' was pruned: '{marker}' lists '{folder / first['file']}' "
            f"({first['bytes']} bytes) as removed because no job needed it "
            f"(presets.<preset>.prune_checkpoints); retrain the run to get it back: "
            f"snakemake --forcerun {run_dir / 'manifest.json'}")


def check_model_folder(path: str | os.PathLike) -> None:
    """Before a model folder is loaded: a run's checkpoint must match its manifest
    record (``FileIntegrityError`` naming each differing file); any other local
    path must exist (else transformers would look it up on the Hub and report a
    misleading error). Sizes every call, hashes once per process."""
    folder = Path(path)
    check_not_pruned(folder)
    found = recorded_files(folder)
    if found is not None:
        verify_files(folder, *found)
    elif not folder.exists() and _looks_local(str(path)):
        raise FileIntegrityError(f"model folder '{path}' does not exist")


def check_listed(manifest: dict[str, Any], path: str, source: str | os.PathLike) -> None:
    """Check the checkpoint ``path`` against its entry in ``manifest`` (read from
    ``source``), wherever the manifest lies."""
    files = _listed_files(manifest, path)
    if files is None:
        check_model_folder(path)
    else:
        check_not_pruned(path)
        verify_files(path, files, source)


def drop_later_checkpoints(ckpt_dir: Path, step: int) -> None:
    """What a killed attempt left after the checkpoint it is resumed from (rank 0)."""
    for path in ckpt_dir.iterdir():
        later = path.name.startswith("step-") and int(path.name[5:]) > step
        if path.name.startswith(".") or later:
            shutil.rmtree(path, ignore_errors=True)


def drop_unlisted(ckpt_dir: Path, listed: list[dict[str, Any]]) -> None:
    """Step folders that are none of the run's checkpoints: resume points saved at a
    stop signal, superseded by a later checkpoint (rank 0)."""
    keep = {Path(c["path"]).name for c in listed}
    for path in ckpt_dir.glob("step-*"):
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def write_log_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in LOG_COLUMNS})


class Progress:
    """What a run shows while it trains (rank 0): a tqdm bar, TensorBoard scalars in
    ``tb/`` and a log line every tenth of the run."""

    def __init__(self, run_dir: Path, total: int, start: int, run: str | None,
                 main: bool) -> None:
        from tqdm import tqdm

        self.total, self.writer = total, None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events a killed attempt wrote after the checkpoint
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1)
        self.bar = tqdm(total=total, initial=start, desc=run, disable=not main, mininterval=2,
                        dynamic_ncols=True)

    def report(self, row: dict[str, Any]) -> None:
        if self.writer is not None:
            for key in LOG_COLUMNS[2:]:
                if row[key] is not None:
                    self.writer.add_scalar(f"train/{key}", row[key], row["step"])
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        if row["step"] % max(1, self.total // 10) == 0:
            log.info("step %d/%d loss %.5f grad_norm %.4g update_norm %.4g chosen %.4f "
                     "rejected %s tok/s %.0f", row["step"], self.total, row["loss"],
                     row["grad_norm"], row["update_norm"], row["chosen_logps"],
                     row["rejected_logps"], row["tokens_per_s"])

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def init_checkpoint(init_manifest: str | os.PathLike) -> str:
    """The final checkpoint of the SFT run whose manifest is given, checked against its
    record there (``check_listed``)."""
    manifest = read_json(init_manifest)
    check_listed(manifest, manifest["final_checkpoint"], init_manifest)
    return manifest["final_checkpoint"]
