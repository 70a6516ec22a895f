"""The training engine on a tiny random Qwen2: data layout, losses, logs, checkpoints, resume."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from redi.data.prompts import ENDOFTEXT, IM_END, render_generation_prompt
from redi.model import checkpoints
from redi.train import batching, losses, train_data, training
from redi.train.batching import TokenSeq
from redi.train.ref_logps import compute_ref_logps
from tests.support.training import (
    Interrupt,
    kill_after,
    read_log,
    run_stage2,
    stage2_params,
    weights,
)

# ------------------------------------------------------------------ fixtures


# ------------------------------------------------------------ pure helpers


def test_step_plan_and_micro_batches():
    plan = train_data.step_plan(10, 4, 2, shuffle_seed=None)
    assert plan == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 2
    shuffled = train_data.step_plan(10, 4, 2, shuffle_seed=42)
    assert [len(s) for s in shuffled] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(shuffled[:3], [])) == list(range(10))  # each epoch is a permutation
    assert shuffled[:3] != shuffled[3:]  # reshuffled per epoch, reproducibly
    assert shuffled == train_data.step_plan(10, 4, 2, shuffle_seed=42)
    # 2 processes x 2 accumulation steps x micro 2
    assert train_data.rank_micro_batches(list(range(8)), 0, 2, 2) == [[0, 2], [4, 6]]
    assert train_data.rank_micro_batches(list(range(8)), 1, 2, 2) == [[1, 3], [5, 7]]
    # a short last step: every process still runs `accum` micro-batches (some empty)
    assert train_data.rank_micro_batches([0, 1, 2], 1, 2, 2) == [[1], []]
    assert train_data.rank_micro_batches([0, 1, 2], 0, 1, 4) == [[0], [1], [2], []]


def test_truncation():
    seq = batching.sft_sequence([1, 2, 3], [4, 5, 6, 7], max_length=5)
    assert seq == TokenSeq((1, 2, 3, 4, 5), 3) and seq.n_completion == 2
    chosen, rejected = batching.pair_sequences(
        [1, 2, 3, 4], [5, 6, 7], [8, 9], max_prompt_length=2, max_length=4
    )
    assert chosen == TokenSeq((3, 4, 5, 6), 2)  # prompt keeps its end, completion its start
    assert rejected == TokenSeq((3, 4, 8, 9), 2)
    with pytest.raises(ValueError, match="no completion token"):
        batching.sft_sequence([1, 2, 3], [4], max_length=3)


def test_items_render_the_chat_template(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny["base"])
    row = pd.read_parquet(tiny["pairs"]).iloc[0]
    response = pd.read_parquet(tiny["sft"])["response"][0]
    sft = train_data.sft_items(tokenizer, tiny["sft"], max_length=4096)[0].seqs[0]
    prompt = render_generation_prompt(tokenizer, row["problem"])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(sft.ids[: sft.n_prompt]) == prompt
    assert tokenizer.decode(sft.ids[sft.n_prompt :]) == response + IM_END + "\n"
    item = train_data.pair_items(tokenizer, tiny["pairs"], 4096, 8192)[0]
    chosen, rejected = item.seqs
    # stage 2 appends the EOS after <|im_end|>\n, as the authors' TRL tokenize_row
    assert (
        tokenizer.decode(chosen.ids[chosen.n_prompt :]) == row["chosen"] + IM_END + "\n" + ENDOFTEXT
    )
    assert tokenizer.decode(rejected.ids[rejected.n_prompt :]).endswith(IM_END + "\n" + ENDOFTEXT)
    assert chosen.ids[: chosen.n_prompt] == sft.ids[: sft.n_prompt]


# --------------------------------------------------------------------- SFT


def test_sft_run_layout(sft_run, tiny):
    manifest, run_dir = sft_run["manifest"], sft_run["dir"]
    # 20 examples, global batch 8: 3 steps per epoch (8, 8, 4); checkpoints every 2
    # steps and at every epoch end
    assert manifest["total_steps"] == 6 and manifest["steps_per_epoch"] == 3
    assert [(c["step"], c["epoch"]) for c in manifest["checkpoints"]] == [
        (2, 0.6667),
        (3, 1),
        (4, 1.3333),
        (6, 2),
    ]
    assert manifest["checkpoints"][-1]["final"] is True
    assert manifest["final_checkpoint"] == (run_dir / "checkpoints" / "step-000006").as_posix()
    assert manifest["init"] == str(tiny["base"]) and manifest["stage"] == "sft"
    assert manifest["layout"] == "padded" and manifest["attention"] == "sdpa"
    assert (manifest["objective"], manifest["world_size"], manifest["distributed"]) == (
        "sft", 1, "NO")
    # what produced it: packages, the code's commit (this checkout is a git repository)
    prov = manifest["provenance"]
    assert prov["packages"]["torch"] == torch.__version__
    assert set(prov["packages"]) >= {"transformers", "accelerate", "deepspeed", "vllm"}
    assert len(prov["code"]["commit"]) == 40 and isinstance(prov["code"]["dirty"], bool)
    assert prov["device"]["type"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert json.loads((run_dir / "manifest.json").read_text()) == manifest

    rows = read_log(run_dir / "log.csv")
    assert list(rows[0]) == checkpoints.LOG_COLUMNS
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["epoch"]) for r in rows] == pytest.approx(
        [1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2], abs=1e-4
    )
    assert all(
        r["rejected_logps"] == r["reward_margin"] == r["reward_accuracy"] == "" for r in rows
    )
    assert float(rows[0]["lr"]) == 0.0 and float(rows[1]["lr"]) == pytest.approx(3e-3)
    assert float(rows[0]["update_norm"]) == 0.0  # lr 0 at the first step (HF warmup)
    for r in rows[1:]:
        assert float(r["update_norm"]) > 0
        assert float(r["lr_x_grad_norm"]) == pytest.approx(float(r["lr"]) * float(r["grad_norm"]))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert sum(int(r["tokens"]) for r in rows[:3]) == sum(
        len(it.seqs[0].ids)
        for it in train_data.sft_items(
            __import__("transformers").AutoTokenizer.from_pretrained(tiny["base"]), tiny["sft"], 160
        )
    )
    assert any((run_dir / "tb").glob("events.out.tfevents.*"))

    # HF folders loadable by from_pretrained
    from transformers import AutoModelForCausalLM, GenerationConfig

    for ckpt in manifest["checkpoints"]:
        path = Path(ckpt["path"])
        assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
        assert not (path / "resume").exists()  # a finished run keeps no resume state
    final = Path(manifest["final_checkpoint"])
    AutoModelForCausalLM.from_pretrained(final)
    generation = GenerationConfig.from_pretrained(final)
    im_end = (
        __import__("transformers")
        .AutoTokenizer.from_pretrained(final)
        .convert_tokens_to_ids(IM_END)
    )
    assert im_end in generation.eos_token_id
    assert (final / "generation_config.json").read_text() == (
        tiny["base"] / "generation_config.json"
    ).read_text()


def test_sft_first_step_matches_hf_loss(sft_run, tiny):
    """Step 1's loss and pre-clip grad norm equal HF's own token-mean NLL on that global batch
    (two accumulated micro-batches of 4, completion tokens only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny["base"])
    items = train_data.sft_items(tokenizer, tiny["sft"], 160)
    indices = train_data.step_plan(len(items), 8, 2, shuffle_seed=42)[0]
    seqs = [items[i].seqs[0] for i in indices]
    width = max(len(s.ids) for s in seqs)
    input_ids = torch.zeros(len(seqs), width, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100)
    attention = torch.zeros(len(seqs), width, dtype=torch.long)
    for k, s in enumerate(seqs):
        input_ids[k, : len(s.ids)] = torch.tensor(s.ids)
        labels[k, s.n_prompt : len(s.ids)] = torch.tensor(s.ids[s.n_prompt :])
        attention[k, : len(s.ids)] = 1
    model = AutoModelForCausalLM.from_pretrained(tiny["base"])
    loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    loss.backward()
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    row = read_log(sft_run["dir"] / "log.csv")[0]
    assert float(row["loss"]) == pytest.approx(loss.item(), rel=1e-5)
    assert float(row["grad_norm"]) == pytest.approx(grad_norm.item(), rel=1e-4)
    assert int(row["tokens"]) == sum(len(s.ids) for s in seqs)


# ------------------------------------------------------------------ stage 2


@pytest.fixture(scope="module")
def ref_logps(tiny, sft_run) -> Path:
    out = tiny["root"] / "ref_logps" / "sft_2ep.parquet"
    compute_ref_logps(
        {"init": "sft_2ep", "micro_batch": 3, "max_prompt_length": 128, "max_length": 192},
        tiny["pairs"],
        sft_run["manifest_path"],
        out,
    )
    return out


def test_ref_logps_file(ref_logps, tiny, sft_run):
    frame = pd.read_parquet(ref_logps)
    assert list(frame.columns) == ["pair_index", "ref_chosen_logps", "ref_rejected_logps"]
    assert frame["pair_index"].tolist() == list(range(20))
    # independent check of one pair with the model's full-logits forward
    from transformers import AutoModelForCausalLM, AutoTokenizer

    init = sft_run["manifest"]["final_checkpoint"]
    tokenizer = AutoTokenizer.from_pretrained(init)
    model = AutoModelForCausalLM.from_pretrained(init)
    item = train_data.pair_items(tokenizer, tiny["pairs"], 128, 192)[7]
    for seq, col in zip(item.seqs, ["ref_chosen_logps", "ref_rejected_logps"], strict=True):
        ids = torch.tensor([seq.ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        logp = torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        assert frame[col][7] == pytest.approx(logp[seq.n_prompt - 1 :].sum().item(), abs=1e-4)


def test_dpo_starts_at_log2_with_zero_margin(tiny, sft_run, ref_logps):
    manifest = run_stage2(tiny, sft_run, stage2_params("dpo"), "dpo_test", ref=ref_logps)
    rows = read_log(Path(manifest["log"]))
    # 20 pairs, global batch 4 -> 5 steps; checkpoints at 2, 4 and the final 5
    assert [c["step"] for c in manifest["checkpoints"]] == [2, 4, 5]
    assert [c["epoch"] for c in manifest["checkpoints"]] == [0.4, 0.8, 1.0]
    # step 1: the policy IS the reference -> loss log 2, zero implicit rewards
    assert float(rows[0]["loss"]) == pytest.approx(math.log(2), abs=1e-5)
    assert float(rows[0]["reward_margin"]) == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["reward_accuracy"] != "" and rows[-1]["reward_margin"] != ""
    assert float(rows[-1]["reward_margin"]) > 0  # DPO separates the pairs


def test_simpo_and_redi_first_step(tiny, sft_run, ref_logps):
    """Step 1's logged loss, LogPS and SimPO margin from the reference sums (= the init model)."""
    frame = pd.read_parquet(ref_logps)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sft_run["manifest"]["final_checkpoint"])
    items = train_data.pair_items(tokenizer, tiny["pairs"], 128, 192)[:4]  # step 1: file order
    c = torch.tensor(frame["ref_chosen_logps"][:4].tolist(), dtype=torch.float64)
    r = torch.tensor(frame["ref_rejected_logps"][:4].tolist(), dtype=torch.float64)
    lc = torch.tensor([it.seqs[0].n_completion for it in items], dtype=torch.float64)
    lr = torch.tensor([it.seqs[1].n_completion for it in items], dtype=torch.float64)

    simpo = read_log(Path(run_stage2(tiny, sft_run, stage2_params("simpo"), "simpo_test")["log"]))
    assert float(simpo[0]["loss"]) == pytest.approx(
        losses.simpo_loss(c, r, lc, lr, 2.0, 1.0).mean().item(), rel=1e-5
    )
    assert float(simpo[0]["chosen_logps"]) == pytest.approx((c / lc).mean().item(), rel=1e-5)
    assert float(simpo[0]["rejected_logps"]) == pytest.approx((r / lr).mean().item(), rel=1e-5)
    assert float(simpo[0]["reward_margin"]) == pytest.approx(
        (2.0 * (c / lc - r / lr)).mean().item(), rel=1e-5
    )

    redi = read_log(Path(run_stage2(tiny, sft_run, stage2_params("redi"), "redi_first")["log"]))
    assert float(redi[0]["loss"]) == pytest.approx(
        losses.redi_loss(c, r, lc, lr, 0.8).mean().item(), rel=1e-5
    )
    assert redi[0]["reward_margin"] == "" and redi[0]["reward_accuracy"] == ""


def test_resume_gives_identical_weights(tiny, sft_run):
    params = stage2_params("redi", run="redi_resume")
    full = run_stage2(tiny, sft_run, params, "redi_full")

    run_dir = tiny["root"] / "redi_resumed"
    # killed after the step-2 checkpoint and one more (lost) step
    with pytest.raises(Interrupt):
        run_stage2(tiny, sft_run, params, "redi_resumed", hooks=kill_after(3))
    assert not (run_dir / "manifest.json").exists()
    assert (run_dir / "checkpoints" / "step-000002" / "resume").is_dir()
    # resumed at step 3, killed again right after the step-4 checkpoint
    with pytest.raises(Interrupt):
        run_stage2(tiny, sft_run, params, "redi_resumed", hooks=kill_after(4))
    assert not (run_dir / "checkpoints" / "step-000002" / "resume").exists()  # the latest only
    assert (run_dir / "checkpoints" / "step-000004" / "resume").is_dir()
    resumed = run_stage2(tiny, sft_run, params, "redi_resumed")

    for a, b in zip(full["checkpoints"], resumed["checkpoints"], strict=True):
        assert a["step"] == b["step"]
        wa, wb = weights(a["path"]), weights(b["path"])
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), key
    rows_full, rows_resumed = read_log(Path(full["log"])), read_log(Path(resumed["log"]))
    assert [r["step"] for r in rows_resumed] == ["1", "2", "3", "4", "5"]
    for a, b in zip(rows_full, rows_resumed, strict=True):
        for col in ("loss", "lr", "grad_norm", "update_norm", "chosen_logps", "rejected_logps"):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-6), col
    assert not any(Path(c["path"], "resume").exists() for c in resumed["checkpoints"])


def test_changed_params_start_afresh(tiny, sft_run):
    params = stage2_params("redi", run="redi_fresh")
    with pytest.raises(Interrupt):
        run_stage2(tiny, sft_run, params, "redi_fresh", hooks=kill_after(2))
    assert (tiny["root"] / "redi_fresh" / "checkpoints" / "step-000002" / "resume").is_dir()
    steps = []
    manifest = run_stage2(
        tiny, sft_run, {**params, "lr": 5e-4}, "redi_fresh", hooks=training.Hooks(steps.append)
    )
    assert steps == [1, 2, 3, 4, 5]  # not resumed: the LR changed
    assert manifest["params"]["lr"] == 5e-4


@pytest.mark.parametrize("fused", [False, True])
def test_nan_loss_stops_with_last_good_checkpoint(tiny, sft_run, monkeypatch, fused):
    """NaN from step 4 on, through the plain loss or the fused path's weights."""
    calls = {"n": 0}
    real = losses.OBJECTIVES["redi"]
    start = 7 if fused else 6  # the fused path's weights are checked once before step 1

    def poison(fn):
        def wrapped(*args):
            calls["n"] += 1
            out = fn(*args)
            return out * float("nan") if calls["n"] > start else out  # micro-batch 7 = step 4

        return wrapped

    entry = (dataclasses.replace(real, sequence_weights=poison(real.sequence_weights)) if fused
             else dataclasses.replace(real, loss=poison(real.loss), sequence_weights=None))
    monkeypatch.setitem(losses.OBJECTIVES, "redi", entry)
    run = f"redi_nan_{int(fused)}"
    with pytest.raises(
        training.NonFiniteLossError, match=r"non-finite loss at step 4.*step-000002"
    ):
        run_stage2(tiny, sft_run, stage2_params("redi", run=run), run)
    run_dir = tiny["root"] / run
    assert not (run_dir / "manifest.json").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000002"]
    w = weights(run_dir / "checkpoints" / "step-000002")
    assert all(torch.isfinite(t).all() for t in w.values())
