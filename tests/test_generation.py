"""Generation backends: the incremental HF decoder against transformers'
``generate``, nucleus sampling, stop tokens, and the vLLM backend with a fake
``vllm`` module (in process and one spawned engine per GPU)."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from redi.generation import (
    STOP_TOKENS,
    HFBackend,
    Sampling,
    VLLMBackend,
    _decode_generate,
    _decode_incremental,
    _load_causal_lm,
    fast_path_supported,
    load_tokenizer,
    make_backend,
    sample_next,
    stop_token_ids,
)
from redi.prompts import EVAL_USER_TEMPLATE, SYSTEM_PROMPT, render_eval_prompt

PROBLEMS = ["Evaluate 3+4.", "Evaluate from left to right: 12-5+7-1", "Compute 2*9", "x"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init Qwen2 (2 layers, GQA) with the project's tokenizer and chat template."""
    from redi.base_model import save, tiny_model, train_tokenizer

    texts = [SYSTEM_PROMPT, EVAL_USER_TEMPLATE, "<think>\n1+2\n=3\n</think>\n$\\boxed{3}$",
             *PROBLEMS] * 10
    tokenizer = train_tokenizer(texts, vocab_size=320)
    params = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 1024, "rope_theta": 10000.0, "seed": 0}
    model = tiny_model(tokenizer, params)
    with torch.no_grad():  # large random weights: context-dependent, varied outputs
        gen = torch.Generator().manual_seed(0)
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.copy_(torch.randn(weight.shape, generator=gen) * 0.3)
    out = tmp_path_factory.mktemp("tiny_model") / "model"
    save(model, tokenizer, out)
    return out


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    torch.set_num_threads(1)
    tok = load_tokenizer(str(tiny_model_dir))
    lm = _load_causal_lm(str(tiny_model_dir), "cpu", "auto")
    prompts = [render_eval_prompt(tok, p, force) for p in PROBLEMS for force in (True, False)]
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return tok, lm, encoded


def test_stop_tokens_and_fast_path(loaded) -> None:
    tok, lm, _ = loaded
    stops = stop_token_ids(tok, lm.generation_config, STOP_TOKENS)
    vocab = tok.get_vocab()
    assert set(stops) == {vocab["<|im_end|>"], vocab["<|endoftext|>"]}
    assert fast_path_supported(lm)


def test_incremental_decoder_equals_generate(loaded) -> None:
    """Greedy: prefix sharing, left padding, per-prompt sample copies and batch
    shrinking give exactly transformers' tokens, including where rows stop."""
    tok, lm, encoded = loaded
    greedy = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=24)
    gen = torch.Generator().manual_seed(0)
    never = [tok.get_vocab()["<|im_start|>"]]
    with torch.inference_mode():
        free, _, _ = _decode_incremental(lm, encoded, 2, greedy, never, gen)
    # a "stop" token that greedy decoding emits in some rows (at various steps) only
    stop = next(t for t in free[0][2:] if 0 < sum(t in row for row in free) < len(free))
    with torch.inference_mode():
        a = _decode_incremental(lm, encoded, 2, greedy, [stop], gen)
        b = _decode_generate(lm, encoded, 2, greedy, [stop], never[0], gen)
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
    draws = sample_next(logits, 1.0, 0.9, gen)  # mass before token 3 is 0.95 >= 0.9: dropped
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    assert counts[3] == 0
    assert torch.allclose(counts[:3], probs[:3] / 0.95, atol=0.015)
    # a nucleus wider than the 8 candidates takes the full-sort path
    wide = torch.linspace(1.0, 0.9, 20)
    wide_logits = (wide / wide.sum()).log().repeat(20000, 1)
    draws = sample_next(wide_logits, 1.0, 0.95, gen)
    kept = set(draws.tolist())
    assert kept == set(range(19))  # the last token only enters past 95 % of the mass
    assert (sample_next(wide_logits[:3], 0.0, 0.95, gen) == 0).all()  # T=0: greedy


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


class _FakeCompletion:
    def __init__(self, text: str, token_ids: list[int], finish_reason: str) -> None:
        self.text, self.token_ids, self.finish_reason = text, token_ids, finish_reason


def _fake_vllm(calls: list) -> types.ModuleType:
    module = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kwargs) -> None:
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs) -> None:
            calls.append(("LLM", kwargs))

        def generate(self, prompts, params, use_tqdm=True):
            calls.append(("generate", prompts, params.kwargs))
            outs = []
            for p in prompts:
                ids = p["prompt_token_ids"]
                outs.append(types.SimpleNamespace(outputs=[
                    _FakeCompletion(f"len{len(ids)}-s{j}", [1] * (j + 1),
                                    "stop" if j % 2 == 0 else "length")
                    for j in range(params.kwargs["n"])]))
            return outs

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module


def test_vllm_backend_in_process(tiny_model_dir, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(calls))
    tok = load_tokenizer(str(tiny_model_dir))
    prompts = ["a", "a b c d e", "a b"]
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    sampling = Sampling(temperature=0.6, top_p=0.95, max_new_tokens=77, seed=5)
    backend = VLLMBackend(sampling=sampling, gpus=1, max_model_len=4096)
    out = backend.generate(str(tiny_model_dir), prompts, 4, priority=[1.0, 1.0, 9.0])
    (_, llm_args), (_, submitted, params) = calls
    assert llm_args["seed"] == 5 and llm_args["max_model_len"] == 4096
    assert llm_args["model"] == str(tiny_model_dir)
    vocab = tok.get_vocab()
    assert params == {"n": 4, "temperature": 0.6, "top_p": 0.95, "max_tokens": 77,
                      "stop_token_ids": [vocab["<|im_end|>"], vocab["<|endoftext|>"]],
                      "skip_special_tokens": True}
    # one call with every prompt, longest-expected first (then the longer prompt)
    assert [len(p["prompt_token_ids"]) for p in submitted] == [lengths[2], lengths[1], lengths[0]]
    # results in input order, n per prompt
    assert [[c.text for c in cs] for cs in out] == [
        [f"len{n}-s{j}" for j in range(4)] for n in lengths]
    assert [c.n_tokens for c in out[0]] == [1, 2, 3, 4]
    assert [c.finished for c in out[0]] == [True, False, True, False]


FAKE_VLLM_FILE = textwrap.dedent("""
    import os
    from types import SimpleNamespace

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            self.seed = kwargs["seed"]

        def generate(self, prompts, params, use_tqdm=True):
            gpu = os.environ["CUDA_VISIBLE_DEVICES"]
            return [SimpleNamespace(outputs=[
                SimpleNamespace(text=f"gpu{gpu}-seed{self.seed}-len{len(p['prompt_token_ids'])}",
                                token_ids=[0, 1], finish_reason="stop")
                for _ in range(params.kwargs["n"])]) for p in prompts]
""")


def test_vllm_backend_one_engine_per_gpu(tiny_model_dir, tmp_path, monkeypatch) -> None:
    (tmp_path / "vllm.py").write_text(FAKE_VLLM_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned engines import the fake too
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")  # e.g. what SLURM gave the job
    tok = load_tokenizer(str(tiny_model_dir))
    prompts = ["a " * k for k in range(1, 6)]
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    backend = VLLMBackend(sampling=Sampling(seed=10), gpus=2)
    out = backend.generate(str(tiny_model_dir), prompts, 2)
    # round-robin over the longest-first order: ranks 0,1,0,1,0 for prompts 4,3,2,1,0
    expect_rank = {4: 0, 3: 1, 2: 0, 1: 1, 0: 0}
    for i, cs in enumerate(out):
        rank = expect_rank[i]
        assert [c.text for c in cs] == [f"gpu{6 + rank}-seed{10 + rank}-len{lengths[i]}"] * 2
        assert all(c.n_tokens == 2 and c.finished for c in cs)
    with pytest.raises(RuntimeError, match="visible"):
        VLLMBackend(sampling=Sampling(), gpus=3).generate(str(tiny_model_dir), prompts, 1)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError):
        make_backend("tgi", Sampling())
