"""Prepared single-GPU check: training throughput/MFU and hf-backend generation speed.

Builds a Qwen2.5-Math-1.5B-shaped ``Qwen2ForCausalLM`` with random weights and
runs, through the project's own code paths:

1. a few SFT steps (completion-only NLL via ``redi.logprobs.TokenLogps``);
2. a few REDI steps (alpha 0.8, chosen and rejected in one forward, the loss
   from ``redi.losses``), both with AdamW on 16,384-token micro-batches laid
   out by ``redi.batching.make_batch`` (packed for FlashAttention-2, padded
   rows for SDPA: the same rule as ``redi.training.Trainer``);
3. generation with the ``hf`` backend of ``redi.generation``.

It needs only torch + transformers (+ tokenizers, safetensors, tqdm, which
transformers itself depends on): no datasets, snakemake, math-verify, vllm,
deepspeed or accelerate. The redi package need not be installed; the working
tree is put on ``sys.path``.

    bash scripts/gpu_check.sh                 # one H100, a few minutes
    python scripts/gpu_check.py --tiny        # seconds: CPU fp32 (tests/), or GPU smoke test

MFU = model FLOPs / time / peak, with model FLOPs (per micro-batch)

    6 * N * tokens  +  sum over sequences of 6 * n_layers * seq_len^2 * hidden

where N is the NON-embedding parameter count (decoder layers + final norm; the
tied embedding / LM head matrix excluded) and the attention term is
``6 (fwd+bwd) * 2 (QK^T and AV) * n_layers * seq_len^2 * hidden / 2 (causal)``.
A separate "hardware FLOPs" figure (HFU) adds what really runs on top: the
gradient-checkpointing re-forward (2N per token + the forward attention) and the
LM head over the completion tokens only (6 V H per target, + 2 V H for the
chunked log-prob recompute when it is checkpointed).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the GPU machine may lack an installed redi package, but has the working tree
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# only torch/transformers/stdlib below these (checked: batching -> prompts,
# logprobs -> batching, losses -> lazy torch, training -> io; accelerate,
# pyarrow, tqdm are imported lazily inside functions this script does not call,
# except tqdm in the hf backend, which transformers depends on anyway)
from redi import batching, generation, logprobs, losses, training  # noqa: E402
from redi.base_model import save, set_stop_tokens, train_tokenizer  # noqa: E402
from redi.batching import TokenSeq  # noqa: E402
from redi.prompts import (  # noqa: E402
    ENDOFTEXT,
    EVAL_USER_TEMPLATE,
    QWEN_MATH_CHAT_TEMPLATE,
    SYSTEM_PROMPT,
    render_eval_prompt,
)

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM
SUMMARY_HEADER = "===== gpu_check summary ====="
REDI_ALPHA = 0.8
PROBLEMS = [
    "Compute 17 * 23.",
    "Find all real x with x^2 - 5x + 6 = 0.",
    "What is the sum of the first 100 positive integers?",
    "Evaluate from left to right: 12-5+7-1",
    "How many primes are less than 50?",
    "Simplify (3/4) / (9/16).",
    "A triangle has sides 3, 4 and 5. What is its area?",
    "What is the remainder when 2^10 is divided by 7?",
]


@dataclass(frozen=True)
class Shape:
    """Qwen2 architecture numbers (those that matter for FLOPs and memory)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_positions: int
    rope_theta: float


# Qwen2.5-Math-1.5B; max_position_embeddings raised to 32768 as in the paper
PAPER_SHAPE = Shape(1536, 8960, 28, 12, 2, 151936, 32768, 10000.0)
TINY_SHAPE = Shape(64, 128, 2, 4, 2, 512, 32768, 10000.0)


@dataclass(frozen=True)
class Plan:
    """Workload sizes (the --tiny plan runs in seconds on a CPU)."""

    pack_tokens: int  # tokens per micro-batch (= per optimizer step)
    seq_min: int  # sequence lengths drawn in [seq_min, seq_max]
    seq_max: int
    prompt_min: int
    prompt_max: int
    warmup: int  # untimed steps per phase (kernel selection, allocator)
    steps: int  # timed steps per phase
    gen_prompts: int
    gen_samples: int
    gen_tokens: int


FULL_PLAN = Plan(16384, 1024, 6144, 64, 512, 2, 5, 8, 4, 512)
TINY_PLAN = Plan(2048, 128, 768, 8, 64, 1, 2, 4, 2, 8)


# ------------------------------------------------------------------- FLOPs


def non_embedding_params(shape: Shape) -> int:
    """Qwen2 parameters without the (tied) embedding: q/k/v with bias, o without,
    SwiGLU MLP, two RMSNorms per layer, the final norm."""
    h, kv = shape.hidden, shape.kv_heads * (shape.hidden // shape.heads)
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * shape.intermediate + 2 * h
    return shape.layers * per_layer + h


def attention_flops(seq_lens: Sequence[int], layers: int, hidden: int) -> float:
    """Causal self-attention, forward + backward: 6 * 2 * L * s^2 * H / 2 per sequence.

    2 matmuls (QK^T, AV) of 2*s^2*H FLOPs each per layer forward, x3 for
    forward + backward, halved because causal attention skips the upper triangle.
    """
    return float(sum(6 * 2 * layers * s * s * hidden / 2 for s in seq_lens))


def model_flops(n_params: int, seq_lens: Sequence[int], layers: int, hidden: int) -> float:
    """Model FLOPs of one training step (the MFU numerator): 6 N T + attention."""
    return 6.0 * n_params * sum(seq_lens) + attention_flops(seq_lens, layers, hidden)


def hardware_flops(
    n_params: int,
    seq_lens: Sequence[int],
    shape: Shape,
    n_targets: int,
    checkpointing: bool,
    lm_head_recompute: bool,
) -> float:
    """What actually runs: model FLOPs + LM head over the targets (+ its chunk
    recompute) + the gradient-checkpointing re-forward of every layer."""
    flops = model_flops(n_params, seq_lens, shape.layers, shape.hidden)
    head = 2.0 * shape.vocab * shape.hidden * n_targets  # one forward of the LM head
    flops += 3 * head + (head if lm_head_recompute else 0.0)
    if checkpointing:  # one more forward: a third of the fwd+bwd figures
        flops += 2.0 * n_params * sum(seq_lens)
        flops += attention_flops(seq_lens, shape.layers, shape.hidden) / 3
    return flops


# ------------------------------------------------------------------ batches


def split_lengths(total: int, lo: int, hi: int, rng: random.Random) -> list[int]:
    """Lengths in [lo, hi] summing exactly to ``total`` (needs hi >= 2 lo, total >= lo)."""
    out, rest = [], total
    while rest > hi:
        n = rng.randint(lo, min(hi, rest - lo))  # leaves >= lo for the rest
        out.append(n)
        rest -= n
    out.append(rest)
    return out


def _ids(n: int, vocab: int, rng: random.Random) -> list[int]:
    return [rng.randrange(vocab) for _ in range(n)]


def sft_pack(plan: Plan, vocab: int, rng: random.Random) -> list[TokenSeq]:
    """Several SFT sequences of varied lengths filling ``pack_tokens`` exactly."""
    seqs = []
    for n in split_lengths(plan.pack_tokens, plan.seq_min, plan.seq_max, rng):
        n_prompt = min(rng.randint(plan.prompt_min, plan.prompt_max), n // 2)
        ids = _ids(n, vocab, rng)
        seqs.append(batching.sft_sequence(ids[:n_prompt], ids[n_prompt:], max_length=n))
    return seqs


def pair_pack(plan: Plan, vocab: int, rng: random.Random) -> list[TokenSeq]:
    """(chosen, rejected) pairs sharing a prompt, in trainer order [c0, r0, c1, r1, ...];
    the two sequences of a pair together take a length drawn like an SFT sequence."""
    seqs: list[TokenSeq] = []
    for n in split_lengths(plan.pack_tokens, 2 * plan.seq_min, 2 * plan.seq_max, rng):
        n_prompt = min(rng.randint(plan.prompt_min, plan.prompt_max), n // 4)
        rest = n - 2 * n_prompt
        n_chosen = rng.randint(rest // 4, rest - rest // 4)
        prompt = _ids(n_prompt, vocab, rng)
        chosen, rejected = _ids(n_chosen, vocab, rng), _ids(rest - n_chosen, vocab, rng)
        seqs += batching.pair_sequences(prompt, chosen, rejected, n_prompt, n)
    return seqs


# -------------------------------------------------------------------- model


def build_tokenizer(shape: Shape) -> Any:
    """The tiny preset's tokenizer recipe (byte-level BPE + Qwen specials + chat
    template), trained on the chat scaffolding; its few hundred ids all lie in
    the model's vocabulary, and decoding skips generated ids beyond it."""
    texts = [SYSTEM_PROMPT, EVAL_USER_TEMPLATE, QWEN_MATH_CHAT_TEMPLATE,
             "system\nuser\nassistant\n<think>\n", *PROBLEMS] * 20
    tokenizer = train_tokenizer(texts, vocab_size=min(shape.vocab, 400))
    if len(tokenizer) > shape.vocab:
        raise ValueError(f"tokenizer ({len(tokenizer)}) larger than the vocabulary {shape.vocab}")
    return tokenizer


def write_model_dir(shape: Shape, out: Path, device: str, dtype: torch.dtype) -> Any:
    """A random-init Qwen2 + tokenizer saved as a Hugging Face folder (what both
    ``training.load_model`` and the hf generation backend read)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = build_tokenizer(shape)
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=True,
        use_sliding_window=False,
        eos_token_id=eos,
        pad_token_id=eos,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1.5B weights on the GPU takes a blink
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    set_stop_tokens(model, tokenizer)
    save(model, tokenizer, out)
    return tokenizer


def count_params(lm: Any) -> tuple[int, int]:
    """(all unique parameters, non-embedding ones). Tied head: counted once, excluded."""
    total = sum(p.numel() for p in lm.parameters())
    embed = lm.get_input_embeddings().weight
    head = lm.get_output_embeddings().weight
    excluded = embed.numel() + (0 if head is embed else head.numel())
    return total, total - excluded


# ---------------------------------------------------------------- training


@dataclass
class Phase:
    name: str
    steps: int
    tokens: int  # real tokens of the timed steps (padding excluded)
    elapsed_s: float
    step_s_mean: float
    step_s_min: float
    peak_mem_gib: float | None
    model_flops: float
    hardware_flops: float
    last_loss: float
    layout: str
    padded_tokens: int  # tokens the padded/packed input tensors hold per step (mean)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s

    def mfu(self, peak: float) -> float:
        return self.model_flops / self.elapsed_s / peak

    def hfu(self, peak: float) -> float:
        return self.hardware_flops / self.elapsed_s / peak


def sft_loss(module: torch.nn.Module, batch: batching.Batch) -> torch.Tensor:
    """Completion-only NLL, token mean (as ``Trainer._micro_loss`` with one micro-batch)."""
    token_logps = logprobs.batch_token_logps(module, batch)
    return -token_logps.sum() / batch.targets.numel()


def redi_loss(module: torch.nn.Module, batch: batching.Batch) -> torch.Tensor:
    """REDI over the pairs of one forward (as ``Trainer._micro_loss``), pair mean."""
    sums = logprobs.sequence_sums(logprobs.batch_token_logps(module, batch), batch)
    pairs = losses.PairLogps.interleaved(sums, batch.lengths)
    return losses.objective("redi").loss(pairs, {"alpha": REDI_ALPHA}).mean()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_phase(
    name: str,
    module: logprobs.TokenLogps,
    optimizer: torch.optim.Optimizer,
    packs: list[list[TokenSeq]],
    loss_fn: Callable[[torch.nn.Module, batching.Batch], torch.Tensor],
    ctx: dict[str, Any],
) -> Phase:
    """``warmup`` untimed + ``steps`` timed optimizer steps, one micro-batch each."""
    device, warmup, shape = ctx["device"], ctx["warmup"], ctx["shape"]
    n_params, packed = ctx["n_params"], ctx["packed"]
    chunk = logprobs.chunk_tokens_for(shape.vocab)
    params = [p for p in module.parameters() if p.requires_grad]
    times: list[float] = []
    tokens, padded, mflops, hflops, loss_value = 0, 0, 0.0, 0.0, float("nan")
    for i, seqs in enumerate(packs):
        batch = batching.make_batch(seqs, packed, ctx["pad_id"]).to(device)
        if i == warmup and device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        t0 = time.perf_counter()
        with ctx["autocast"]():
            loss = loss_fn(module, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # the trainer clips too (max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i < warmup:
            continue
        times.append(time.perf_counter() - t0)
        lens = [len(s.ids) for s in seqs]
        n_targets = int(batch.targets.numel())
        tokens += batch.n_tokens
        padded += batch.input_ids.numel()
        mflops += model_flops(n_params, lens, shape.layers, shape.hidden)
        hflops += hardware_flops(n_params, lens, shape, n_targets, True, n_targets > chunk)
        loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise RuntimeError(f"{name}: non-finite loss {loss_value}")
    return Phase(
        name=name,
        steps=len(times),
        tokens=tokens,
        elapsed_s=sum(times),
        step_s_mean=sum(times) / len(times),
        step_s_min=min(times),
        peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        model_flops=mflops,
        hardware_flops=hflops,
        last_loss=loss_value,
        layout="packed" if packed else "padded",
        padded_tokens=padded // len(times),
    )


def make_optimizer(module: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW with the trainer's grouping (no decay on biases and norm weights)."""
    decay, no_decay = [], []
    for p in module.parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-6,  # the paper's stage-2 scale: keeps the random model finite
        betas=(0.9, 0.999),
        eps=1e-8,
    )


def packing_check(
    lm: Any, vocab: int, pad_id: int, device: str, autocast: Callable[[], Any]
) -> dict[str, float | str]:
    """Do packed sequences stay isolated? Decoder hidden states of a few short
    sequences, packed in one row vs one padded row each, and vs the same row
    with positions NOT restarting (what undetected packing would compute).

    Short sequences: attention then weighs much in the residual stream even
    with random weights, so a leak is far above bf16 noise.
    """
    rng = random.Random(1)
    seqs = [TokenSeq(tuple(_ids(n, vocab, rng)), 1) for n in (40, 72, 56, 88)]
    decoder = lm.get_decoder()

    def hidden(batch: batching.Batch) -> torch.Tensor:
        batch = batch.to(device)
        with torch.no_grad(), autocast():
            h = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids,
                        attention_mask=None, use_cache=False).last_hidden_state
        # the positions that predict completion tokens: every token but the last of each seq
        return h.reshape(-1, h.shape[-1]).index_select(0, batch.gather_index).float()

    packed = batching.make_batch(seqs, True, pad_id)
    padded = batching.make_batch(seqs, False, pad_id)
    leaky = batching.make_batch(seqs, True, pad_id)
    leaky.position_ids = torch.arange(leaky.input_ids.shape[1])[None]
    ref = hidden(padded)
    later = packed.seq_index > 0  # the first sequence is the same in all three
    ref_norm = ref[later].norm()
    err = float((hidden(packed) - ref)[later].norm() / ref_norm)
    leak = float((hidden(leaky) - ref)[later].norm() / ref_norm)
    verdict = "ok" if err < 0.2 * leak else ("inconclusive" if leak < 1e-3 else "FAIL")
    return {"packing_rel_err": err, "packing_leak_rel_err": leak, "packing_check": verdict}


# -------------------------------------------------------------- generation


def run_generation(
    model_dir: Path, tokenizer: Any, plan: Plan, device: str
) -> dict[str, float | str]:
    """The public hf backend end to end (load included), then the same decoder
    the backend uses (``_decode_incremental``) timed alone on a loaded model."""
    sampling = generation.Sampling(temperature=0.6, top_p=0.95,
                                   max_new_tokens=plan.gen_tokens, seed=0)
    problems = (PROBLEMS * plan.gen_prompts)[: plan.gen_prompts]
    prompts = [render_eval_prompt(tokenizer, p, force_think=True) for p in problems]
    backend = generation.make_backend("hf", sampling, batch_size=plan.gen_prompts * plan.gen_samples)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    results = backend.generate(str(model_dir), prompts, plan.gen_samples)
    _sync(device)
    e2e_s = time.perf_counter() - t0
    e2e_tokens = sum(c.n_tokens for comps in results for c in comps)

    # decode only: the backend's own loader and decoder, without the load in the timing
    t0 = time.perf_counter()
    lm = generation._load_causal_lm(str(model_dir), device, "auto")
    _sync(device)
    load_s = time.perf_counter() - t0
    stops = generation.stop_token_ids(tokenizer, lm.generation_config, sampling.stop_tokens)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    gen = torch.Generator(device=device).manual_seed(1)
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        _, lengths, _ = generation._decode_incremental(
            lm, encoded, plan.gen_samples, sampling, stops, gen
        )
    _sync(device)
    decode_s = time.perf_counter() - t0
    out: dict[str, float | str] = {
        "gen_path": "incremental" if generation.fast_path_supported(lm) else "generate",
        "gen_sequences": float(len(prompts) * plan.gen_samples),
        "gen_prompt_tokens_mean": sum(map(len, encoded)) / len(encoded),
        "gen_hf_backend_tokens": float(e2e_tokens),
        "gen_hf_backend_s": e2e_s,
        "gen_hf_backend_tokens_per_s": e2e_tokens / e2e_s,
        "gen_model_load_s": load_s,
        "gen_decode_tokens": float(sum(lengths)),
        "gen_decode_s": decode_s,
        "gen_decode_tokens_per_s": sum(lengths) / decode_s,
    }
    if device == "cuda":
        out["gen_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del lm
    return out


# -------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="a tiny model and workload: seconds; on the CPU in fp32 where there "
                         "is no GPU (the test suite), else a GPU smoke test")
    ap.add_argument("--precision", choices=["bf16", "amp"], default="bf16",
                    help="GPU only. bf16: bf16 weights (as DeepSpeed bf16 computes); "
                         "amp: fp32 weights + bf16 autocast (the trainer without DeepSpeed)")
    ap.add_argument("--pack-tokens", type=int, help="tokens per micro-batch (default 16384)")
    ap.add_argument("--steps", type=int, help="timed steps per phase")
    ap.add_argument("--warmup", type=int, help="untimed steps per phase")
    ap.add_argument("--gen-tokens", type=int, help="max new tokens per generated sample")
    ap.add_argument("--gen-samples", type=int, help="samples per prompt (8 prompts)")
    ap.add_argument("--peak-flops", type=float, default=H100_BF16_PEAK,
                    help="peak FLOP/s for MFU (default: H100 dense bf16, 989e12)")
    ap.add_argument("--workdir", help="where the model folder goes (default: a temp dir)")
    ap.add_argument("--json", help="also write the summary as JSON here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available. This check needs one GPU; "
              "run with --tiny for the CPU smoke test.", file=sys.stderr)
        return 2
    shape = TINY_SHAPE if args.tiny else PAPER_SHAPE
    plan = TINY_PLAN if args.tiny else FULL_PLAN
    overrides = {"pack_tokens": args.pack_tokens, "steps": args.steps, "warmup": args.warmup,
                 "gen_tokens": args.gen_tokens, "gen_samples": args.gen_samples}
    plan = Plan(**{**asdict(plan), **{k: v for k, v in overrides.items() if v is not None}})
    # --tiny runs where the trainer would: the GPU if there is one (a quick smoke
    # test there), else the CPU in fp32 (the test suite)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        precision, dtype = "fp32", torch.float32
        # tiny ops: one thread is as fast, and immune to a busy shared CPU's spin-waits
        torch.set_num_threads(1)
    else:
        precision = args.precision
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    attn = training.attention_implementation()  # FA2 iff CUDA + flash_attn (load_model's rule)
    packed = attn == "flash_attention_2"  # the trainer's rule (redi.training.Trainer)

    def autocast() -> Any:
        if precision == "amp":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return torch.autocast(device_type=device, enabled=False)

    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    print(f"shape {shape}\nplan {plan}")
    print(f"precision {precision}, attention {attn}, layout {'packed' if packed else 'padded'}")

    t_start = time.perf_counter()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    model_dir = workdir / "model"
    try:
        t0 = time.perf_counter()
        tokenizer = write_model_dir(shape, model_dir, device, torch.bfloat16 if device == "cuda"
                                    else torch.float32)
        build_s = time.perf_counter() - t0
        gc.collect()  # the init model is gone: give its memory back before loading
        if device == "cuda":
            torch.cuda.empty_cache()
        # the trainer's loader: attention implementation, use_cache off, non-reentrant GC
        t0 = time.perf_counter()
        lm = training.load_model(model_dir, dtype, gradient_checkpointing=True).to(device)
        load_s = time.perf_counter() - t0
        if lm.config._attn_implementation != attn:
            raise RuntimeError(f"loaded with {lm.config._attn_implementation}, expected {attn}")
        total, n_params = count_params(lm)
        if n_params != non_embedding_params(shape):
            raise RuntimeError(f"non-embedding params {n_params} != formula "
                               f"{non_embedding_params(shape)}")
        print(f"built + saved in {build_s:.1f}s, loaded in {load_s:.1f}s; params {total:,}, "
              f"N (non-embedding, tied embedding/LM head excluded) {n_params:,}")
        print("MFU = (6*N*tokens + sum_seq 6*n_layers*seq_len^2*hidden) / elapsed / "
              f"{args.peak_flops:.4g}  [attention: 6 (fwd+bwd) * 2 (QK^T, AV) * L * s^2 * H / 2 "
              "(causal)]; HFU adds the GC re-forward and the LM head over completion tokens")

        check = packing_check(lm, shape.vocab, tokenizer.pad_token_id, device, autocast)
        print(f"[packing] packed vs padded hidden states: rel err {check['packing_rel_err']:.2e}; "
              f"with positions not restarting (a leak): {check['packing_leak_rel_err']:.2e} -> "
              f"{check['packing_check']}")

        module = logprobs.TokenLogps(lm)
        module.train()  # gradient checkpointing only acts in training mode
        optimizer = make_optimizer(module)
        rng = random.Random(0)
        n_packs = plan.warmup + plan.steps
        ctx = {"device": device, "warmup": plan.warmup, "shape": shape, "n_params": n_params,
               "packed": packed, "pad_id": tokenizer.pad_token_id, "autocast": autocast}
        phases = []
        for name, make_pack, loss_fn in (("sft", sft_pack, sft_loss),
                                         ("redi", pair_pack, redi_loss)):
            packs = [make_pack(plan, shape.vocab, rng) for _ in range(n_packs)]
            phase = run_phase(name, module, optimizer, packs, loss_fn, ctx)
            phases.append(phase)
            print(f"[{name}] {phase.steps} steps x {plan.pack_tokens} tokens "
                  f"(~{len(packs[-1])} seqs/pack, input tensor {phase.padded_tokens} tokens, "
                  f"{phase.layout}): {phase.tokens_per_s:,.0f} tok/s, step {phase.step_s_mean:.3f}s "
                  f"(min {phase.step_s_min:.3f}s), MFU {phase.mfu(args.peak_flops):.4g}, "
                  f"HFU {phase.hfu(args.peak_flops):.4g}, peak mem "
                  f"{'n/a' if phase.peak_mem_gib is None else f'{phase.peak_mem_gib:.2f} GiB'}, "
                  f"loss {phase.last_loss:.4f}")
        del module, lm, optimizer
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

        gen = run_generation(model_dir, tokenizer, plan, device)
        print(f"[generation] hf backend: {gen['gen_hf_backend_tokens']:.0f} tokens in "
              f"{gen['gen_hf_backend_s']:.2f}s incl. model load "
              f"({gen['gen_hf_backend_tokens_per_s']:.1f} tok/s); decode only "
              f"({gen['gen_path']} path, {gen['gen_sequences']:.0f} sequences): "
              f"{gen['gen_decode_tokens_per_s']:.1f} tok/s")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "precision": precision,
        "attention": attn,
        "layout": "packed" if packed else "padded",
        "params_total": total,
        "params_non_embedding_N": n_params,
        "peak_flops": args.peak_flops,
        "mfu_formula": "(6*N*tokens + sum_seq 6*n_layers*seq_len^2*hidden) / elapsed / peak_flops",
        "pack_tokens": plan.pack_tokens,
        **check,
    }
    for p in phases:
        summary.update({
            f"{p.name}_tokens_per_s": round(p.tokens_per_s, 1),
            f"{p.name}_step_s": round(p.step_s_mean, 4),
            f"{p.name}_peak_mem_gib": None if p.peak_mem_gib is None else round(p.peak_mem_gib, 2),
            f"{p.name}_mfu": float(f"{p.mfu(args.peak_flops):.4g}"),
            f"{p.name}_hfu": float(f"{p.hfu(args.peak_flops):.4g}"),
        })
    summary["generation_tokens_per_s"] = round(float(gen["gen_decode_tokens_per_s"]), 1)
    summary["generation_hf_backend_tokens_per_s"] = round(
        float(gen["gen_hf_backend_tokens_per_s"]), 1)
    summary["generation_model_load_s"] = round(float(gen["gen_model_load_s"]), 2)
    if "gen_peak_mem_gib" in gen:
        summary["generation_peak_mem_gib"] = round(float(gen["gen_peak_mem_gib"]), 2)
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)

    print(SUMMARY_HEADER)
    for key, value in summary.items():
        print(f"{key}: {'n/a' if value is None else value}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if check["packing_check"] == "FAIL":
        print("gpu_check: packed sequences are NOT isolated (see packing_check)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
