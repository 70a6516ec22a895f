"""Prepared single-GPU check: the project's Trainer at paper scale, and hf generation speed.

Builds a Qwen2.5-Math-1.5B-shaped ``Qwen2ForCausalLM`` with random weights,
saves it as a Hugging Face folder and trains it with ``redi.train.training.Trainer``
itself (its optimizer from ``redi.workflow.config.OPTIMIZER``, its losses, its batching
and its attention choice), on 16,384-token micro-batches:

1. SFT steps (4 sequences of ~4k tokens per step);
2. REDI steps (alpha 0.8; 4 pairs per step, each pair's two sequences ~4k tokens);

each once with ``REDI_ATTENTION=varlen`` (one packed row through PyTorch's
``varlen_attn``; on a CPU the per-segment SDPA reference) and once with
``REDI_ATTENTION=sdpa`` (padded rows). Same init weights and same items, so
the first step's loss must agree up to bf16 tolerance (fp32 on a CPU); a
separate isolation check (per-token log-probs of short packed sequences vs each
alone vs one leaking segment) shows that packed sequences do not see each other.
Then generation with the ``hf`` backend of ``redi.eval.generation``.

What the check changes in the Trainer (``CheckTrainer``): per-step wall times
(CUDA synchronised) and the peak-memory reset at the first timed step; and no
checkpoint writes (a 1.5B model + AdamW state is ~20 GB of disk per checkpoint:
the check measures training steps, not disk).

Needs torch, transformers, accelerate, tensorboard, tqdm (what the Trainer
imports), not datasets, snakemake, math-verify, vllm, deepspeed, pandas,
pyarrow. The redi package need not be installed; the working tree is put on
``sys.path``.

    bash bench/gpu_check.sh                 # one H100/H200, a few minutes
    python bench/gpu_check.py --tiny        # seconds: CPU fp32 (tests/), or GPU smoke test

MFU = model FLOPs / time / peak, with model FLOPs (per micro-batch)

    6 * N * tokens  +  sum over sequences of 6 * n_layers * seq_len^2 * hidden

where N is the NON-embedding parameter count (decoder layers + final norm; the
tied embedding / LM head matrix excluded), tokens the real (unpadded) tokens,
and the attention term is ``6 (fwd+bwd) * 2 (QK^T and AV) * n_layers * seq_len^2
* hidden / 2 (causal)``. A separate "hardware FLOPs" figure (HFU) counts what
really runs: padded rows at their padded width, the gradient-checkpointing
re-forward (2N per token + the forward attention) and the LM head over the
completion tokens only (6 V H per target, + 2 V H for the chunked log-prob
recompute of a non-linear objective; SFT and REDI compute the head's gradient in
the forward).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the GPU machine may lack an installed redi package, but has the working tree
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from redi.data.prompts import (  # noqa: E402
    ENDOFTEXT,
    EVAL_USER_TEMPLATE,
    QWEN_MATH_CHAT_TEMPLATE,
    SYSTEM_PROMPT,
    render_eval_prompt,
)

# torch/transformers/stdlib at import time; accelerate, tensorboard and tqdm are
# imported by the Trainer when it is built and run; pyarrow is only needed to read
# parquet datasets, which the check does not (it builds its items in memory)
from redi.eval import backends, generation  # noqa: E402
from redi.model import attention, models  # noqa: E402
from redi.model.base_model import save, set_stop_tokens, train_tokenizer  # noqa: E402
from redi.report import flops  # noqa: E402
from redi.train import batching, logprobs, resume, train_data, training  # noqa: E402
from redi.train.batching import TokenSeq  # noqa: E402
from redi.workflow import config  # noqa: E402

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (an H200 has the same)
SUMMARY_HEADER = "===== gpu_check summary ====="
STAGES = ("sft", "redi")  # phase labels; "redi" runs the Trainer's stage 2
ATTENTIONS = ("varlen", "sdpa")  # REDI_ATTENTION values: packed / padded rows
SFT_LR = 5e-5  # the paper's SFT LR
REDI_LR, REDI_ALPHA = 1e-6, 0.8  # the paper's final REDI run
# packed vs padded first-step loss, relative: fp32 (CPU) differs only by summation
# order; bf16 autocast rounds every matmul output (2^-9), but the loss averages
# ~16k per-token errors of random sign, ~1e-5 relative by estimate: 1e-3 leaves room
LOSS_RTOL = {"fp32": 1e-5, "bf16": 1e-3}
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

log = logging.getLogger("gpu_check")


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

    pack_tokens: int  # real tokens per micro-batch (= per optimizer step)
    items_per_step: int  # SFT sequences or stage-2 pairs per step (micro = global batch)
    jitter: float  # item lengths vary by +-jitter around pack_tokens / items_per_step
    prompt_min: int
    prompt_max: int
    warmup: int  # untimed steps per phase (kernel selection, allocator)
    steps: int  # timed steps per phase
    gen_prompts: int
    gen_samples: int
    gen_tokens: int


FULL_PLAN = Plan(16384, 4, 0.25, 64, 512, 2, 4, 8, 4, 512)
TINY_PLAN = Plan(2048, 4, 0.25, 8, 64, 1, 2, 4, 2, 8)


# ------------------------------------------------------------------- FLOPs


def non_embedding_params(shape: Shape) -> int:
    """Qwen2 parameters without the (tied) embedding (``redi.report.flops``, as Table 3 counts)."""
    return flops.non_embedding_params({
        "model_type": "qwen2", "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads})


def attention_flops(seq_lens: Sequence[int], layers: int, hidden: int) -> float:
    """Causal self-attention, forward + backward (the attention term of
    :func:`redi.report.flops.training_flops`)."""
    return flops.training_flops(0, 0, sum(s * s for s in seq_lens), layers, hidden)


def model_flops(n_params: int, seq_lens: Sequence[int], layers: int, hidden: int) -> float:
    """Model FLOPs of one training step (the MFU numerator): 6 N T + attention."""
    return flops.training_flops(n_params, sum(seq_lens), sum(s * s for s in seq_lens), layers,
                                 hidden)


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
    total = model_flops(n_params, seq_lens, shape.layers, shape.hidden)
    head = 2.0 * shape.vocab * shape.hidden * n_targets  # one forward of the LM head
    total += 3 * head + (head if lm_head_recompute else 0.0)
    if checkpointing:  # one more forward: a third of the fwd+bwd figures
        total += 2.0 * n_params * sum(seq_lens)
        total += attention_flops(seq_lens, shape.layers, shape.hidden) / 3
    return total


# ---------------------------------------------------------------- workload


def item_lengths(total: int, k: int, jitter: float, rng: random.Random) -> list[int]:
    """``k`` lengths around ``total / k`` (+-jitter, in +d/-d couples) summing to ``total``:
    every step holds the same real tokens, and padded rows still pad."""
    base = total // k
    out = [base] * k
    for i in range(0, k - 1, 2):
        d = rng.randint(0, int(base * jitter))
        out[i], out[i + 1] = base + d, base - d
    out[-1] += total - base * k
    return out


def _ids(n: int, vocab: int, rng: random.Random) -> list[int]:
    return [rng.randrange(vocab) for _ in range(n)]


def sft_item(n: int, plan: Plan, vocab: int, rng: random.Random) -> train_data.Item:
    """One SFT sequence of ``n`` tokens, a prompt of ``prompt_min..prompt_max`` tokens."""
    n_prompt = min(rng.randint(plan.prompt_min, plan.prompt_max), n // 2)
    ids = _ids(n, vocab, rng)
    return train_data.Item((batching.sft_sequence(ids[:n_prompt], ids[n_prompt:], n),))


def pair_item(n: int, plan: Plan, vocab: int, rng: random.Random) -> train_data.Item:
    """A (chosen, rejected) pair sharing a prompt; its two sequences total ``n`` tokens."""
    n_prompt = min(rng.randint(plan.prompt_min, plan.prompt_max), n // 4)
    rest = n - 2 * n_prompt
    n_chosen = rng.randint(rest // 4, rest - rest // 4)
    prompt = _ids(n_prompt, vocab, rng)
    chosen, rejected = _ids(n_chosen, vocab, rng), _ids(rest - n_chosen, vocab, rng)
    return train_data.Item(batching.pair_sequences(prompt, chosen, rejected, n_prompt, n))


def make_packs(stage: str, plan: Plan, vocab: int, rng: random.Random) -> list[list[train_data.Item]]:
    """The items of every step (warmup + timed) of one stage."""
    make = sft_item if stage == "sft" else pair_item
    return [
        [make(n, plan, vocab, rng)
         for n in item_lengths(plan.pack_tokens, plan.items_per_step, plan.jitter, rng)]
        for _ in range(plan.warmup + plan.steps)
    ]


def order_items(packs: list[list[train_data.Item]], shuffle_seed: int | None) -> list[train_data.Item]:
    """Items in the order that makes the Trainer's step plan (``train_data.step_plan``:
    SFT shuffles with the run's seed, stage 2 keeps file order) run pack k at step k."""
    n, k = sum(len(p) for p in packs), len(packs[0])
    items: list[train_data.Item | None] = [None] * n
    for pack, indices in zip(packs, train_data.step_plan(n, k, 1, shuffle_seed), strict=True):
        for item, i in zip(pack, indices, strict=True):
            items[i] = item
    return items  # type: ignore[return-value]


def pack_seqs(pack: list[train_data.Item]) -> list[TokenSeq]:
    return [s for item in pack for s in item.seqs]


def run_params(stage: str, plan: Plan, gradient_checkpointing: bool) -> dict[str, Any]:
    """Params as ``redi.workflow.config.sft_params``/``stage2_params`` build them; the optimizer
    settings are the project's (read at call time, never copied)."""
    steps = plan.warmup + plan.steps
    max_len = math.ceil(plan.pack_tokens / plan.items_per_step * (1 + plan.jitter)) + 1
    common = {
        "epochs": 1,
        "global_batch": plan.items_per_step,
        "micro_batch": plan.items_per_step,  # one process: one micro-batch per step
        "max_length": max_len,
        "save_every_steps": steps + 1,  # no intermediate checkpoint
        "gradient_checkpointing": gradient_checkpointing,
        **config.OPTIMIZER,
    }
    if stage == "sft":
        return {"stage": "sft", "run": "gpu_check_sft", "lr": SFT_LR, **common}
    return {"stage": "stage2", "run": "gpu_check_redi", "objective": "redi", "alpha": REDI_ALPHA,
            "lr": REDI_LR, "paper_lr": REDI_LR, "max_prompt_length": plan.prompt_max, **common}


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
    """A random-init Qwen2 + tokenizer saved as a Hugging Face folder (what the
    Trainer's ``load_model`` and the hf generation backend read)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = build_tokenizer(shape)
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    qwen = Qwen2Config(
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
        model = AutoModelForCausalLM.from_config(qwen, dtype=dtype)
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


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class CheckTrainer(training.Trainer):
    """The project's Trainer, unchanged in what it computes, plus per-step timing.

    ``_step`` is wrapped to time each optimizer step between CUDA synchronisations
    (the log row's ``tokens_per_s`` starts its clock without one) and to reset the
    peak-memory counter at the first timed step. ``_save_checkpoint`` writes
    nothing: the check measures training steps, and a 1.5B model + its AdamW
    state is ~20 GB of disk per checkpoint (a minute of a short GPU lease); the
    entry it records keeps ``run()``'s manifest bookkeeping working.
    """

    def __init__(self, spec: training.RunSpec, warmup: int) -> None:
        self.warmup = warmup
        self.step_s: list[float] = []
        super().__init__(spec)

    def _step(self, step: int) -> dict[str, Any]:
        if step == self.warmup and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(self.device)
        t0 = time.perf_counter()
        row = super()._step(step)
        _sync(self.device)
        self.step_s.append(time.perf_counter() - t0)
        return row

    def _save_checkpoint(self, step: int, elapsed: float) -> None:
        path = self.ckpt_dir / f"step-{step:06d}"
        entry = {"step": step, "epoch": self._epoch_value(step), "path": path.as_posix(),
                 "written": False}
        if step == self.total_steps:
            entry["final"] = True
        self.checkpoints.append(entry)

    @property
    def peak_mem_gib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated() / 2**30

    def optimizer_settings(self) -> dict[str, Any]:
        """What the Trainer's AdamW really uses (decayed group first, as it builds them)."""
        groups = self.optimizer.param_groups
        return {"weight_decay": groups[0]["weight_decay"],
                "no_decay_weight_decay": groups[1]["weight_decay"],
                "betas": tuple(groups[0]["betas"]), "eps": groups[0]["eps"],
                "max_grad_norm": self.spec.params["max_grad_norm"],
                "base_lr": self.spec.params["lr"]}


@contextlib.contextmanager
def attention_env(choice: str) -> Iterator[None]:
    """``REDI_ATTENTION=choice`` while a Trainer is built (it reads it in ``__init__``)."""
    before = os.environ.get("REDI_ATTENTION")
    os.environ["REDI_ATTENTION"] = choice
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("REDI_ATTENTION", None)
        else:
            os.environ["REDI_ATTENTION"] = before


def isolation_check(trainer: training.Trainer, vocab: int) -> dict[str, float | str]:
    """Do packed sequences stay apart in the Trainer's own forward? Per-token
    log-probs (``trainer.module``: TokenLogps under the Trainer's autocast) of a
    few short sequences packed in one row, vs each sequence alone, vs the same
    row as ONE segment (what attention leaking across boundaries computes).

    The first-step loss alone cannot show a leak: a random model's loss is a mean
    over ~16k tokens near ln(vocab). Short sequences make a leak large per token.
    """
    rng = random.Random(1)
    seqs = [TokenSeq(tuple(_ids(n, vocab, rng)), 8) for n in (40, 72, 56, 88)]
    pad = trainer.pad_id

    def logps(batch: batching.Batch) -> torch.Tensor:
        with torch.no_grad():
            return logprobs.batch_token_logps(trainer.module, batch.to(trainer.device)).float()

    packed = batching.make_batch(seqs, True, pad)
    alone = torch.cat([logps(batching.make_batch([s], True, pad)) for s in seqs])
    leaky = batching.make_batch(seqs, True, pad)
    total = leaky.input_ids.shape[1]
    leaky.position_ids = torch.arange(total)[None]
    leaky.cu_seqlens = torch.tensor([0, total], dtype=torch.int32)
    leaky.max_seqlen = total
    later = packed.seq_index > 0  # the first sequence is the same in all three
    ref = alone[later]
    # relative to how much the log-probs vary, not to their size (~ln vocab each)
    scale = (ref - ref.mean()).norm()
    err = float((logps(packed)[later] - ref).norm() / scale)
    leak = float((logps(leaky)[later] - ref).norm() / scale)
    verdict = "ok" if err < 0.2 * leak else ("inconclusive" if leak < 1e-3 else "FAIL")
    return {"isolation_rel_err": err, "isolation_leak_rel_err": leak, "isolation_check": verdict}


@dataclass
class Setup:
    """What every phase shares."""

    shape: Shape
    plan: Plan
    device: str
    precision: str  # "bf16" (autocast, fp32 weights) on CUDA, "fp32" on a CPU
    peak_flops: float
    loss_rtol: float
    gradient_checkpointing: bool
    attentions: tuple[str, ...]
    generation: bool
    model_dir: Path
    work_dir: Path


@dataclass
class Phase:
    name: str  # "<stage>_<attention choice>"
    attention: str  # the Trainer's attn_implementation
    layout: str  # the Trainer's layout: packed / padded
    steps: int  # timed steps
    tokens: int  # real tokens of the timed steps (padding excluded)
    input_tokens: int  # tokens the packed/padded input tensor holds per step (mean)
    elapsed_s: float
    step_s_mean: float
    step_s_min: float
    peak_mem_gib: float | None
    model_flops: float
    hardware_flops: float
    first_loss: float
    first_grad_norm: float
    last_loss: float
    trainer_tokens_per_s: float  # the log row's figure (its clock: no CUDA sync at start)
    build_s: float  # Trainer construction: model load, move to the device, optimizer
    optimizer: dict[str, Any] = field(default_factory=dict)
    params: tuple[int, int] = (0, 0)  # (all, non-embedding) of the trained model
    isolation: dict[str, float | str] | None = None
    released: bool = False  # the phase's model was garbage-collected afterwards

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s

    def mfu(self, peak: float) -> float:
        return self.model_flops / self.elapsed_s / peak

    def hfu(self, peak: float) -> float:
        return self.hardware_flops / self.elapsed_s / peak


def step_flops(seqs: list[TokenSeq], packed: bool, setup: Setup, n_params: int,
               fused_head: bool) -> tuple[float, float]:
    """(model, hardware) FLOPs of one step. Padded rows run at their padded width; the LM
    head runs again in backward unless the objective is linear (``fused_head``) or its
    targets fit one chunk."""
    lens = [len(s.ids) for s in seqs]
    rows = lens if packed else [max(lens)] * len(lens)
    n_targets = sum(s.n_completion for s in seqs)
    recompute = not fused_head and n_targets > logprobs.chunk_tokens_for(setup.shape.vocab)
    return (
        model_flops(n_params, lens, setup.shape.layers, setup.shape.hidden),
        hardware_flops(n_params, rows, setup.shape, n_targets,
                       setup.gradient_checkpointing, recompute),
    )


def build_trainer(stage: str, choice: str, packs: list[list[train_data.Item]], setup: Setup,
                  tokenizer: Any) -> CheckTrainer:
    """The project's Trainer for one phase, under ``REDI_ATTENTION=choice``."""
    params = run_params(stage, setup.plan, setup.gradient_checkpointing)
    shuffle = params["seed"] if params["stage"] == "sft" else None  # as the Trainer plans
    run_dir = setup.work_dir / f"{stage}_{choice}"
    spec = training.RunSpec(
        stage=params["stage"], params=params, items=order_items(packs, shuffle),
        init=str(setup.model_dir), tokenizer=tokenizer,
        manifest_path=run_dir / "manifest.json", log_csv_path=run_dir / "log.csv",
        fingerprint=resume.fingerprint(params, [setup.model_dir]),
    )
    with attention_env(choice):
        return CheckTrainer(spec, setup.plan.warmup)


def summarise_phase(name: str, trainer: CheckTrainer, manifest: dict[str, Any],
                    packs: list[list[train_data.Item]], setup: Setup) -> Phase:
    """A Phase from the Trainer's rows and timings (the first ``warmup`` steps untimed)."""
    rows, warmup = trainer.rows, setup.plan.warmup
    for k, (row, pack) in enumerate(zip(rows, packs, strict=True)):
        if row["tokens"] != sum(len(s.ids) for s in pack_seqs(pack)):  # step plan as assumed?
            raise RuntimeError(f"{name}: step {k + 1} trained {row['tokens']} tokens, "
                               "not its pack's: the Trainer's step order changed")
    lm = trainer.accelerator.unwrap_model(trainer.module).lm
    params = count_params(lm)
    fused = trainer.objective.sequence_weights is not None
    flops = [step_flops(pack_seqs(p), trainer.packed, setup, params[1], fused)
             for p in packs[warmup:]]
    inputs = [sum(len(s.ids) for s in pack_seqs(p)) if trainer.packed
              else len(pack_seqs(p)) * max(len(s.ids) for s in pack_seqs(p))
              for p in packs[warmup:]]
    times = trainer.step_s[warmup:]
    timed = rows[warmup:]
    return Phase(
        name=name, attention=manifest["attention"], layout=manifest["layout"],
        steps=len(times), tokens=sum(r["tokens"] for r in timed),
        input_tokens=sum(inputs) // len(inputs), elapsed_s=sum(times),
        step_s_mean=sum(times) / len(times), step_s_min=min(times),
        peak_mem_gib=trainer.peak_mem_gib,
        model_flops=sum(f[0] for f in flops), hardware_flops=sum(f[1] for f in flops),
        first_loss=rows[0]["loss"], first_grad_norm=rows[0]["grad_norm"],
        last_loss=rows[-1]["loss"],
        trainer_tokens_per_s=sum(r["tokens_per_s"] for r in timed) / len(timed),
        build_s=0.0, optimizer=trainer.optimizer_settings(), params=params,
    )


def free(trainer: CheckTrainer | None) -> None:
    """Give the phase's model, grads and AdamW state back before the next phase."""
    if trainer is not None:
        trainer.accelerator.free_memory()  # accelerate keeps references to them
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_phase(stage: str, choice: str, packs: list[list[train_data.Item]], setup: Setup,
              tokenizer: Any, isolation: bool) -> Phase:
    """``warmup`` + ``steps`` optimizer steps of the project's Trainer, one micro-batch each."""
    name, trainer = f"{stage}_{choice}", None
    try:
        t0 = time.perf_counter()
        trainer = build_trainer(stage, choice, packs, setup, tokenizer)
        build_s = time.perf_counter() - t0
        module = weakref.ref(trainer.module)
        checked = isolation_check(trainer, setup.shape.vocab) if isolation else None
        manifest = trainer.run()
        phase = summarise_phase(name, trainer, manifest, packs, setup)
    finally:
        free(trainer)
        del trainer
        free(None)
    phase.build_s, phase.isolation = build_s, checked
    # four phases of 1.5B fp32 weights + grads + AdamW (~31 GB each) fit in no
    # GPU at once: a phase must leave nothing behind
    phase.released = module() is None
    if not phase.released:
        log.warning("%s: the Trainer's model is still referenced after the phase", name)
    if not all(math.isfinite(x) for x in (phase.first_loss, phase.last_loss)):
        raise RuntimeError(f"{name}: non-finite loss")
    return phase


def compare_losses(packed: Phase, padded: Phase, rtol: float) -> dict[str, Any]:
    """First-step loss (same init weights, same items) of the packed and padded runs."""
    diff = abs(packed.first_loss - padded.first_loss)
    tol = rtol * max(abs(packed.first_loss), abs(padded.first_loss), 1.0)
    grad = abs(packed.first_grad_norm - padded.first_grad_norm) / max(
        abs(padded.first_grad_norm), 1e-30)
    return {"loss_diff": diff, "loss_tol": tol, "grad_norm_rel_diff": grad,
            "verdict": "ok" if diff <= tol else "FAIL"}


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
    seeds = [1000 * i for i in range(len(prompts))]  # per-request seeds, as redi.eval.evaluation
    backend = backends.make_backend("hf", sampling, batch_size=plan.gen_prompts * plan.gen_samples)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    results = backend.generate(str(model_dir), prompts, plan.gen_samples, seeds=seeds)
    _sync(device)
    e2e_s = time.perf_counter() - t0
    e2e_tokens = sum(c.n_tokens for comps in results for c in comps)

    # decode only: the backend's own loader and decoder, without the load in the timing
    t0 = time.perf_counter()
    lm = models.load_causal_lm(str(model_dir), "auto").to(device).eval()
    _sync(device)
    load_s = time.perf_counter() - t0
    stops = generation.stop_token_ids(tokenizer, lm.generation_config, sampling.stop_tokens)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    row_seeds = [s + j for s in seeds for j in range(plan.gen_samples)]
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        _, lengths, _ = generation._decode_incremental(
            lm, encoded, plan.gen_samples, sampling, stops, row_seeds)
    _sync(device)
    decode_s = time.perf_counter() - t0
    out: dict[str, float | str] = {
        "gen_path": "incremental" if generation.fast_path_supported(lm) else "generate",
        "gen_sequences": float(len(prompts) * plan.gen_samples),
        "gen_hf_backend_tokens": float(e2e_tokens),
        "gen_hf_backend_s": e2e_s,
        "gen_hf_backend_tokens_per_s": e2e_tokens / e2e_s,
        "gen_model_load_s": load_s,
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
    ap.add_argument("--attention", choices=["both", *ATTENTIONS], default="both",
                    help="REDI_ATTENTION values to run (both: packed varlen and padded sdpa, "
                         "and compare their first-step losses)")
    ap.add_argument("--no-gradient-checkpointing", action="store_true",
                    help="train without activation checkpointing (the paper preset uses it)")
    ap.add_argument("--no-generation", action="store_true", help="skip the hf generation phase")
    ap.add_argument("--pack-tokens", type=int, help="real tokens per micro-batch (default 16384)")
    ap.add_argument("--items-per-step", type=int,
                    help="SFT sequences / stage-2 pairs per micro-batch (default 4)")
    ap.add_argument("--steps", type=int, help="timed steps per phase")
    ap.add_argument("--warmup", type=int, help="untimed steps per phase")
    ap.add_argument("--gen-tokens", type=int, help="max new tokens per generated sample")
    ap.add_argument("--gen-samples", type=int, help="samples per prompt")
    ap.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK / 1e12,
                    help="peak TFLOP/s for MFU/HFU (default: H100/H200 dense bf16, 989)")
    ap.add_argument("--loss-rtol", type=float,
                    help="packed vs padded first-step loss, relative tolerance "
                         f"(default {LOSS_RTOL['bf16']} with bf16, {LOSS_RTOL['fp32']} in fp32)")
    ap.add_argument("--workdir", help="where the model folder and run folders go "
                                      "(default: a temp dir, removed afterwards)")
    ap.add_argument("--json", help="also write the summary as JSON here")
    return ap.parse_args(argv)


def make_setup(args: argparse.Namespace, work_dir: Path) -> Setup:
    plan = TINY_PLAN if args.tiny else FULL_PLAN
    overrides = {"pack_tokens": args.pack_tokens, "items_per_step": args.items_per_step,
                 "steps": args.steps, "warmup": args.warmup, "gen_tokens": args.gen_tokens,
                 "gen_samples": args.gen_samples}
    plan = Plan(**{**asdict(plan), **{k: v for k, v in overrides.items() if v is not None}})
    # --tiny runs where the trainer would: the GPU if there is one (a quick smoke
    # test there), else the CPU in fp32 (the test suite)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # what the Trainer does in one process: accelerate bf16 autocast over fp32
    # weights on CUDA (DeepSpeed keeps bf16 weights only under accelerate launch)
    precision = "bf16" if device == "cuda" else "fp32"
    return Setup(
        shape=TINY_SHAPE if args.tiny else PAPER_SHAPE, plan=plan, device=device,
        precision=precision, peak_flops=args.peak_tflops * 1e12,
        loss_rtol=args.loss_rtol if args.loss_rtol is not None else LOSS_RTOL[precision],
        gradient_checkpointing=not args.no_gradient_checkpointing,
        attentions=ATTENTIONS if args.attention == "both" else (args.attention,),
        generation=not args.no_generation,
        model_dir=work_dir / "model", work_dir=work_dir,
    )


def varlen_preflight(device: str) -> str | None:
    """Run the project's varlen attention function once, forward + backward, on the
    model's head layout (12 query / 2 key-value heads, bf16 on CUDA): a kernel or
    API mismatch shows here in a second, not after a 1.5B model is loaded.
    Returns the error, or None."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    # [1, H, T, D] views of [1, T, H, D] tensors: the layout Qwen2 attention passes
    q, k, v = (torch.randn(1, 48, h, 128, generator=gen).to(device, dtype).requires_grad_()
               .transpose(1, 2) for h in (12, 2, 2))
    cu = torch.tensor([0, 16, 48], dtype=torch.int32, device=device)
    try:
        out, _ = attention.varlen_attention(None, q, k, v, None, scaling=128**-0.5,
                                            cu_seq_lens_q=cu, max_length_q=32)
        out.float().sum().backward()
        _sync(device)
    except Exception as exc:  # any failure here means: run padded SDPA only
        return f"{type(exc).__name__}: {exc}"
    return None


def runnable_attentions(setup: Setup) -> tuple[tuple[str, ...], str | None]:
    """The choices this machine can run, and why varlen was dropped (None if not)."""
    if "varlen" not in setup.attentions:
        return setup.attentions, None
    padded_only = tuple(a for a in setup.attentions if a != "varlen")
    if setup.device == "cuda" and not attention.varlen_available():
        return padded_only, (f"torch {torch.__version__} has no torch.nn.attention.varlen: "
                             "packed varlen phases skipped, padded SDPA only")
    error = varlen_preflight(setup.device)
    if error is not None:
        return padded_only, (f"redi.model.attention.varlen_attention failed its preflight ({error}): "
                             "packed varlen phases skipped, padded SDPA only")
    return setup.attentions, None


def library_versions() -> dict[str, str | None]:
    import accelerate
    import transformers

    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def print_header(setup: Setup, note: str | None) -> None:
    print(", ".join(f"{k} {v}" for k, v in library_versions().items())
          + f", device {setup.device}"
          + (f" ({torch.cuda.get_device_name()})" if setup.device == "cuda" else ""))
    print(f"shape {setup.shape}\nplan {setup.plan}")
    weights = "bf16 autocast over fp32 weights" if setup.precision == "bf16" else "fp32 weights"
    print(f"precision {setup.precision} ({weights}), gradient checkpointing "
          f"{setup.gradient_checkpointing}, attentions {setup.attentions}")
    if note:
        print(f"NOTE: {note}")
    print("MFU = (6*N*tokens + sum_seq 6*n_layers*seq_len^2*hidden) / elapsed / "
          f"{setup.peak_flops:.4g}  [attention: 6 (fwd+bwd) * 2 (QK^T, AV) * L * s^2 * H / 2 "
          "(causal)]; HFU adds padding, the GC re-forward and the LM head over completion tokens")


def print_phase(p: Phase, setup: Setup) -> None:
    mem = "n/a" if p.peak_mem_gib is None else f"{p.peak_mem_gib:.2f} GiB"
    print(f"[{p.name}] {p.attention}/{p.layout}: {p.steps} timed steps x "
          f"{setup.plan.pack_tokens} tokens (input tensor {p.input_tokens} tokens): "
          f"{p.tokens_per_s:,.0f} tok/s (Trainer row {p.trainer_tokens_per_s:,.0f}), "
          f"step {p.step_s_mean:.3f}s (min {p.step_s_min:.3f}s), "
          f"MFU {p.mfu(setup.peak_flops):.4g}, HFU {p.hfu(setup.peak_flops):.4g}, "
          f"peak mem {mem}, first-step loss {p.first_loss:.6f}, last {p.last_loss:.6f}, "
          f"Trainer built in {p.build_s:.2f}s")
    if p.isolation is not None:
        print(f"[{p.name}] isolation: packed vs each sequence alone, per-token log-probs rel err "
              f"{p.isolation['isolation_rel_err']:.2e}; as one leaking segment "
              f"{p.isolation['isolation_leak_rel_err']:.2e} -> {p.isolation['isolation_check']}")


def run_training(setup: Setup, attentions: tuple[str, ...], tokenizer: Any) -> dict[str, Any]:
    """Every (stage, attention) phase, and the packed-vs-padded comparison per stage."""
    rng = random.Random(0)
    phases: dict[str, Phase] = {}
    comparisons: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for stage in STAGES:
        packs = make_packs(stage, setup.plan, setup.shape.vocab, rng)
        for choice in attentions:
            isolation = choice == "varlen" and not any(p.isolation for p in phases.values())
            try:
                phase = run_phase(stage, choice, packs, setup, tokenizer, isolation)
            except Exception as exc:  # keep the other phases' figures of a scarce GPU run
                traceback.print_exc()
                errors[f"{stage}_{choice}"] = f"{type(exc).__name__}: {exc}"
                print(f"[{stage}_{choice}] FAILED: {errors[f'{stage}_{choice}']}")
                continue
            phases[phase.name] = phase
            print_phase(phase, setup)
        if all(f"{stage}_{a}" in phases for a in ATTENTIONS):
            cmp = compare_losses(phases[f"{stage}_varlen"], phases[f"{stage}_sdpa"],
                                 setup.loss_rtol)
            comparisons[stage] = cmp
            print(f"[{stage}] packed vs padded first-step loss: |diff| {cmp['loss_diff']:.3e} "
                  f"(tolerance {cmp['loss_tol']:.3e} = {setup.loss_rtol:g} relative, "
                  f"{setup.precision}) -> {cmp['verdict']}; grad norm rel diff "
                  f"{cmp['grad_norm_rel_diff']:.3e}")
    return {"phases": phases, "comparisons": comparisons, "errors": errors}


def build_summary(setup: Setup, note: str | None, results: dict[str, Any],
                  gen: dict[str, Any] | None) -> dict[str, Any]:
    phases: dict[str, Phase] = results["phases"]
    first = next(iter(phases.values()), None)  # None: every phase failed (see *_error)
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if setup.device == "cuda" else "cpu",
        **library_versions(),
        "precision": setup.precision,
        "varlen_available": setup.device != "cuda" or attention.varlen_available(),
        "note": note,
        "gradient_checkpointing": setup.gradient_checkpointing,
        "params_total": first.params[0] if first else None,
        "params_non_embedding_N": first.params[1] if first else None,
        "peak_flops": setup.peak_flops,
        "mfu_formula": "(6*N*tokens + sum_seq 6*n_layers*seq_len^2*hidden) / elapsed / peak_flops",
        "pack_tokens": setup.plan.pack_tokens,
        **{f"optimizer_{k}": v for k, v in (first.optimizer if first else {}).items()},
    }
    for p in phases.values():
        if p.isolation is not None:
            summary.update(p.isolation)
        summary.update({
            f"{p.name}_attention": p.attention,
            f"{p.name}_layout": p.layout,
            f"{p.name}_tokens_per_s": round(p.tokens_per_s, 1),
            f"{p.name}_step_s": round(p.step_s_mean, 4),
            f"{p.name}_step_s_min": round(p.step_s_min, 4),
            f"{p.name}_mfu": float(f"{p.mfu(setup.peak_flops):.4g}"),
            f"{p.name}_hfu": float(f"{p.hfu(setup.peak_flops):.4g}"),
            f"{p.name}_peak_mem_gib": None if p.peak_mem_gib is None else round(p.peak_mem_gib, 2),
            f"{p.name}_first_loss": p.first_loss,
            f"{p.name}_released": p.released,
        })
    summary.update({f"{name}_error": error for name, error in results["errors"].items()})
    for stage, cmp in results["comparisons"].items():
        summary.update({f"{stage}_packed_vs_padded_{k}": v for k, v in cmp.items()})
    if gen is not None:
        summary["generation_tokens_per_s"] = round(float(gen["gen_decode_tokens_per_s"]), 1)
        summary["generation_hf_backend_tokens_per_s"] = round(
            float(gen["gen_hf_backend_tokens_per_s"]), 1)
        summary["generation_model_load_s"] = round(float(gen["gen_model_load_s"]), 2)
        if "gen_peak_mem_gib" in gen:
            summary["generation_peak_mem_gib"] = round(float(gen["gen_peak_mem_gib"]), 2)
    return summary


def exit_code(summary: dict[str, Any]) -> int:
    """3: packed and padded disagree (loss beyond tolerance, or a leak between
    sequences); 4: a training phase failed (its error is in the summary)."""
    bad = [k for k, v in summary.items()
           if (k.endswith("_packed_vs_padded_verdict") or k == "isolation_check") and v == "FAIL"]
    if bad:
        print(f"gpu_check: packed and padded training disagree: {', '.join(bad)}", file=sys.stderr)
        return 3
    failed = [k for k in summary if k.endswith("_error")]
    if failed:
        print(f"gpu_check: training phases failed: {', '.join(failed)}", file=sys.stderr)
        return 4
    return 0


def run_check(setup: Setup) -> tuple[dict[str, Any], str | None, dict[str, Any] | None]:
    attentions, note = runnable_attentions(setup)
    print_header(setup, note)
    t0 = time.perf_counter()
    # bf16 on the GPU (the checkpoints' dtype); the Trainer loads fp32 weights from it
    dtype = torch.bfloat16 if setup.device == "cuda" else torch.float32
    tokenizer = write_model_dir(setup.shape, setup.model_dir, setup.device, dtype)
    free(None)  # the init model is gone: give its memory back before the Trainers load
    print(f"model built + saved in {time.perf_counter() - t0:.1f}s")
    results = run_training(setup, attentions, tokenizer)
    gen = None
    if setup.generation:
        gen = run_generation(setup.model_dir, tokenizer, setup.plan, setup.device)
        print(f"[generation] hf backend: {gen['gen_hf_backend_tokens']:.0f} tokens in "
              f"{gen['gen_hf_backend_s']:.2f}s incl. model load "
              f"({gen['gen_hf_backend_tokens_per_s']:.1f} tok/s); decode only "
              f"({gen['gen_path']} path, {gen['gen_sequences']:.0f} sequences): "
              f"{gen['gen_decode_tokens_per_s']:.1f} tok/s")
    return results, note, gen


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available. This check needs one GPU; "
              "run with --tiny for the CPU smoke test.", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not torch.cuda.is_available():
        # tiny ops: one thread is as fast, and immune to a busy shared CPU's spin-waits
        torch.set_num_threads(1)
    t_start = time.perf_counter()
    work_dir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    setup = make_setup(args, work_dir)
    try:
        results, note, gen = run_check(setup)
    finally:
        if not args.workdir:
            shutil.rmtree(work_dir, ignore_errors=True)
    summary = build_summary(setup, note, results, gen)
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(SUMMARY_HEADER)
    for key, value in summary.items():
        print(f"{key}: {'n/a' if value is None else value}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
