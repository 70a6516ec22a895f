"""Checkpoints are verified before use, a damaged resume state is skipped, and I/O
failures at a job's boundary name the file: corrupted, truncated and deleted files, a
garbled resume state, a full disk."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from redi import io
from redi.eval import evaluation
from redi.io import FileIntegrityError, JobFileError, read_json, write_json
from redi.model.checkpoints import check_model_folder, init_checkpoint
from redi.model.models import load_causal_lm, load_tokenizer
from redi.train import training
from redi.train.resume import STATE_FILE, find_resume_state
from tests.support.training import sft_params

# 20 toy rows, global batch 8: 3 steps an epoch, 6 in all; a checkpoint at every step
PARAMS = sft_params(run="sft_integrity", save_every_steps=1)
TOTAL_STEPS = 6


class Interrupt(Exception):
    """Stands in for a killed job."""


def kill_after(n: int, seen: list[int] | None = None) -> training.Hooks:
    def hook(step: int) -> None:
        if seen is not None:
            seen.append(step)
        if step == n:
            raise Interrupt

    return training.Hooks(hook)


def train(tiny: dict, run_dir: Path, hooks: training.Hooks | None = None) -> dict:
    return training.run_sft(PARAMS, tiny["sft"], tiny["base"], run_dir / "manifest.json",
                            run_dir / "log.csv", hooks=hooks)


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    """A finished run's folder (copy it before damaging it)."""
    run_dir = tmp_path_factory.mktemp("integrity") / "sft_integrity"
    train(tiny, run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    dest = tmp_path / "sft_integrity"
    shutil.copytree(finished, dest)
    manifest = read_json(dest / "manifest.json")
    # the manifest names its checkpoints by path: point it at the copy
    text = (dest / "manifest.json").read_text().replace(str(finished), str(dest))
    (dest / "manifest.json").write_text(text)
    assert len(manifest["checkpoints"]) == TOTAL_STEPS
    return dest


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def flip_bytes(path: Path, offset: int = -64) -> None:
    """A same-size corruption: 16 bytes inverted near the end (the weights' data)."""
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------- records


def test_manifest_records_every_model_file(finished):
    manifest = read_json(finished / "manifest.json")
    for entry in manifest["checkpoints"]:
        folder = Path(entry["path"])
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                         if p.is_file())
        assert sorted(entry["files"]) == on_disk  # resume/ is gone, and not recorded
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(on_disk)
        for name, rec in entry["files"].items():
            data = (folder / name).read_bytes()
            assert rec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_resume_state_records_the_whole_step_folder(tiny, tmp_path):
    run_dir = tmp_path / "killed"
    with pytest.raises(Interrupt):
        train(tiny, run_dir, kill_after(2))
    folder = ckpt(run_dir, 2)
    state = read_json(folder / "resume" / STATE_FILE)
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.is_file() and p.name != STATE_FILE)
    assert sorted(state["files"]) == written
    assert {"resume/optimizer.bin", "resume/model.safetensors"} <= set(written)
    # the listed entry holds the model files' record only
    model_files = {k: v for k, v in state["files"].items() if not k.startswith("resume/")}
    assert state["checkpoints"][-1]["files"] == model_files


# ----------------------------------------------------------- verification


def test_same_size_corruption_is_refused_naming_the_file(run_copy):
    weights = ckpt(run_copy, 3) / "model.safetensors"
    size = weights.stat().st_size
    flip_bytes(weights)
    assert weights.stat().st_size == size
    for load in (load_causal_lm, load_tokenizer):
        with pytest.raises(FileIntegrityError) as err:
            load(ckpt(run_copy, 3))
        assert f"'{weights}' has sha256" in str(err.value)
        assert "same size, different content" in str(err.value)
        assert str(run_copy / "manifest.json") in str(err.value)
    load_causal_lm(ckpt(run_copy, 2))  # the others still load


def test_evaluation_refuses_a_corrupt_checkpoint_before_generating(run_copy):
    flip_bytes(ckpt(run_copy, 6) / "model.safetensors")

    class NoBackend:
        def generate(self, *args, **kwargs):
            raise AssertionError("a corrupt checkpoint reached generation")

    params = {"force_think": False, "n_samples": 1, "seed": 0, "think_prefix": "<think>",
              "think_prefix_newline": True}
    with pytest.raises(FileIntegrityError, match="model.safetensors' has sha256"):
        evaluation.evaluate_model(str(ckpt(run_copy, 6)), [], params, NoBackend(), None, [])


def test_truncated_file_names_sizes(run_copy):
    weights = ckpt(run_copy, 4) / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with pytest.raises(FileIntegrityError) as err:
        load_causal_lm(ckpt(run_copy, 4))
    assert f"'{weights}' has {size // 2} bytes, expected {size}" in str(err.value)


def test_missing_file_and_folder(run_copy):
    (ckpt(run_copy, 5) / "config.json").unlink()
    with pytest.raises(FileIntegrityError, match=r"config.json' is missing"):
        load_tokenizer(ckpt(run_copy, 5))
    shutil.rmtree(ckpt(run_copy, 1))
    with pytest.raises(FileIntegrityError) as err:
        load_causal_lm(ckpt(run_copy, 1))
    assert f"checkpoint folder '{ckpt(run_copy, 1)}' is missing" in str(err.value)
    # a local folder that no manifest lists: named, not looked up on the Hub
    gone = run_copy / "elsewhere" / "model"
    with pytest.raises(FileIntegrityError, match=f"model folder '{gone}' does not exist"):
        load_tokenizer(gone)


def test_unrecorded_folder_that_fails_to_load_is_named(run_copy, tmp_path):
    """A model folder no manifest records (a base model): a damaged weights header
    raises an error naming the folder, not safetensors' bare one."""
    folder = tmp_path / "base"
    shutil.copytree(ckpt(run_copy, 1), folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(JobFileError) as err:
        load_causal_lm(folder)
    assert str(err.value).startswith(f"loading the model '{folder}' failed: SafetensorError")


def test_stage2_init_is_checked_against_the_sft_manifest(run_copy, tmp_path):
    final = ckpt(run_copy, TOTAL_STEPS)
    assert init_checkpoint(run_copy / "manifest.json") == str(final)
    flip_bytes(final / "tokenizer.json", offset=10)
    # the manifest copied elsewhere (a job's input need not sit beside the run)
    moved = tmp_path / "init_manifest.json"
    shutil.copy(run_copy / "manifest.json", moved)
    with pytest.raises(FileIntegrityError, match=r"tokenizer.json' has sha256"):
        init_checkpoint(moved)


def test_hashes_once_per_job_sizes_every_time(run_copy, monkeypatch):
    hashed: list[str] = []
    real = io.sha256_file
    monkeypatch.setattr(io, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    folder = ckpt(run_copy, 2)
    n_files = len(read_json(run_copy / "manifest.json")["checkpoints"][1]["files"])
    check_model_folder(folder)
    check_model_folder(folder)
    load_tokenizer(folder)
    assert len(hashed) == n_files  # each file once, however often it is loaded
    weights = folder / "generation_config.json"
    weights.write_text(weights.read_text() + " ")  # one byte more
    with pytest.raises(FileIntegrityError, match="generation_config.json' has"):
        check_model_folder(folder)
    assert len(hashed) == n_files  # the size alone caught it


# ----------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def killed(tiny, tmp_path_factory) -> Path:
    """A run killed after step 4, with the resume states of steps 2 and 4 (the step-2
    one kept aside before the step-4 checkpoint dropped it)."""
    run_dir = tmp_path_factory.mktemp("killed") / "sft_integrity"
    with pytest.raises(Interrupt):
        train(tiny, run_dir, kill_after(2))
    aside = run_dir.parent / "step2_resume"
    shutil.copytree(ckpt(run_dir, 2) / "resume", aside)
    with pytest.raises(Interrupt):
        train(tiny, run_dir, kill_after(4))
    assert not (ckpt(run_dir, 2) / "resume").exists()
    shutil.copytree(aside, ckpt(run_dir, 2) / "resume")
    return run_dir


@pytest.fixture
def killed_copy(killed, tmp_path) -> Path:
    dest = tmp_path / "sft_integrity"
    shutil.copytree(killed, dest)
    for state in dest.glob(f"checkpoints/*/resume/{STATE_FILE}"):  # paths: the copy's
        state.write_text(state.read_text().replace(str(killed), str(dest)))
    return dest


def found_step(run_dir: Path) -> int | None:
    state = read_json(ckpt(run_dir, 2) / "resume" / STATE_FILE)  # never damaged here
    layout = {"world_size": state["world_size"], "distributed": state["distributed"]}
    found = find_resume_state(run_dir / "checkpoints", state["fingerprint"], layout,
                              "sft_integrity")
    return None if found is None else found[1]["step"]


DAMAGE = {
    "truncated JSON": lambda f: (f / "resume" / STATE_FILE).write_text(
        (f / "resume" / STATE_FILE).read_text()[:100]),
    "a JSON list": lambda f: (f / "resume" / STATE_FILE).write_text("[1, 2]"),
    "no file record": lambda f: (f / "resume" / STATE_FILE).write_text(
        json.dumps({k: v for k, v in read_json(f / "resume" / STATE_FILE).items()
                    if k != "files"})),
    "state file deleted": lambda f: (f / "resume" / STATE_FILE).unlink(),
    "optimizer flipped": lambda f: flip_bytes(f / "resume" / "optimizer.bin"),
    "optimizer truncated": lambda f: (f / "resume" / "optimizer.bin").write_bytes(b"PK"),
    "RNG state deleted": lambda f: (f / "resume" / "random_states_0.pkl").unlink(),
    "weights flipped": lambda f: flip_bytes(f / "model.safetensors"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_resume_state_falls_back_to_the_older_one(killed_copy, damage, caplog):
    assert found_step(killed_copy) == 4
    DAMAGE[damage](ckpt(killed_copy, 4))
    with caplog.at_level(logging.WARNING, logger="redi.train.resume"):
        assert found_step(killed_copy) == 2
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"resume state {ckpt(killed_copy, 4) / 'resume'} is unusable" in warning


def test_no_usable_state_starts_afresh(killed_copy, caplog):
    for step in (2, 4):
        flip_bytes(ckpt(killed_copy, step) / "resume" / "optimizer.bin")
    with caplog.at_level(logging.WARNING, logger="redi.train.resume"):
        assert found_step(killed_copy) is None
    messages = [r.getMessage() for r in caplog.records]
    for step in (2, 4):
        assert any(str(ckpt(killed_copy, step) / "resume" / "optimizer.bin") in m
                   for m in messages)
    assert "no usable resume state" in messages[-1]


def test_rerun_resumes_from_the_older_state_and_finishes(tiny, killed_copy, caplog):
    state_file = ckpt(killed_copy, 4) / "resume" / STATE_FILE
    state_file.write_text(state_file.read_text()[:-7])  # garbled: cut mid-JSON
    steps: list[int] = []
    with caplog.at_level(logging.WARNING):
        manifest = train(tiny, killed_copy, training.Hooks(steps.append))
    assert steps == [3, 4, 5, 6]  # resumed after step 2, not at 4, nor from scratch
    assert any(str(state_file) in r.getMessage() and "not valid JSON" in r.getMessage()
               for r in caplog.records)
    assert [c["step"] for c in manifest["checkpoints"]] == list(range(1, TOTAL_STEPS + 1))
    check_model_folder(manifest["final_checkpoint"])  # the new checkpoints are recorded


def test_rerun_with_no_usable_state_starts_afresh(tiny, killed_copy):
    for step in (2, 4):
        (ckpt(killed_copy, step) / "resume" / "model.safetensors").unlink()
    steps: list[int] = []
    manifest = train(tiny, killed_copy, training.Hooks(steps.append))
    assert steps == list(range(1, TOTAL_STEPS + 1))
    assert manifest["total_steps"] == TOTAL_STEPS


# ------------------------------------------------------- errors name the file


def dev_full_save(real):
    """torch.save onto a full disk: the real error (no file, no cause in it)."""
    def save(obj, f, *args, **kwargs):
        return real(obj, "/dev/full", *args, **kwargs)
    return save


def test_disk_full_in_resume_state_names_the_folder(tiny, tmp_path, monkeypatch):
    run_dir = tmp_path / "full"
    monkeypatch.setattr(torch, "save", dev_full_save(torch.save))
    with pytest.raises(JobFileError) as err:
        train(tiny, run_dir)
    tmp = ckpt(run_dir, 1).parent / ".step-000001.tmp" / "resume"
    assert str(err.value).startswith(f"writing '{tmp}' failed: RuntimeError: ")
    assert "MiB free on its file system" in str(err.value)
    # nothing half-written is left or listed
    assert list((run_dir / "checkpoints").iterdir()) == []
    assert not (run_dir / "manifest.json").exists()


def test_disk_full_in_weights_names_the_folder_and_resume_survives(tiny, tmp_path,
                                                                  monkeypatch):
    import transformers.modeling_utils as mu

    run_dir, real = tmp_path / "full", mu.safe_save_file
    calls = {"n": 0}

    def save_file(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the step-3 checkpoint's weights
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(mu, "safe_save_file", save_file)
    with pytest.raises(JobFileError) as err:
        train(tiny, run_dir)
    tmp = run_dir / "checkpoints" / ".step-000003.tmp"
    assert str(err.value).startswith(f"writing '{tmp}' failed: No space left on device; ")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-000001", "step-000002"]
    monkeypatch.setattr(mu, "safe_save_file", real)
    steps: list[int] = []
    manifest = train(tiny, run_dir, training.Hooks(steps.append))
    assert steps == [3, 4, 5, 6]  # the last good state, step 2
    assert len(manifest["checkpoints"]) == TOTAL_STEPS


def test_write_json_disk_full_names_the_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "summary.json"

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(JobFileError) as err:
        write_json(target, {"a": 1})
    assert str(err.value).startswith(f"writing '{target}' failed: No space left on device; ")
    assert isinstance(err.value, OSError)
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_text('{"run": "x", ')
    with pytest.raises(JobFileError, match=f"reading '{bad}' failed: not valid JSON"):
        read_json(bad)
    with pytest.raises(JobFileError, match="No such file or directory"):
        read_json(tmp_path / "absent.json")
