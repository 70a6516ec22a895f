"""Generation backends: the incremental HF decoder against transformers'
``generate``, nucleus sampling, stop tokens, and the vLLM backend with a fake
``vllm`` module (in process and one spawned engine per GPU)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from redi.data.prompts import render_eval_prompt
from redi.eval.backends import make_backend
from redi.eval.generation import (
    STOP_TOKENS,
    HFBackend,
    Sampling,
    _decode_generate,
    _decode_incremental,
    fast_path_supported,
    sample_next,
    stop_token_ids,
)
from redi.eval.vllm_engine import VLLMBackend, _join_or_stop, _max_tokens, engine_placements
from redi.model.models import load_causal_lm, load_tokenizer
from tests.conftest import PROBLEMS


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    torch.set_num_threads(1)
    tok = load_tokenizer(str(tiny_model_dir))
    lm = load_causal_lm(str(tiny_model_dir), "auto").eval()
    prompts = [render_eval_prompt(tok, p, force) for p in PROBLEMS for force in (True, False)]
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return tok, lm, encoded


def test_stop_tokens_and_fast_path(loaded) -> None:
    tok, lm, _ = loaded
    stops = stop_token_ids(tok, lm.generation_config, STOP_TOKENS)
    vocab = tok.get_vocab()
    assert set(stops) == {vocab["<|im_end|>"], vocab["<|endoftext|>"]}
    assert stops == [vocab["<|im_end|>"], vocab["<|endoftext|>"]]  # the authors' order
    assert fast_path_supported(lm)


def test_a_llama_tokenizer_stops_on_eot() -> None:
    """Neither authors' stop token is in a Llama-3 vocabulary: the chat template's end
    of turn (<|eot_id|>) is, also where the model config's eos is only <|end_of_text|>
    (a Llama base model's config.json, which the vLLM backend reads)."""
    from types import SimpleNamespace

    from redi.eval.generation import template_stop_tokens
    from redi.model.base_model import train_tokenizer

    tok = train_tokenizer(PROBLEMS * 5, vocab_size=300, family="llama")
    eot, end = tok.convert_tokens_to_ids("<|eot_id|>"), tok.convert_tokens_to_ids("<|end_of_text|>")
    assert template_stop_tokens(tok) == ["<|eot_id|>"]
    assert stop_token_ids(tok, SimpleNamespace(eos_token_id=end), STOP_TOKENS) == [eot, end]
    assert stop_token_ids(tok, SimpleNamespace(eos_token_id=[eot, end]), STOP_TOKENS) == [
        eot, end]
    tok.chat_template = None  # no template: the eos alone
    assert template_stop_tokens(tok) == []
    assert stop_token_ids(tok, SimpleNamespace(eos_token_id=end), STOP_TOKENS) == [end]


def test_incremental_decoder_equals_generate(loaded) -> None:
    """Greedy: prefix sharing, left padding, per-prompt sample copies and batch
    shrinking give exactly transformers' tokens, including where rows stop."""
    tok, lm, encoded = loaded
    greedy = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=24)
    seeds = list(range(len(encoded) * 2))
    never = [tok.get_vocab()["<|im_start|>"]]
    with torch.inference_mode():
        free, _, _ = _decode_incremental(lm, encoded, 2, greedy, never, seeds)
    # a "stop" token that greedy decoding emits in some rows (at various steps) only
    stop = next(t for t in free[0][2:] if 0 < sum(t in row for row in free) < len(free))
    with torch.inference_mode():
        a = _decode_incremental(lm, encoded, 2, greedy, [stop], seeds)
        b = _decode_generate(lm, encoded, 2, greedy, [stop], never[0], 0)
    for r in range(len(encoded) * 2):
        assert a[1][r] == b[1][r] and a[2][r] == b[2][r], r
        assert a[0][r][: a[1][r]] == b[0][r][: b[1][r]], r
        row = free[r]
        expect = row.index(stop) + 1 if stop in row else 24
        assert a[1][r] == expect and a[2][r] == (stop in row)
    assert any(a[2]) and not all(a[2])  # some rows stopped, some ran to the limit


def test_sample_next_is_nucleus_sampling() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(20000, 1)
    draws = sample_next(logits, 1.0, 0.9, torch.rand(20000, generator=gen))
    # mass before token 3 is 0.95 >= 0.9: dropped
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    assert counts[3] == 0
    assert torch.allclose(counts[:3], probs[:3] / 0.95, atol=0.015)
    # a nucleus wider than the 8 candidates takes the full-sort path
    wide = torch.linspace(1.0, 0.9, 20)
    wide_logits = (wide / wide.sum()).log().repeat(20000, 1)
    draws = sample_next(wide_logits, 1.0, 0.95, torch.rand(20000, generator=gen))
    kept = set(draws.tolist())
    assert kept == set(range(19))  # the last token only enters past 95 % of the mass
    assert (sample_next(wide_logits[:3], 0.0, 0.95, torch.rand(3)) == 0).all()  # T=0: greedy


def test_hf_backend_samples(tiny_model_dir) -> None:
    prompts = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in PROBLEMS]
    backend = make_backend("hf", Sampling(temperature=0.6, top_p=0.95, max_new_tokens=12, seed=3),
                           batch_size=5, threads=1)
    out = backend.generate(str(tiny_model_dir), prompts, 3)
    again = backend.generate(str(tiny_model_dir), prompts, 3)
    assert [[c.text for c in cs] for cs in out] == [[c.text for c in cs] for cs in again]  # seeded
    assert len(out) == len(prompts) and all(len(cs) == 3 for cs in out)
    for cs in out:
        for c in cs:
            assert 1 <= c.n_tokens <= 12
            assert c.finished or c.n_tokens == 12
            assert "<|im_end|>" not in c.text and "<|endoftext|>" not in c.text
    # the reference path gives the same shapes
    slow = HFBackend(sampling=backend.sampling, batch_size=5, threads=1, fast=False)
    ref = slow.generate(str(tiny_model_dir), prompts, 3)
    assert [len(cs) for cs in ref] == [3] * len(prompts)


# ------------------------------------------------------------------- vLLM

STAND_INS = Path(__file__).with_name("stand_ins")  # a vllm module with vLLM 0.33's checks


@pytest.fixture
def stand_in_vllm(tmp_path, monkeypatch) -> Path:
    """The stand-in vllm importable here and in spawned engines; returns its log file."""
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(STAND_INS), os.environ.get(
        "PYTHONPATH", "")]))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    log = tmp_path / "engines.jsonl"
    monkeypatch.setenv("VLLM_STAND_IN_LOG", str(log))
    return log


def engine_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_vllm_backend_in_process(tiny_model_dir, stand_in_vllm) -> None:
    prompts = ["a", "a b c d e", "a b"]
    sampling = Sampling(temperature=0.6, top_p=0.95, max_new_tokens=77, seed=5)
    # 32768 requested, the model allows 1024: capped (vLLM would refuse it)
    backend = VLLMBackend(sampling=sampling, gpus=1, max_model_len=32768)
    assert backend.context(str(tiny_model_dir)) == {
        "model_max_position_embeddings": 1024, "max_model_len_requested": 32768,
        "max_model_len": 1024}
    out = backend.generate(str(tiny_model_dir), prompts, 4, priority=[1.0, 1.0, 9.0],
                           seeds=[100, 200, 300])
    (engine,) = engine_log(stand_in_vllm)
    assert engine["seed"] == 5 and engine["max_model_len"] == 1024
    assert engine["model"] == str(tiny_model_dir) and engine["n_requests"] == 3
    assert [len(cs) for cs in out] == [4, 4, 4]
    # each request carries its own seed: asking for one prompt alone gives the same samples
    alone = backend.generate(str(tiny_model_dir), prompts[1:2], 4, seeds=[200])
    assert texts(alone) == texts(out)[1:2]
    assert len(set(texts(out)[1])) > 1  # samples of a prompt differ (seed + j)
    other = backend.generate(str(tiny_model_dir), prompts[1:2], 4, seeds=[201])
    assert texts(other)[0][:3] == texts(out)[1][1:]  # seed s + j: vLLM's rule


def test_greedy_with_several_samples(tiny_model_dir, stand_in_vllm) -> None:
    """vLLM refuses n > 1 without sampling: greedy decodes once, repeated n times."""
    greedy = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=8, seed=1)
    for backend in (VLLMBackend(sampling=greedy, gpus=1),
                    HFBackend(sampling=greedy, batch_size=8, threads=1)):
        out = backend.generate(str(tiny_model_dir), ["a b", "c"], 3)
        assert [len(set(t)) for t in texts(out)] == [1, 1]
        assert [len(cs) for cs in out] == [3, 3]


def test_vllm_backend_one_engine_per_gpu(tiny_model_dir, stand_in_vllm, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")  # e.g. what SLURM gave the job
    prompts = ["a " * k for k in range(1, 6)]
    seeds = [11, 22, 33, 44, 55]
    one = VLLMBackend(sampling=Sampling(seed=10), gpus=1).generate(
        str(tiny_model_dir), prompts, 2, seeds=seeds)
    stand_in_vllm.unlink()
    two = VLLMBackend(sampling=Sampling(seed=10), gpus=2).generate(
        str(tiny_model_dir), prompts, 2, seeds=seeds)
    assert texts(two) == texts(one)  # samples do not depend on the number of engines
    engines = engine_log(stand_in_vllm)
    # round-robin over the longest-first order: 3 prompts on GPU 6, 2 on GPU 7
    assert sorted((e["gpu"], e["n_requests"]) for e in engines) == [("6", 3), ("7", 2)]
    assert {e["seed"] for e in engines} == {10}
    with pytest.raises(RuntimeError, match="visible"):
        VLLMBackend(sampling=Sampling(), gpus=3).generate(str(tiny_model_dir), prompts, 1)


def test_a_failing_engine_stops_the_others() -> None:
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")
    sleeper, failing = ctx.Process(target=time.sleep, args=(60,)), ctx.Process(
        target=sys.exit, args=(3,))
    sleeper.start()
    failing.start()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"\{1: 3\}; 1 other"):
        _join_or_stop([sleeper, failing])
    assert time.monotonic() - started < 30 and not sleeper.is_alive()


def test_hf_samples_do_not_depend_on_the_batch(tiny_model_dir) -> None:
    """Per-request seeds: a prompt's samples are the same alone, in another order or
    batch size (the incremental decoder draws each sample from its own stream)."""
    prompts = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in PROBLEMS]
    sampling = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=0)
    seeds = [7, 70, 700, 7000]
    full = HFBackend(sampling=sampling, batch_size=12, threads=1).generate(
        str(tiny_model_dir), prompts, 3, seeds=seeds)
    small = HFBackend(sampling=sampling, batch_size=3, threads=1).generate(
        str(tiny_model_dir), prompts[::-1], 3, seeds=seeds[::-1])
    assert texts(small)[::-1] == texts(full)
    alone = HFBackend(sampling=sampling, batch_size=12, threads=1).generate(
        str(tiny_model_dir), prompts[2:3], 3, seeds=seeds[2:3])
    assert texts(alone) == texts(full)[2:3]
    assert len({c for cs in texts(full) for c in cs}) > len(prompts)  # they do vary


def test_unknown_backend() -> None:
    with pytest.raises(ValueError):
        make_backend("tgi", Sampling())


def test_responses_fit_the_capped_context(tiny_model_dir, stand_in_vllm) -> None:
    """max_new_tokens beyond the model's 1,024 positions: each request gets what its
    prompt leaves (the stand-in engine, like a real one, refuses more)."""
    assert _max_tokens(100, 32768, 4096) == 3996 and _max_tokens(100, 50, 4096) == 50
    assert _max_tokens(100, 50, None) == 50
    with pytest.raises(ValueError, match="no room"):
        _max_tokens(4096, 10, 4096)
    backend = VLLMBackend(sampling=Sampling(max_new_tokens=2000), gpus=1, max_model_len=None)
    out = backend.generate(str(tiny_model_dir), ["a b c"], 2)
    assert [len(cs) for cs in out] == [2]
    assert engine_log(stand_in_vllm)[0]["max_model_len"] == 1024


def test_every_engine_is_shut_down(tiny_model_dir, stand_in_vllm, monkeypatch) -> None:
    """vLLM's engine-core process ends only on an explicit shutdown: each engine (in
    process and spawned) calls it, or the spawned shard would never exit."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    for gpus in (1, 2):
        VLLMBackend(sampling=Sampling(seed=1), gpus=gpus).generate(
            str(tiny_model_dir), ["a", "b c", "d e f"], 2)
    events = stand_in_vllm.with_suffix(".events").read_text().splitlines()
    assert [e.split()[0] for e in events] == ["shutdown"] * 3
    assert len({e.split()[2] for e in events[1:]}) == 2  # two engine processes


def test_eight_gpu_engines_get_one_device_each(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert engine_placements(8, 8, 8) == [{"CUDA_VISIBLE_DEVICES": str(r)} for r in range(8)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert [p["CUDA_VISIBLE_DEVICES"] for p in engine_placements(4, 4, 8)] == ["4", "5", "6", "7"]


def test_cpu_engines_split_the_job_cores(monkeypatch) -> None:
    """CPU engines bind to their own slice of the job's cores when the process may run
    on exactly those (vLLM's default binds every engine to the first core); with more
    cores visible than the job's, they stay unbound with their share of threads."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert engine_placements(0, 2, 2) == [{"VLLM_CPU_OMP_THREADS_BIND": "0"},
                                          {"VLLM_CPU_OMP_THREADS_BIND": "1"}]
    assert engine_placements(0, 1, 2) == [{"VLLM_CPU_OMP_THREADS_BIND": "0,1"}]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7})
    assert engine_placements(0, 2, 4) == [{"VLLM_CPU_OMP_THREADS_BIND": "4,5"},
                                          {"VLLM_CPU_OMP_THREADS_BIND": "6,7"}]
    shared = engine_placements(0, 2, 2)  # a 2-thread job on a 4-core machine
    assert shared == [{"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}] * 2


def texts(out) -> list[list[str]]:
    return [[c.text for c in cs] for cs in out]
