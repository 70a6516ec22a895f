"""Token-level dynamics of a REDI run (paper appendix E, Figures 9 and 10).

At every checkpoint of the run (step 0 = its init SFT model), teacher-forced, the
mean entropy of the model's next-token distribution over all completion tokens of
three sample types:

* ``train_chosen`` / ``train_rejected``: the chosen / rejected responses of a fixed,
  seeded sample of training pairs;
* ``test_generated``: responses the same checkpoint generated on test prompts --
  Figure 8's generations (``gen_stats``, the final protocol), a seeded sample per step.

For Figure 10 the per-token log-probs of the chosen responses are kept at step 0
and at the "after" checkpoint; ``redi.report.token_stats`` groups them by vocabulary token.
Entropy and log-probs come from one chunked pass (no [tokens x vocab] logits).
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from redi.data.prompts import render_eval_prompt
from redi.distributed import distributed_state
from redi.io import read_json, write_csv, write_parquet
from redi.model import attention
from redi.model.models import load_causal_lm, load_tokenizer, pad_id
from redi.train import batching, logprobs
from redi.train.batching import TokenSeq

log = logging.getLogger(__name__)

SAMPLE_TYPES = ("train_chosen", "train_rejected", "test_generated")
ENTROPY_COLUMNS = ["step", "checkpoint", "sample_type", "n_sequences", "n_tokens",
                   "mean_entropy"]
TOKEN_COLUMNS = ["step", "sequence", "token_id", "logp"]


@dataclass
class Sample:
    """Teacher-forced sequences of one type (their completion tokens are scored)."""

    kind: str
    seqs: list[TokenSeq]


def checkpoint_steps(manifest: dict[str, Any]) -> list[tuple[int, str]]:
    """(step, model folder) of the init model and every saved checkpoint."""
    return [(0, manifest["init"])] + [(int(c["step"]), c["path"]) for c in manifest["checkpoints"]]


def after_step(manifest: dict[str, Any], after: str | int) -> int:
    """Figure 10's "after" checkpoint: ``last`` or a saved step."""
    steps = [int(c["step"]) for c in manifest["checkpoints"]]
    if after == "last":
        return steps[-1]
    if int(after) not in steps:
        raise ValueError(f"figures.fig10.after = {after}: not a checkpoint of the run ({steps})")
    return int(after)


def pair_sample(n_pairs: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded sample of pair indices (sorted), the same at every checkpoint."""
    return sorted(random.Random(seed).sample(range(n_pairs), min(size, n_pairs)))


def train_samples(tokenizer: Any, pairs_path: str | os.PathLike, params: dict[str, Any]
                  ) -> tuple[list[int], list[Sample]]:
    """The chosen and rejected sequences of the sampled pairs (stage-2 layout)."""
    from redi.train.train_data import pair_items

    items = pair_items(tokenizer, pairs_path, params["max_prompt_length"], params["max_length"])
    chosen = pair_sample(len(items), params["n_pairs"], params["seed"])
    return chosen, [Sample("train_chosen", [items[i].seqs[0] for i in chosen]),
                    Sample("train_rejected", [items[i].seqs[1] for i in chosen])]


def generated_sample(tokenizer: Any, responses: Any, problems: dict[str, str], step: int,
                     params: dict[str, Any]) -> Sample:
    """A seeded sample of what the checkpoint at ``step`` generated, teacher-forced
    after the same prompt (the forced think prefix is part of the prompt, not scored)."""
    rows = responses[responses["step"] == step]
    keys = sorted(zip(rows["problem_id"], rows["sample"], strict=True))
    chosen = set(random.Random(params["seed"] + step).sample(keys, min(params["n_generated"],
                                                                      len(keys))))
    prefix, seqs = params["think_prefix"], []
    for pid, sample, text in zip(rows["problem_id"], rows["sample"], rows["response"],
                                 strict=True):
        if (pid, sample) not in chosen:
            continue
        prompt = render_eval_prompt(tokenizer, problems[pid], True, prefix,
                                    params["think_prefix_newline"])
        completion = text[len(prefix):] if prompt.endswith(prefix) and text.startswith(prefix) \
            else text
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if c_ids:  # truncated as the training pairs: the prompt's end, the response's start
            seqs.append(batching.pair_sequences(p_ids, c_ids, c_ids, params["max_prompt_length"],
                                                params["max_length"])[0])
    return Sample("test_generated", seqs)


def score(module: logprobs.TokenLogps, seqs: Sequence[TokenSeq], micro: int, packed: bool,
          pad: int, device: Any) -> tuple[list[float], list[int], list[list[tuple[int, float]]]]:
    """Per sequence: entropy sum, completion tokens, and (token id, log-prob) pairs."""
    sums, counts, tokens = [], [], []
    with torch.no_grad():
        for start in range(0, len(seqs), micro):
            chunk = list(seqs[start : start + micro])
            batch = batching.make_batch(chunk, packed, pad).to(device)
            logps, entropy = logprobs.batch_token_entropy(module, batch)
            per_seq = torch.zeros(len(chunk), dtype=torch.float64, device=device)
            per_seq.index_add_(0, batch.seq_index, entropy.double())
            sums += per_seq.tolist()
            counts += batch.lengths.tolist()
            flat = list(zip(batch.targets.tolist(), logps.tolist(), strict=True))
            offset = 0
            for n in batch.lengths.tolist():
                tokens.append(flat[offset : offset + n])
                offset += n
    return sums, counts, tokens


def entropy_row(step: int, checkpoint: str, kind: str, sums: list[float],
                counts: list[int]) -> dict[str, Any]:
    """Mean entropy over ALL completion tokens of the type (a token mean, not a mean of
    per-sequence means: long responses weigh by their length)."""
    n_tokens = int(sum(counts))
    mean = sum(sums) / n_tokens if n_tokens else math.nan
    return {"step": step, "checkpoint": checkpoint, "sample_type": kind,
            "n_sequences": len(counts), "n_tokens": n_tokens, "mean_entropy": mean}


# ---------------------------------------------------------------- the job


def run_token_analysis(manifest_path: str, pairs_path: str, responses_path: str,
                       params: dict[str, Any], out_entropy: str, out_tokens: str) -> None:
    """Entropy of every checkpoint (CSV) and the chosen responses' per-token log-probs at
    step 0 and the "after" step (parquet); sharded over the job's processes."""
    import pandas as pd
    from accelerate.utils import gather_object

    from redi.eval.benchmarks import load_benchmark

    state = distributed_state()
    manifest = read_json(manifest_path)
    steps = checkpoint_steps(manifest)
    keep = {0, after_step(manifest, params["fig10_after"])}
    tokenizer = load_tokenizer(steps[0][1])
    _, train = train_samples(tokenizer, pairs_path, params)
    responses = pd.read_parquet(responses_path)
    problems = {item["id"]: item["problem"] for item in load_benchmark(params["benchmark"])}
    attn, packed = attention.training_attention()
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    rows, token_rows = [], []
    for step, path in steps:
        module = logprobs.TokenLogps(load_causal_lm(path, dtype, attn_implementation=attn))
        module = module.to(state.device).eval()
        for sample in [*train, generated_sample(tokenizer, responses, problems, step, params)]:
            mine = list(range(state.process_index, len(sample.seqs), state.num_processes))
            sums, counts, tokens = score(module, [sample.seqs[i] for i in mine],
                                         params["micro_batch"], packed, pad_id(tokenizer),
                                         state.device)
            result = gather_object([(mine, sums, counts, tokens)]) if state.num_processes > 1 \
                else [(mine, sums, counts, tokens)]
            merged = sorted((i, s, c, t) for part in result for i, s, c, t in zip(*part,
                                                                                  strict=True))
            rows.append(entropy_row(step, path, sample.kind, [m[1] for m in merged],
                                    [m[2] for m in merged]))
            if sample.kind == "train_chosen" and step in keep:
                token_rows += [(step, i, tok, lp) for i, _, _, t in merged for tok, lp in t]
        log.info("step %d: %s", step, {r["sample_type"]: round(r["mean_entropy"], 4)
                                       for r in rows if r["step"] == step})
        del module
    if state.is_main_process:
        write_csv(out_entropy, pd.DataFrame(rows, columns=ENTROPY_COLUMNS))
        write_parquet(out_tokens, pd.DataFrame(token_rows, columns=TOKEN_COLUMNS))
    state.wait_for_everyone()
