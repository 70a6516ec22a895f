"""Training examples and the optimizer-step plan.

An example (``Item``) is the objective's ``arity`` token sequences: ``(response,)``
for SFT on sft.parquet, ``(chosen, rejected)`` for the objectives trained on
pairs.parquet (with the DPO reference log-probs when the objective needs them).
The step plan says which examples every optimizer step sees, and which of them
each process's micro-batches take.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from redi.data.prompts import encode_completions, encode_prompts, sft_suffix, stage2_suffix
from redi.train import batching
from redi.train.batching import TokenSeq


@dataclass
class Item:
    """One training example: ``(sequence,)`` for SFT, ``(chosen, rejected)`` for pairs."""

    seqs: tuple[TokenSeq, ...]
    ref: tuple[float, float] | None = None


def read_parquet_columns(path: str | os.PathLike, columns: list[str]) -> dict[str, list]:
    import pyarrow.parquet as pq  # lighter than pandas on the critical start-up path

    return pq.read_table(path, columns=columns).to_pydict()


def sft_items(tokenizer: Any, path: str | os.PathLike, max_length: int) -> list[Item]:
    rows = read_parquet_columns(path, ["problem", "response"])
    prompts = encode_prompts(tokenizer, rows["problem"])
    suffix = sft_suffix(tokenizer)
    completions = encode_completions(tokenizer, rows["response"], suffix)
    return [
        Item((batching.sft_sequence(p, c, max_length),))
        for p, c in zip(prompts, completions, strict=True)
    ]


def read_ref_logps(path: str | os.PathLike, n_pairs: int) -> list[tuple[float, float]]:
    """Reference log-prob sums (chosen, rejected) of pairs 0..n_pairs-1, in pair order."""
    ref = read_parquet_columns(path, ["pair_index", "ref_chosen_logps", "ref_rejected_logps"])
    if sorted(ref["pair_index"]) != list(range(n_pairs)):
        raise ValueError(f"{path} does not cover the {n_pairs} pairs")
    out: list[tuple[float, float]] = [(0.0, 0.0)] * n_pairs
    for i, c, r in zip(ref["pair_index"], ref["ref_chosen_logps"], ref["ref_rejected_logps"],
                       strict=True):
        out[i] = (float(c), float(r))
    return out


def pair_items(
    tokenizer: Any,
    path: str | os.PathLike,
    max_prompt_length: int,
    max_length: int,
    ref_path: str | os.PathLike | None = None,
) -> list[Item]:
    rows = read_parquet_columns(path, ["problem", "chosen", "rejected"])
    prompts = encode_prompts(tokenizer, rows["problem"])
    suffix = stage2_suffix(tokenizer)
    chosen = encode_completions(tokenizer, rows["chosen"], suffix)
    rejected = encode_completions(tokenizer, rows["rejected"], suffix)
    refs: list[tuple[float, float] | None] = (
        list(read_ref_logps(ref_path, len(prompts))) if ref_path is not None
        else [None] * len(prompts))
    return [
        Item(batching.pair_sequences(p, c, r, max_prompt_length, max_length), ref)
        for p, c, r, ref in zip(prompts, chosen, rejected, refs, strict=True)
    ]


def step_plan(
    n_items: int, global_batch: int, epochs: int, shuffle_seed: int | None
) -> list[list[int]]:
    """Item indices of every optimizer step. File order, or a seeded permutation per
    epoch (``shuffle_seed + epoch``, so a resumed run sees the same order). The
    last batch of an epoch may be smaller (as HF Trainer)."""
    import torch

    plan = []
    for epoch in range(epochs):
        if shuffle_seed is None:
            order = list(range(n_items))
        else:
            gen = torch.Generator().manual_seed(shuffle_seed + epoch)
            order = torch.randperm(n_items, generator=gen).tolist()
        plan += [order[i : i + global_batch] for i in range(0, n_items, global_batch)]
    return plan


def rank_micro_batches(indices: list[int], rank: int, world: int, accum: int) -> list[list[int]]:
    """This process's ``accum`` micro-batches of one step (some may be empty in a
    short last step: every process still runs ``accum`` forwards)."""
    mine = indices[rank::world]
    base, extra = divmod(len(mine), accum)
    out, pos = [], 0
    for k in range(accum):
        size = base + (1 if k < extra else 0)
        out.append(mine[pos : pos + size])
        pos += size
    return out


def seedable_sampler_order(n_items: int, seed: int, epoch: int = 0) -> list[int]:
    """The order the authors' HF Trainer draws: its ``RandomSampler`` becomes accelerate's
    ``SeedableRandomSampler``, which reseeds a fresh generator with ``seed + epoch``
    (``seed`` = the Trainer's ``set_seed``, 42) and yields ``torch.randperm``."""
    import torch

    gen = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n_items, generator=gen).tolist()


def shard_batches(order: list[int], processes: int, micro_batch: int, rank: int) -> list[list[int]]:
    """Process ``rank``'s micro-batches of ``order`` as accelerate's ``BatchSamplerShard``
    deals them (no split, even batches, no drop_last): batch i to process i mod
    ``processes``, the stream first padded from its own start so that every process gets
    the same number of full batches. One process is not sharded: its last batch may be
    short."""
    if processes == 1:
        return [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)]
    stride = processes * micro_batch
    head = order[:stride]
    while head and len(head) < stride:  # fewer items than one round: repeat them
        head += head
    padded = order + head[: -len(order) % stride] if order else []
    batches = [padded[i : i + micro_batch] for i in range(0, len(padded), micro_batch)]
    return batches[rank::processes]


def authors_step_plan(n_items: int, seed: int, epochs: int, processes: int, micro_batch: int,
                      accum: int) -> list[list[int]]:
    """Item indices of every accumulation window in the authors' order: per epoch the
    seedable sampler's permutation, sharded as accelerate shards it over ``processes``;
    window k holds micro-batches ``k·accum … k·accum + accum − 1`` of every process, micro-
    batch by micro-batch and process by process within one, so that
    ``authors_micro_batches`` gives process r its own. The last window of an epoch may be
    short; ``authors_plan`` cuts the windows at the Trainer's step count."""
    plan = []
    for epoch in range(epochs):
        order = seedable_sampler_order(n_items, seed, epoch)
        shards = [shard_batches(order, processes, micro_batch, r) for r in range(processes)]
        for k in range(0, len(shards[0]), accum):
            plan.append([i for j in range(k, min(k + accum, len(shards[0])))
                         for r in range(processes) for i in shards[r][j]])
    return plan


DATA_ORDERS = ("file", "authors")


def batches_per_process(n_items: int, processes: int, micro_batch: int) -> int:
    """Micro-batches per process and epoch of accelerate's sharded loader (even batches:
    the stream padded to a multiple of ``processes × micro_batch``)."""
    return math.ceil(n_items / (processes * micro_batch))


def trainer_steps_per_epoch(n_items: int, processes: int, micro_batch: int, accum: int) -> int:
    """The pinned Trainer's ``num_update_steps_per_epoch`` (transformers 4.50,
    ``set_initial_training_values``): ``max(batches // accum, 1)``, a floor."""
    return max(batches_per_process(n_items, processes, micro_batch) // accum, 1)


def trainer_max_steps(n_items: int, processes: int, micro_batch: int, accum: int,
                      epochs: int) -> int:
    """The pinned Trainer's ``max_steps`` = epochs × its steps per epoch. Its loop stops
    when ``global_step`` reaches it, so with one epoch the last partial accumulation
    window is never stepped (with several, earlier epochs' partial windows are)."""
    return epochs * trainer_steps_per_epoch(n_items, processes, micro_batch, accum)


def authors_plan(n_items: int, seed: int, epochs: int, processes: int, micro_batch: int,
                 accum: int) -> list[list[int]]:
    """The optimizer steps the authors' Trainer takes: the sampler's windows
    (``authors_step_plan``) up to its ``max_steps``. Exact for one epoch (stage 2). Over
    several epochs the Trainer's last window of an epoch draws ``n_items mod accum``
    micro-batches (its ``remainder`` counts examples, not micro-batches); where that is
    fewer than the leftover ones it skips the rest, which this does not copy."""
    plan = authors_step_plan(n_items, seed, epochs, processes, micro_batch, accum)
    return plan[: trainer_max_steps(n_items, processes, micro_batch, accum, epochs)]


def authors_micro_batches(indices: list[int], rank: int, world: int, accum: int,
                          micro_batch: int) -> list[list[int]]:
    """Process ``rank``'s ``accum`` micro-batches of one ``authors_step_plan`` step.
    Every micro-batch of the step is full except, with one process, the epoch's last, so
    cutting the step into ``micro_batch`` items gives them in order; a short window
    leaves the rest empty (every process still runs ``accum`` forwards)."""
    chunks = [indices[i : i + micro_batch] for i in range(0, len(indices), micro_batch)]
    mine = chunks[rank::world]
    return mine + [[] for _ in range(accum - len(mine))]


def run_plan(n_items: int, params: dict[str, Any], shuffle: bool, world: int,
             accum: int) -> tuple[list[list[int]], int]:
    """(the item indices of every optimizer step, steps per epoch) for the run's
    ``data_order``: ``file`` (``step_plan``: file order, or a seeded permutation per
    epoch when the objective shuffles) or ``authors`` (``authors_plan`` over this run's
    processes, with the Trainer's step arithmetic)."""
    order = params.get("data_order", "file")
    if order not in DATA_ORDERS:
        raise ValueError(f"data_order {order!r} is not one of {DATA_ORDERS}")
    if order == "authors":
        plan = authors_plan(n_items, params["seed"], params["epochs"], world,
                            params["micro_batch"], accum)
        return plan, trainer_steps_per_epoch(n_items, world, params["micro_batch"], accum)
    plan = step_plan(n_items, params["global_batch"], params["epochs"],
                     params["seed"] if shuffle else None)
    return plan, math.ceil(n_items / params["global_batch"])


def micro_batches(indices: list[int], params: dict[str, Any], rank: int, world: int,
                  accum: int) -> list[list[int]]:
    """This process's ``accum`` micro-batches of one step of ``run_plan``'s plan."""
    if params.get("data_order", "file") == "authors":
        return authors_micro_batches(indices, rank, world, accum, params["micro_batch"])
    return rank_micro_batches(indices, rank, world, accum)
