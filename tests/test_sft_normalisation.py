"""SFT's loss normalisation (``sft.loss_normalisation``): one global token mean, or the
authors' HF Trainer's per-process token mean averaged over processes, checked on a
2-process CPU run against the formula computed by hand in this process."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from redi.model.models import load_tokenizer
from redi.train import losses, training
from redi.train.train_data import micro_batches, run_plan, sft_items
from redi.workflow import config as rc
from redi.workflow import plan
from tests.conftest import ROOT
from tests.support.training import launch, max_weight_diff, read_log, sft_params, train_args

# 20 rows: steps of 8, 8, 4; 2 processes x 2 accumulation micro-batches of 2
PARAMS = sft_params(epochs=1, global_batch=8, micro_batch=2, save_every_steps=1,
                    max_length=400)
WORLD, ACCUM = 2, 2
LONGER = 4  # process 0's first-step responses: 4x the toy's (equal-length) ones
SHORT = "1111 1111"  # process 1's: short, one repeated token (a distinct gradient direction)


# ------------------------------------------------------------- the reduction


def test_loss_divisor_by_hand():
    # two processes: summed token losses 6 and 3 over 3 and 1 completion tokens
    sums, tokens = [6.0, 3.0], [3.0, 1.0]
    step = sum(tokens)
    glob = [training.loss_divisor("global_tokens", t, step, 2) for t in tokens]
    authors = [training.loss_divisor("authors", t, step, 2) for t in tokens]
    assert glob == [4.0, 4.0] and authors == [6.0, 2.0]
    assert sum(s / d for s, d in zip(sums, glob, strict=True)) == pytest.approx(9 / 4)
    # (6/3 + 3/1) / 2: the short process's tokens weigh 3x more
    assert sum(s / d for s, d in zip(sums, authors, strict=True)) == pytest.approx(2.5)
    # one process: the two are the same
    assert training.loss_divisor("authors", 4.0, 4.0, 1) == training.loss_divisor(
        "global_tokens", 4.0, 4.0, 1) == 4.0
    # a process with only padding micro-batches: a finite divisor (its losses weigh 0)
    assert training.loss_divisor("authors", 0.0, 4.0, 2) == 2.0


def test_an_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="'mean' is not one of"):
        training.loss_divisor("mean", 1.0, 2.0, 2)
    with pytest.raises(ValueError, match="'mean' is not one of"):
        training.loss_normalisation({"loss_normalisation": "mean"})
    assert training.loss_normalisation({}) == "global_tokens"


# ----------------------------------------------------------------- the config


@pytest.fixture(scope="module")
def cfg() -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    return config


def test_presets_and_job_params(cfg):
    assert plan.sft_params(cfg, 3)["loss_normalisation"] == "global_tokens"
    paper = copy.deepcopy(cfg)
    paper["preset"] = "paper"
    assert plan.sft_params(paper, 5)["loss_normalisation"] == "authors"
    assert plan.sft_params(paper, 3, "qwen7b")["loss_normalisation"] == "authors"


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda s: s.update(loss_normalisation="mean"),
     "'mean' is not one of ['global_tokens', 'authors']"),
    (lambda s: s.pop("loss_normalisation"), "'loss_normalisation' is a required property"),
])
def test_a_bad_value_is_refused(cfg, tmp_path, mutate, expected):
    bad = copy.deepcopy(cfg)
    mutate(bad["presets"]["tiny"]["sft"])
    with pytest.raises(rc.ConfigError) as err:
        rc.validate_config(bad, root=tmp_path)
    assert expected in str(err.value)


# -------------------------------------------------- 2 processes vs the formula


def first_step_ranks(n_items: int) -> list[list[int]]:
    """Each process's item indices of the first step (the plan depends on the count only)."""
    steps, _ = run_plan(n_items, PARAMS, losses.objective("sft").shuffle, WORLD, ACCUM)
    return [[i for mb in micro_batches(steps[0], PARAMS, r, WORLD, ACCUM) for i in mb]
            for r in range(WORLD)]


@pytest.fixture(scope="module")
def data(tiny, tmp_path_factory) -> Path:
    """The tiny SFT data with process 0's first-step responses made longer and process
    1's short and alike: the processes hold very different token counts, and weighing
    them differently moves the gradient well beyond rounding."""
    frame = pd.read_parquet(tiny["sft"])
    longer, shorter = first_step_ranks(len(frame))
    frame.loc[longer, "response"] = frame.loc[longer, "response"] * LONGER
    frame.loc[shorter, "response"] = SHORT
    path = tmp_path_factory.mktemp("sft_unequal") / "sft.parquet"
    frame.to_parquet(path)
    return path


def by_hand(tiny: dict, data: Path, normalisation: str) -> tuple[float, float]:
    """(loss, gradient norm) of the first step from the formula, in one process: plain
    HF forwards of one sequence each, a summed cross-entropy over completion tokens."""
    from transformers import AutoModelForCausalLM

    items = sft_items(load_tokenizer(tiny["base"]), data, PARAMS["max_length"])
    ranks = first_step_ranks(len(items))
    model = AutoModelForCausalLM.from_pretrained(tiny["base"], dtype=torch.float32)
    sums, tokens = [], []
    for indices in ranks:
        total = torch.zeros(())
        for i in indices:
            seq = items[i].seqs[0]
            ids = torch.tensor([seq.ids])
            labels = ids.clone()
            labels[0, :seq.n_prompt] = -100  # completion only
            logits = model(input_ids=ids).logits[0, :-1].float()
            total = total + torch.nn.functional.cross_entropy(logits, labels[0, 1:],
                                                              reduction="sum")
        sums.append(total)
        tokens.append(sum(items[i].seqs[0].n_completion for i in indices))
    assert tokens[0] > 4 * tokens[1]  # the case where the two normalisations differ
    if normalisation == "authors":  # each process's token mean, averaged over processes
        loss = sum(s / n for s, n in zip(sums, tokens, strict=True)) / WORLD
    else:
        loss = sum(sums) / sum(tokens)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return float(loss.detach()), math.sqrt(sum(float(g.pow(2).sum()) for g in grads))


@pytest.fixture(scope="module")
def two_process_runs(tiny, data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sft_normalisation")
    runs = {}
    for name in ("authors", "global_tokens"):
        run = root / name
        params = {**PARAMS, "run": f"sft_{name}", "loss_normalisation": name}
        launch(WORLD, "scripts/train_sft.py",
               *train_args(run, params, data=data, init=tiny["base"]), strategy="ddp")
        runs[name] = run
    return runs


@pytest.mark.parametrize("normalisation", ["authors", "global_tokens"])
def test_two_processes_follow_the_formula(tiny, data, two_process_runs, normalisation):
    run = two_process_runs[normalisation]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["world_size"] == WORLD
    assert manifest["params"]["loss_normalisation"] == normalisation
    row = read_log(run / "log.csv")[0]
    loss, grad_norm = by_hand(tiny, data, normalisation)
    assert float(row["loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(row["grad_norm"]) == pytest.approx(grad_norm, rel=1e-4)


def test_the_two_normalisations_differ(tiny, two_process_runs):
    rows = {n: read_log(run / "log.csv") for n, run in two_process_runs.items()}
    authors, glob = (float(rows[n][0]["grad_norm"]) for n in ("authors", "global_tokens"))
    assert abs(authors - glob) > 0.1 * glob  # far beyond the 1e-4 agreement above
    assert rows["authors"][0]["tokens"] == rows["global_tokens"][0]["tokens"]  # same data
    finals = [json.loads((run / "manifest.json").read_text())["final_checkpoint"]
              for run in two_process_runs.values()]
    assert max_weight_diff(*finals) > 1e-5
