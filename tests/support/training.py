"""Training helpers shared by the training, evaluation and multi-process tests."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, RandomSampler

from redi.train import training
from redi.workflow import config as rc
from redi.workflow.config import OPTIMIZER
from tests.conftest import ROOT


def sft_params(**over) -> dict:
    p = {
        "stage": "sft",
        "run": "sft_2ep",
        "epochs": 2,
        "lr": 3e-3,
        "global_batch": 8,
        "micro_batch": 4,
        "max_length": 160,
        "save_every_steps": 2,
        "gradient_checkpointing": False,
        **OPTIMIZER,
    }
    return {**p, **over}


def stage2_params(objective: str, **over) -> dict:
    extra = {"redi": {"alpha": 0.8}, "dpo": {"beta": 0.1}, "simpo": {"beta": 2.0, "gamma": 1.0}}
    p = {
        "stage": "stage2",
        "run": f"{objective}_test",
        "objective": objective,
        "init": "sft_2ep",
        "lr": 1e-3,
        "paper_lr": 1e-6,
        "epochs": 1,
        "global_batch": 4,
        "micro_batch": 2,
        "max_prompt_length": 128,
        "max_length": 192,
        "save_every_steps": 2,
        "gradient_checkpointing": False,
        **extra[objective],
        **OPTIMIZER,
    }
    return {**p, **over}


def read_log(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


def run_stage2(tiny, sft_run, params, name, ref=None, hooks=None) -> dict:
    run_dir = tiny["root"] / name
    return training.run_stage2(
        params,
        tiny["pairs"],
        sft_run["manifest_path"],
        run_dir / "manifest.json",
        run_dir / "log.csv",
        ref_logps=ref,
        hooks=hooks,
    )


class Interrupt(Exception):
    """Stands in for a killed job."""


def kill_after(n: int) -> training.Hooks:
    def hook(step: int) -> None:
        if step == n:
            raise Interrupt

    return training.Hooks(hook)


def make_run(root: Path, model_dir: Path, run: str, stage: str, steps: list[int],
             init: str | None = None) -> Path:
    folder = root / "results" / "train" / run
    checkpoints = []
    for step in steps:
        path = folder / "checkpoints" / f"step-{step:06d}"
        shutil.copytree(model_dir, path)
        checkpoints.append({"step": step, "epoch": step / 10, "path": str(path)})
    checkpoints[-1]["final"] = True
    manifest = {"run": run, "stage": stage, "params": {}, "init": init or str(model_dir),
                "total_steps": steps[-1], "steps_per_epoch": 10, "checkpoints": checkpoints,
                "final_checkpoint": checkpoints[-1]["path"], "log": str(folder / "log.csv"),
                "wall_time_s": 1.0}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pd.DataFrame({"step": range(1, steps[-1] + 1), "epoch": [s / 10 for s in range(1, steps[-1] + 1)],
                  "loss": [1.0 / s for s in range(1, steps[-1] + 1)]}).to_csv(
        folder / "log.csv", index=False)
    return folder


def launch(n: int, script: str, *args: str, strategy: str = "zero2",
           env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``scripts/launch.sh n script args``, as the training rules run it."""
    environ = {**os.environ, "REDI_STRATEGY": strategy,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               # `python` in launch.sh is this interpreter (the venv), as in a job's env
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
               **(env or {})}
    environ.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(["bash", "scripts/launch.sh", str(n), script, *args], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.sh {n} {script} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def train_args(run_dir: Path, params: dict, **inputs: Path) -> list[str]:
    args = ["--params", rc.canonical_json(params)]
    for key, value in inputs.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args + ["--manifest", str(run_dir / "manifest.json"), "--log-csv",
                   str(run_dir / "log.csv"), "--threads", "2", "--log", str(run_dir / "job.log")]


def max_weight_diff(a: Path | str, b: Path | str) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def accelerate_shards(n_items: int, processes: int, micro_batch: int, seed: int,
                      epochs: int = 1) -> list[list[list[int]]]:
    """Each process's micro-batches per epoch from accelerate's prepared DataLoader over
    the Trainer's ``RandomSampler``, after the Trainer's ``set_seed(seed)``."""
    from accelerate.data_loader import prepare_data_loader
    from accelerate.utils import set_seed

    state = torch.random.get_rng_state()
    set_seed(seed)
    try:
        out = []
        for rank in range(processes):
            data = list(range(n_items))
            loader = DataLoader(data, batch_size=micro_batch, sampler=RandomSampler(data))
            loader = prepare_data_loader(loader, num_processes=processes, process_index=rank,
                                         put_on_device=False, use_seedable_sampler=True)
            batches = []
            for epoch in range(epochs):
                loader.set_epoch(epoch)
                batches += [b.tolist() for b in loader]
            out.append(batches)
        return out
    finally:
        torch.random.set_rng_state(state)
