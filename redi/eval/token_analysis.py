"""Token-level dynamics of a REDI run (paper appendix E, Figures 9 and 10).

At every checkpoint of the run (step 0 = its init SFT model), teacher-forced, the
mean entropy of the model's next-token distribution over all completion tokens of
three sample types:

* ``train_chosen`` / ``train_rejected``: the chosen / rejected responses of a fixed
  set of training pairs;
* ``test_generated``: responses the same checkpoint generated on test prompts --
  Figure 8's generations (``gen_stats``, the final protocol).

Which pairs and generations (``analysis.selection``): ``sample``, a seeded sample
(``n_pairs`` pairs, ``n_generated`` generations per step); ``paper``, the prompts the
paper analysed (``redi/report/paper/paper_sample.csv``: the rows the authors' ``preprocess_data.py``
drew with ``random.Random(42)``), as far as the project's data holds them.

For Figure 10 the per-token log-probs of the chosen responses are kept at step 0
and at the "after" checkpoint; ``redi.report.token_stats`` groups them by vocabulary token.
Entropy and log-probs come from one chunked pass (no [tokens x vocab] logits).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
PAPER_SAMPLE = Path(__file__).resolve().parents[1] / "report" / "paper" / "paper_sample.csv"


class PaperSampleError(ValueError):
    """A prompt of the paper's sample is not in the data the job reads."""


@dataclass(frozen=True)
class PaperItem:
    """One prompt the paper analysed: the ``row`` the authors drew from ``source``; a
    test prompt names the project's benchmark, its item ids there (the rllm file's,
    then the Hub copy's) and its answer (a check that the id is the same problem)."""

    kind: str
    source: str
    row: int
    benchmark: str
    ids: tuple[str, ...]
    answer: str
    what: str


def paper_items(path: str | os.PathLike | None = None) -> list[PaperItem]:
    """The paper's sample (default ``PAPER_SAMPLE``), in the authors' draw order."""
    with open(path or PAPER_SAMPLE, newline="") as f:
        return [PaperItem(r["kind"], r["source"], int(r["row"]), r["benchmark"],
                          tuple(i for i in r["ids"].split("|") if i), r["answer"], r["what"])
                for r in csv.DictReader(f)]


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


def paper_pair_rows(n_pairs: int, items: Sequence[PaperItem]) -> list[int]:
    """The training pairs the authors drew: rows of their length-filtered pairs, which
    the project's pairs file reproduces row for row (same filters, same shuffle)."""
    rows = [item.row for item in items if item.kind == "train"]
    missing = [r for r in rows if r >= n_pairs]
    if missing:
        raise PaperSampleError(
            f"analysis.selection = paper: training pair rows {missing} of the authors' draw "
            f"are not in the pairs file ({n_pairs} rows); the paper's pairs need the full "
            "OpenR1-Math-Raw pair set (selection: sample draws from any pairs file)")
    return rows


def pair_rows(n_pairs: int, params: dict[str, Any]) -> list[int]:
    """The pair indices scored at every checkpoint, by ``analysis.selection``."""
    if params.get("selection", "sample") == "paper":
        return paper_pair_rows(n_pairs, paper_items())
    return pair_sample(n_pairs, params["n_pairs"], params["seed"])


def train_samples(tokenizer: Any, pairs_path: str | os.PathLike, params: dict[str, Any]
                  ) -> tuple[list[int], list[Sample]]:
    """The chosen and rejected sequences of the selected pairs (stage-2 layout)."""
    from redi.train.train_data import pair_items

    items = pair_items(tokenizer, pairs_path, params["max_prompt_length"], params["max_length"])
    chosen = pair_rows(len(items), params)
    return chosen, [Sample("train_chosen", [items[i].seqs[0] for i in chosen]),
                    Sample("train_rejected", [items[i].seqs[1] for i in chosen])]


def paper_test_ids(items: Sequence[PaperItem], benchmark: str, bench_items: Sequence[dict]
                   ) -> tuple[list[str], list[str]]:
    """The ids of the paper's test prompts in the generated ``benchmark``, and one line
    per test prompt left out (why). A named prompt of that benchmark that its file
    lacks is an error, not a silent omission."""
    by_id = {item["id"]: item for item in bench_items}
    ids, left_out = [], []
    for item in (i for i in items if i.kind == "test"):
        where = f"{item.what} ({item.source} row {item.row})"
        if not item.benchmark:
            left_out.append(f"{where}: not among the project's benchmarks")
        elif item.benchmark != benchmark:
            left_out.append(f"{where}: no generations of it (the job scores Figure 8's "
                            f"{benchmark} generations)")
        else:
            ids.append(_bench_id(item, where, benchmark, by_id))
    return ids, left_out


def _bench_id(item: PaperItem, where: str, benchmark: str, by_id: dict[str, dict]) -> str:
    found = next((by_id[i] for i in item.ids if i in by_id), None)
    if found is None:
        raise PaperSampleError(f"analysis.selection = paper: {where} is not in benchmark "
                               f"{benchmark}: no item with id {' or '.join(item.ids)}")
    if str(found["answer"]) != item.answer:
        raise PaperSampleError(f"analysis.selection = paper: {where}: item {found['id']} of "
                               f"{benchmark} has answer {found['answer']!r}, not {item.answer!r} "
                               "(another problem under that id)")
    return found["id"]


def paper_generation_keys(keys: Sequence[tuple[str, int]], ids: Sequence[str], step: int
                          ) -> set[tuple[str, int]]:
    """The authors generated once per test prompt and checkpoint: the first sample of
    each named problem."""
    first: dict[str, tuple[str, int]] = {}
    for pid, sample in sorted(keys):
        first.setdefault(pid, (pid, sample))
    missing = [i for i in ids if i not in first]
    if missing:
        raise PaperSampleError(f"analysis.selection = paper: no generation of {missing} at "
                               f"step {step} in the responses")
    return {first[i] for i in ids}


def generated_keys(rows: Any, step: int, params: dict[str, Any], paper_ids: Sequence[str]
                   ) -> set[tuple[str, int]]:
    """(problem id, sample) of the generations scored at ``step``."""
    keys = sorted(zip(rows["problem_id"], rows["sample"], strict=True))
    if params.get("selection", "sample") == "paper":
        return paper_generation_keys(keys, paper_ids, step)
    return set(random.Random(params["seed"] + step).sample(keys, min(params["n_generated"],
                                                                     len(keys))))


def generated_sample(tokenizer: Any, responses: Any, problems: dict[str, str], step: int,
                     params: dict[str, Any], paper_ids: Sequence[str] = ()) -> Sample:
    """The selected generations of the checkpoint at ``step``, teacher-forced after the
    same prompt (the forced think prefix is part of the prompt, not scored)."""
    rows = responses[responses["step"] == step]
    chosen = generated_keys(rows, step, params, paper_ids)
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


def log_pairs(pairs_path: str | os.PathLike, rows: list[int], params: dict[str, Any]) -> None:
    """The scored pairs, with their OpenR1-Math-Raw rows (``original_index``) where the
    pairs file has them: what identifies the paper's training prompts."""
    import pyarrow.parquet as pq

    origin = None
    if "original_index" in pq.read_schema(pairs_path).names:  # read that column only
        column = pq.read_table(pairs_path, columns=["original_index"]).column(0).to_pylist()
        origin = [column[r] for r in rows]
    log.info("Figures 9/10 selection: %s; training pairs: rows %s of %s (OpenR1-Math-Raw "
             "original_index %s)", params.get("selection", "sample"), rows, pairs_path, origin)


def generated_selection(params: dict[str, Any], bench_items: Sequence[dict]) -> list[str]:
    """The ids of the paper's test prompts among the generations ([] for ``sample``);
    logs what the job scores and, one line each, what the paper names that it cannot."""
    if params.get("selection", "sample") != "paper":
        log.info("generated: a seeded sample (seed %d) of %d generations per checkpoint",
                 params["seed"], params["n_generated"])
        return []
    ids, left_out = paper_test_ids(paper_items(), params["benchmark"]["name"], bench_items)
    log.info("generated: the first sample of %s per checkpoint (%s)", ids, PAPER_SAMPLE.name)
    for line in left_out:
        log.warning("paper sample not matched: %s", line)
    return ids


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
    bench_items = load_benchmark(params["benchmark"])
    problems = {item["id"]: item["problem"] for item in bench_items}
    paper_ids = generated_selection(params, bench_items)  # before the pairs' tokenization
    tokenizer = load_tokenizer(steps[0][1])
    pair_index, train = train_samples(tokenizer, pairs_path, params)
    log_pairs(pairs_path, pair_index, params)
    responses = pd.read_parquet(responses_path)
    attn, packed = attention.training_attention()
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    rows, token_rows = [], []
    for step, path in steps:
        module = logprobs.TokenLogps(load_causal_lm(path, dtype, attn_implementation=attn))
        module = module.to(state.device).eval()
        generated = generated_sample(tokenizer, responses, problems, step, params, paper_ids)
        for sample in [*train, generated]:
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
