"""Adding an objective is one loss function + one registry entry, and nothing else:
a toy objective (weighted SFT on the chosen response) registered here trains
through the engine."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from redi.train import losses, training
from tests.support.training import read_log, stage2_params, weights


def weighted_sft(batch: losses.PairLogps, params: dict) -> torch.Tensor:
    """``-w * S_w / |y_w|``: the chosen response's mean NLL, weighted."""
    return -params["weight"] * batch.chosen / batch.chosen_lengths.clamp(min=1)


WSFT = losses.Objective(
    label="wSFT", loss=weighted_sft,
    hyper=(losses.HyperParam("weight", "w", {"type": "number", "exclusiveMinimum": 0}),),
)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(losses.OBJECTIVES, "wsft", WSFT)


@pytest.fixture
def init_manifest(tiny, tmp_path):
    """An 'SFT run' whose final checkpoint is the tiny base model."""
    path = tmp_path / "init" / "manifest.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"final_checkpoint": str(tiny["base"])}))
    return path


def train(tiny, init_manifest, tmp_path, name: str, **params) -> tuple[dict, list[dict]]:
    run = tmp_path / name
    manifest = training.run_stage2(params, tiny["pairs"], init_manifest, run / "manifest.json",
                                   run / "log.csv")
    return manifest, read_log(run / "log.csv")


def wsft_params(weight: float, run: str) -> dict:
    params = {**stage2_params("redi", run=run), "objective": "wsft", "weight": weight}
    del params["alpha"]
    return params


def test_a_registered_objective_trains(registered, tiny, init_manifest, tmp_path, monkeypatch):
    manifest, rows = train(tiny, init_manifest, tmp_path, "wsft1", **wsft_params(1.0, "wsft1"))
    assert manifest["objective"] == "wsft" and len(rows) == 5
    assert rows[0]["reward_margin"] == "" and float(rows[0]["chosen_logps"]) < 0
    # weight 1 is REDI with alpha = 0 (SFT on the chosen trace, token mean per pair),
    # bit for bit on the same (plain, non-fused) LM-head path; the fused path's equality
    # to the plain one, up to fp32 rounding, is tests/test_step.py's
    plain = dataclasses.replace(losses.OBJECTIVES["redi"], sequence_weights=None)
    monkeypatch.setitem(losses.OBJECTIVES, "redi", plain)
    _, redi_rows = train(tiny, init_manifest, tmp_path, "redi0",
                         **stage2_params("redi", run="redi0", alpha=0.0))
    assert [r["loss"] for r in rows] == [r["loss"] for r in redi_rows]
    a, b = weights(manifest["final_checkpoint"]), weights(
        json.loads((tmp_path / "redi0" / "manifest.json").read_text())["final_checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the hyper-parameter reaches the loss: half the weight, half the first-step loss
    _, half = train(tiny, init_manifest, tmp_path, "wsft05", **wsft_params(0.5, "wsft05"))
    assert float(half[0]["loss"]) == pytest.approx(float(rows[0]["loss"]) / 2, rel=1e-6)
