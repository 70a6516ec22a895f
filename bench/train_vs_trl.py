"""Our training engine vs TRL 1.16 on the same CPU, model, weights and token ids.

Model: a randomly initialised Qwen2 with the real 151,936-token vocabulary, hidden 256,
2 layers, tied embeddings (saved once as a Hugging Face folder). Data: 64 pairs of
100-1,500-token responses (fixed seed) in a word-level tokenizer whose 151,936 ids are
the model's, so every id is reachable. The token ids are built ONCE with our own
encoding (``sft_items`` / ``pair_items`` of redi, see ``ENGINE_MODULES``: chat-templated prompt +
completion + end tokens) and TRL gets exactly those ids, pre-tokenized.

Configurations, each in a FRESH process (peak RSS = its VmHWM), A/B alternated,
median of ``--reps`` repetitions; global batch 8, micro-batch 2, fp32, one process,
``torch.set_num_threads(--threads)``, gradient checkpointing off on both sides:

* ``sft_ours``: ``redi.train.training.run_sft`` (completion-only token-mean NLL);
* ``sft_trl`` / ``sft_trl_pf``: ``trl.SFTTrainer`` with ``completion_only_loss=True``,
  padded / ``padding_free=True``;
* ``ref_ours``: redi's ``compute_ref_logps`` (whole call: tokenisation and
  model load included);
* ``dpo_ours``: ``redi.train.training.run_stage2`` (DPO, beta 0.1) on ``ref_ours``'s file;
* ``dpo_trl``: ``trl.DPOTrainer(precompute_ref_log_probs=True)``; its precompute is timed
  separately (peak RSS reset after it, where the kernel allows);
* ``redi_ours``: ``run_stage2`` with REDI (alpha 0.8).

Tokens/s count real tokens (prompt + completion of every sequence, padding excluded)
over steps 2..N (the first step is warm-up; ``all steps`` includes it). Our log.csv
gives per-step tokens and times; TRL's steps are timed by a callback and their tokens
are known because TRL sees the examples in our step order (``sequential`` sampler).

    python bench/train_vs_trl.py            # the default sizes (about an hour per rep)
    python bench/train_vs_trl.py --quick    # tiny sizes, one rep (smoke test)
    python bench/train_vs_trl.py --pairs 16 --workdir W --json r.json   # 2 steps per run
    python bench/train_vs_trl.py --report r.json                        # print r.json again
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

FULL = {
    "vocab_size": 151_936, "hidden_size": 256, "intermediate_size": 1024,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "pairs": 64, "response_tokens": [100, 1500], "prompt_words": [20, 80],
    "global_batch": 8, "micro_batch": 2, "reps": 3,
}
QUICK = {
    **FULL, "vocab_size": 8192, "hidden_size": 64, "intermediate_size": 128,
    "pairs": 8, "response_tokens": [10, 60], "prompt_words": [5, 15],
    "global_batch": 4, "micro_batch": 2, "reps": 1,
}
SEED = 1234
LR = 1e-5
BETA, ALPHA = 0.1, 0.8
NO_SAVE = 10**9  # save_every_steps: only the final step saves (after its timing)
# (group, side, configs): A/B alternation happens between the sides of a group
GROUPS = [
    ("sft", "ours", ["sft_ours"]),
    ("sft", "trl", ["sft_trl", "sft_trl_pf"]),
    ("dpo", "ours", ["ref_ours", "dpo_ours"]),
    ("dpo", "trl", ["dpo_trl"]),
    ("redi", "ours", ["redi_ours"]),
]
CONFIGS = [c for _, _, cs in GROUPS for c in cs]
LOSS_TOL = 1e-4  # relative agreement of the first-step losses


# ===================================================================== engine

# ===================================================================== setup


def build_tokenizer(vocab_size: int) -> Any:
    """A Qwen2 byte-level BPE tokenizer with exactly ``vocab_size`` ids: the 256 byte
    symbols, the words " a" .. " zz", " aaa", ... (one token each, built by merges
    "Ġ"+letter, "Ġa"+letter, ...) until the vocabulary is full, and Qwen's three special
    tokens last. It is ``transformers``' own ``Qwen2Tokenizer`` -- what AutoTokenizer
    loads for a ``qwen2`` folder -- so our engine and this script see the same ids."""
    import itertools
    import string

    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    from redi.data.prompts import ENDOFTEXT, IM_END, IM_START, QWEN_MATH_CHAT_TEMPLATE

    specials = [ENDOFTEXT, IM_START, IM_END]
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    merges: list[tuple[str, str]] = []
    room = vocab_size - len(vocab) - len(specials)
    for n in itertools.count(1):
        for letters in itertools.product(string.ascii_lowercase, repeat=n):
            if room == 0:
                break
            word = "\u0120" + "".join(letters)
            merges.append((word[:-1], word[-1]))
            vocab[word] = len(vocab)
            room -= 1
        if room == 0:
            break
    for token in specials:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END], model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN_MATH_CHAT_TEMPLATE
    if len(tokenizer) != vocab_size:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} ids, expected {vocab_size}")
    return tokenizer


def word_list(vocab_size: int) -> list[str]:
    """The one-token words of ``build_tokenizer(vocab_size)`` (without their space)."""
    import itertools
    import string

    out: list[str] = []
    room = vocab_size - 256 - 3
    for n in itertools.count(1):
        for letters in itertools.product(string.ascii_lowercase, repeat=n):
            if len(out) == room:
                return out
            out.append("".join(letters))
    return out


def build_model(tokenizer: Any, sizes: dict[str, Any], out: Path) -> None:
    from redi.model import base_model

    params = {k: sizes[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                    "num_attention_heads", "num_key_value_heads")}
    params.update(max_position_embeddings=4096, rope_theta=10000.0, seed=SEED)
    model = base_model.tiny_model(tokenizer, params)
    base_model.save(model, tokenizer, out)


def words(rng: random.Random, n: int, vocab: list[str]) -> str:
    """``n`` random one-token words; the first is preceded by a space too (a text that
    starts a chat turn would otherwise split its first word into bytes)."""
    return "".join(" " + rng.choice(vocab) for _ in range(n))


def write_data(sizes: dict[str, Any], workdir: Path) -> None:
    import pandas as pd

    rng = random.Random(SEED)
    vocab = word_list(sizes["vocab_size"])
    lo, hi = sizes["response_tokens"]
    rows = []
    for k in range(sizes["pairs"]):
        problem = words(rng, rng.randint(*sizes["prompt_words"]), vocab)
        chosen = words(rng, rng.randint(lo, hi), vocab)
        rejected = words(rng, rng.randint(lo, hi), vocab)
        rows.append({"problem": problem, "answer": str(k), "response": chosen,
                     "chosen": chosen, "rejected": rejected})
    frame = pd.DataFrame(rows)
    frame[["problem", "answer", "response"]].to_parquet(workdir / "sft.parquet")
    frame[["problem", "answer", "chosen", "rejected"]].to_parquet(workdir / "pairs.parquet")


def our_params(sizes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from redi.workflow.config import OPTIMIZER

    common = {"epochs": 1, "lr": LR, "global_batch": sizes["global_batch"],
              "micro_batch": sizes["micro_batch"], "save_every_steps": NO_SAVE,
              "gradient_checkpointing": False, **OPTIMIZER}
    stage2 = {**common, "stage": "stage2", "init": "bench", "paper_lr": LR,
              "max_prompt_length": 4096, "max_length": 8192}
    return {
        "sft": {**common, "stage": "sft", "run": "bench_sft", "max_length": 8192},
        "dpo": {**stage2, "run": "bench_dpo", "objective": "dpo", "beta": BETA},
        "redi": {**stage2, "run": "bench_redi", "objective": "redi", "alpha": ALPHA},
    }


def token_ids(workdir: Path, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ids our engine trains on, in our step order (what TRL will be given)."""
    from transformers import AutoTokenizer

    from redi.train import train_data

    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    sft = [it.seqs[0] for it in train_data.sft_items(tokenizer, workdir / "sft.parquet", 8192)]
    p = params["sft"]
    plan = train_data.step_plan(len(sft), p["global_batch"], 1, p["seed"])
    sft_order = [i for step in plan for i in step]
    pairs = [it.seqs for it in train_data.pair_items(tokenizer, workdir / "pairs.parquet",
                                                     4096, 8192)]
    check_lengths(workdir, pairs)
    return {
        "sft": [{"ids": list(sft[i].ids), "n_prompt": sft[i].n_prompt} for i in sft_order],
        "sft_step_tokens": [sum(len(sft[i].ids) for i in step) for step in plan],
        "pairs": [{"prompt": list(c.ids[: c.n_prompt]), "chosen": list(c.ids[c.n_prompt:]),
                   "rejected": list(r.ids[r.n_prompt:])} for c, r in pairs],
        "pair_step_tokens": [
            sum(len(c.ids) + len(r.ids) for c, r in pairs[i: i + p["global_batch"]])
            for i in range(0, len(pairs), p["global_batch"])
        ],
    }


def check_lengths(workdir: Path, pairs: list[tuple[Any, Any]]) -> None:
    """Every word is one token: a completion is its words + the 3 stage-2 end tokens."""
    import pyarrow.parquet as pq

    table = pq.read_table(workdir / "pairs.parquet", columns=["chosen"]).to_pydict()
    for text, (chosen, _) in zip(table["chosen"], pairs, strict=True):
        if chosen.n_completion != len(text.split()) + 3:
            raise RuntimeError("a synthetic word did not encode as one token")


def prepare(sizes: dict[str, Any], workdir: Path) -> Path:
    """Model folder, data, the stage-2 init manifest and the spec every child reads."""
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(sizes["vocab_size"])
    build_model(tokenizer, sizes, workdir / "model")
    write_data(sizes, workdir)
    (workdir / "init_manifest.json").write_text(
        json.dumps({"run": "bench_init", "final_checkpoint": str(workdir / "model")}))
    params = our_params(sizes)
    ids = token_ids(workdir, params)
    spec = {"sizes": sizes, "workdir": str(workdir), "params": params, **ids}
    path = workdir / "spec.json"
    path.write_text(json.dumps(spec))
    return path


# ==================================================================== children


def steady(step_tokens: list[int], step_ends: list[float], start: float) -> dict[str, Any]:
    """Tokens/s over steps 2..N (and over all steps) from per-step end times."""
    total = sum(step_tokens)
    out = {"steps": len(step_tokens), "tokens": total,
           "time_s": round(step_ends[-1] - start, 3),
           "tokens_per_s_all": total / (step_ends[-1] - start)}
    if len(step_tokens) > 1:
        out["tokens_per_s"] = sum(step_tokens[1:]) / (step_ends[-1] - step_ends[0])
    else:
        out["tokens_per_s"] = out["tokens_per_s_all"]
    return out


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def ours_summary(log_csv: Path, hwm_before_save: list[int]) -> dict[str, Any]:
    rows = read_log(log_csv)
    out = steady([int(r["tokens"]) for r in rows], [float(r["elapsed_s"]) for r in rows], 0.0)
    out.update(first_loss=float(rows[0]["loss"]), last_loss=float(rows[-1]["loss"]),
               peak_rss=benchlib.peak_rss_bytes())
    if hwm_before_save:
        out["peak_rss_before_final_save"] = hwm_before_save[-1]
    return out


def child_ours(spec: dict[str, Any], config: str, rep: int) -> dict[str, Any]:
    from redi.train import training

    work = Path(spec["workdir"])
    run_dir = work / "runs" / f"{config}-{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    step_tokens = spec["sft_step_tokens" if config == "sft_ours" else "pair_step_tokens"]
    n_steps = len(step_tokens)
    marks: list[int] = []

    def after_step(step: int) -> None:
        if step == n_steps - 1:  # the last step before the final checkpoint save
            marks.append(benchlib.peak_rss_bytes())

    hooks = training.Hooks(after_step=after_step)
    manifest, log_csv = run_dir / "manifest.json", run_dir / "log.csv"
    if config == "sft_ours":
        training.run_sft(spec["params"]["sft"], work / "sft.parquet", work / "model",
                         manifest, log_csv, hooks)
    else:
        kind = config.split("_")[0]
        ref = work / "ref_ours-0.parquet" if kind == "dpo" else None
        training.run_stage2(spec["params"][kind], work / "pairs.parquet",
                            work / "init_manifest.json", manifest, log_csv, ref, hooks)
    out = ours_summary(log_csv, marks)
    if [int(r["tokens"]) for r in read_log(log_csv)] != step_tokens:
        raise RuntimeError("our run's per-step tokens differ from the ids given to TRL")
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def child_ref_ours(spec: dict[str, Any], rep: int) -> dict[str, Any]:
    from redi.train import ref_logps

    work = Path(spec["workdir"])
    out = work / f"ref_ours-{rep}.parquet"
    start = time.perf_counter()
    ref_logps.compute_ref_logps(spec["params"]["dpo"], work / "pairs.parquet",
                               work / "init_manifest.json", out)
    elapsed = time.perf_counter() - start
    peak = benchlib.peak_rss_bytes()
    setup = ref_setup_seconds(spec)
    tokens = sum(spec["pair_step_tokens"])
    return {"time_s": round(elapsed, 3), "tokens": tokens, "tokens_per_s": tokens / elapsed,
            "setup_s": round(setup, 3), "tokens_per_s_loop": tokens / max(1e-9, elapsed - setup),
            "peak_rss": peak}


def ref_setup_seconds(spec: dict[str, Any]) -> float:
    """What ``compute_ref_logps`` spends before its loop (tokenizer, tokenisation, model
    load), timed again by the same calls: TRL's precompute figure has none of it."""
    import torch
    from transformers import AutoTokenizer

    from redi.model import models
    from redi.train import train_data

    work = Path(spec["workdir"])
    p = spec["params"]["dpo"]
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    train_data.pair_items(tokenizer, work / "pairs.parquet", p["max_prompt_length"],
                         p["max_length"])
    models.load_causal_lm(work / "model", torch.float32)
    return time.perf_counter() - start


def trl_common(spec: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """TrainingArguments shared by both TRL trainers, matched to our params."""
    p = spec["params"]["sft"]
    n_steps = len(spec["sft_step_tokens"])
    return {
        "output_dir": out_dir, "per_device_train_batch_size": p["micro_batch"],
        "gradient_accumulation_steps": p["global_batch"] // p["micro_batch"],
        "num_train_epochs": 1, "learning_rate": LR, "adam_beta1": p["adam_beta1"],
        "adam_beta2": p["adam_beta2"], "adam_epsilon": p["adam_eps"],
        "weight_decay": p["weight_decay"], "lr_scheduler_type": "linear",
        "warmup_steps": math.ceil(p["warmup_ratio"] * n_steps), "max_grad_norm": p["max_grad_norm"],
        "seed": p["seed"], "bf16": False, "fp16": False, "use_cpu": True,
        "gradient_checkpointing": False, "logging_steps": 1, "save_strategy": "no",
        "report_to": "none", "disable_tqdm": True, "train_sampling_strategy": "sequential",
        "dataloader_num_workers": 0, "max_length": None,
    }


def step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall clock at the start of the loop and at every optimizer step's end; losses."""

        def __init__(self) -> None:
            self.start = 0.0
            self.ends: list[float] = []
            self.losses: list[float] = []

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not self.start:
                self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    return StepTimer()


def load_trl_model(spec: dict[str, Any]) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec["workdir"]) / "model"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="sdpa")
    return model, AutoTokenizer.from_pretrained(path)


def trl_summary(timer: Any, step_tokens: list[int]) -> dict[str, Any]:
    if len(timer.ends) != len(step_tokens):
        raise RuntimeError(f"TRL ran {len(timer.ends)} steps, expected {len(step_tokens)}")
    out = steady(step_tokens, timer.ends, timer.start)
    out.update(first_loss=timer.losses[0], last_loss=timer.losses[-1],
               peak_rss=benchlib.peak_rss_bytes())
    return out


def child_sft_trl(spec: dict[str, Any], padding_free: bool) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = spec["sft"]
    data = Dataset.from_dict({
        "input_ids": [r["ids"] for r in rows],
        "completion_mask": [[0] * r["n_prompt"] + [1] * (len(r["ids"]) - r["n_prompt"])
                            for r in rows],
    })
    model, tokenizer = load_trl_model(spec)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(**trl_common(spec, tmp), completion_only_loss=True,
                         padding_free=padding_free)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data,
                             processing_class=tokenizer, callbacks=[timer])
        seen = trainer.train_dataset["input_ids"]
        if seen != [r["ids"] for r in rows]:
            raise RuntimeError("SFTTrainer changed the token ids")
        trainer.train()
    return trl_summary(timer, spec["sft_step_tokens"])


def pretokenized_dpo_trainer() -> Any:
    """``DPOTrainer`` that trains on our ids and times its reference precompute.

    TRL 1.16's ``DPOTrainer._prepare_dataset`` always (re)tokenises ``prompt`` /
    ``chosen`` / ``rejected`` text; a dataset that already has its own columns
    (``prompt_ids``, ``chosen_ids``, ``rejected_ids``, what ``_prepare_dataset``
    produces) is passed through unchanged instead.
    """
    from trl import DPOTrainer

    class PreTokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any,
                             dataset_name: str) -> Any:
            return dataset

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            reset = benchlib.reset_peak_rss()
            start = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            self.precompute = {"time_s": time.perf_counter() - start, "batch_size": batch_size,
                               "peak_rss": benchlib.peak_rss_bytes()}
            self.peak_reset = benchlib.reset_peak_rss() and reset
            return out

    return PreTokenizedDPOTrainer


def child_dpo_trl(spec: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig

    pairs = spec["pairs"]
    data = Dataset.from_dict({k + "_ids": [p[k] for p in pairs]
                              for k in ("prompt", "chosen", "rejected")})
    model, tokenizer = load_trl_model(spec)
    timer = step_timer()
    work = Path(spec["workdir"])
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(**trl_common(spec, tmp), precompute_ref_log_probs=True, beta=BETA,
                         loss_type=["sigmoid"], padding_free=False)
        trainer = pretokenized_dpo_trainer()(model=model, args=args, train_dataset=data,
                                             processing_class=tokenizer, callbacks=[timer])
        refs = {k: [float(x) for x in trainer.train_dataset[k]]
                for k in ("ref_chosen_logps", "ref_rejected_logps")}
        trainer.train()
    out = trl_summary(timer, spec["pair_step_tokens"])
    tokens = sum(spec["pair_step_tokens"])
    pre = trainer.precompute
    out["precompute"] = {**pre, "tokens": tokens, "tokens_per_s": tokens / pre["time_s"]}
    out["peak_rss_is_training_only"] = trainer.peak_reset
    (work / "ref_trl.json").write_text(json.dumps(refs))
    return out


def run_child_config(spec_path: Path, config: str, rep: int, threads: int) -> None:
    spec = json.loads(spec_path.read_text())
    # a private datasets cache: TRL caches its precompute there, no child may reuse it
    os.environ["HF_DATASETS_CACHE"] = str(Path(spec["workdir"]) / "hf_cache" / f"{config}-{rep}")
    benchlib.set_threads(threads)
    if config in ("sft_ours", "dpo_ours", "redi_ours"):
        out = child_ours(spec, config, rep)
    elif config == "ref_ours":
        out = child_ref_ours(spec, rep)
    elif config in ("sft_trl", "sft_trl_pf"):
        out = child_sft_trl(spec, padding_free=config == "sft_trl_pf")
    elif config == "dpo_trl":
        out = child_dpo_trl(spec)
    else:
        raise ValueError(f"unknown configuration {config!r}")
    import torch

    out.update(config=config, rep=rep, torch_threads=torch.get_num_threads())
    benchlib.emit(out)


# ===================================================================== parent


def rep_order(rep: int, only: set[str]) -> list[str]:
    """A/B alternation: ours first in even reps, TRL first in odd ones."""
    order: list[str] = []
    for group in ("sft", "dpo", "redi"):
        sides = [cs for g, _, cs in GROUPS if g == group]
        if rep % 2:
            sides = sides[::-1]
        order += [c for cs in sides for c in cs if c in only]
    return order


def run_all(spec_path: Path, reps: int, threads: int, only: set[str]) -> dict[str, list]:
    results: dict[str, list] = {c: [] for c in CONFIGS if c in only}
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PYTHONWARNINGS": "ignore"}
    for rep in range(reps):
        for config in rep_order(rep, only):  # dpo_ours reads rep 0's reference file
            print(f"   rep {rep + 1}/{reps}: {config} ...", file=sys.stderr, flush=True)
            try:
                res = benchlib.run_child([__file__, "--child", config, "--spec", str(spec_path),
                                          "--rep", str(rep), "--threads", str(threads)], env=env)
            except RuntimeError as err:  # report the others; the failure is printed
                print(f"   {config} failed: {err}", file=sys.stderr, flush=True)
                continue
            results[config].append(res)
    return results


def med(results: list[dict[str, Any]], *keys: str) -> float | None:
    values = []
    for r in results:
        for key in keys:
            r = r.get(key) if isinstance(r, dict) else None
        if r is not None:
            values.append(float(r))
    return benchlib.median(values) if values else None


def gib(x: float | None) -> float | None:
    return None if x is None else x / benchlib.GIB


def ref_agreement(workdir: Path) -> dict[str, float] | None:
    """Max |ours - TRL| of the reference log-prob sums (rep 0's files)."""
    import pyarrow.parquet as pq

    ours_path, trl_path = workdir / "ref_ours-0.parquet", workdir / "ref_trl.json"
    if not ours_path.exists() or not trl_path.exists():
        return None
    ours = pq.read_table(ours_path).to_pydict()
    order = sorted(range(len(ours["pair_index"])), key=lambda k: ours["pair_index"][k])
    trl = json.loads(trl_path.read_text())
    diffs, rels = [], []
    for col, tcol in (("ref_chosen_logps", "ref_chosen_logps"),
                      ("ref_rejected_logps", "ref_rejected_logps")):
        for k, t in zip(order, trl[tcol], strict=True):
            d = abs(ours[col][k] - t)
            diffs.append(d)
            rels.append(d / max(1.0, abs(t)))
    return {"max_abs": max(diffs), "max_rel": max(rels)}


def best_trl_sft(results: dict[str, list]) -> str | None:
    cands = [c for c in ("sft_trl", "sft_trl_pf") if results.get(c)]
    return max(cands, key=lambda c: med(results[c], "tokens_per_s")) if cands else None


def comparison_rows(results: dict[str, list]) -> list[list[Any]]:
    """One row per comparison: ours vs TRL, tokens/s, peak RSS, first-step losses."""
    rows = []
    trl_sft = best_trl_sft(results)
    pairs = [("SFT", "sft_ours", trl_sft, "tokens_per_s"),
             ("DPO step", "dpo_ours", "dpo_trl", "tokens_per_s")]
    for name, ours, trl, key in pairs:
        if not results.get(ours) or not trl or not results.get(trl):
            continue
        o_tps, t_tps = med(results[ours], key), med(results[trl], key)
        o_rss, t_rss = med(results[ours], "peak_rss"), med(results[trl], "peak_rss")
        o_loss, t_loss = results[ours][0]["first_loss"], results[trl][0]["first_loss"]
        agree = abs(o_loss - t_loss) <= LOSS_TOL * max(1.0, abs(t_loss))
        rows.append([f"{name} (vs {trl})", o_tps, t_tps, benchlib.ratio(o_tps, t_tps),
                     gib(o_rss), gib(t_rss), benchlib.ratio(o_rss, t_rss),
                     f"{o_loss:.6f}", f"{t_loss:.6f}", "yes" if agree else "NO"])
    if results.get("ref_ours") and results.get("dpo_trl"):
        o_tps = med(results["ref_ours"], "tokens_per_s")
        t_tps = med(results["dpo_trl"], "precompute", "tokens_per_s")
        o_rss = med(results["ref_ours"], "peak_rss")
        t_rss = med(results["dpo_trl"], "precompute", "peak_rss")
        rows.append(["reference pass, whole call (vs TRL precompute)", o_tps, t_tps,
                     benchlib.ratio(o_tps, t_tps), gib(o_rss), gib(t_rss),
                     benchlib.ratio(o_rss, t_rss), "-", "-", "-"])
        o_loop = med(results["ref_ours"], "tokens_per_s_loop")
        rows.append(["reference pass, minus its set-up (vs TRL precompute)", o_loop, t_tps,
                     benchlib.ratio(o_loop, t_tps), "-", "-", "-", "-", "-", "-"])
    return rows


def config_rows(results: dict[str, list]) -> list[list[Any]]:
    rows = []
    for config, res in results.items():
        if not res:
            continue
        if config == "dpo_trl":
            rows.append(["dpo_trl precompute", med(res, "precompute", "tokens_per_s"), None,
                         med(res, "precompute", "time_s"),
                         gib(med(res, "precompute", "peak_rss")), None, "-", "-", len(res)])
        rows.append([config, med(res, "tokens_per_s"), med(res, "tokens_per_s_all"),
                     med(res, "time_s"), gib(med(res, "peak_rss")),
                     gib(med(res, "peak_rss_before_final_save")),
                     f"{res[0]['first_loss']:.6f}" if "first_loss" in res[0] else "-",
                     f"{res[0]['last_loss']:.6f}" if "last_loss" in res[0] else "-", len(res)])
    return rows


def report(results: dict[str, list], spec: dict[str, Any], threads: int) -> None:
    sizes = spec["sizes"]
    print()
    benchlib.print_machine(benchlib.machine(threads), "machine (load average at the end)")
    print(f"   packages: {benchlib.package_versions(['torch', 'transformers', 'trl', 'accelerate'])}")
    print(f"== sizes: vocab {sizes['vocab_size']}, hidden {sizes['hidden_size']}, "
          f"{sizes['num_hidden_layers']} layers, {sizes['pairs']} pairs of "
          f"{sizes['response_tokens'][0]}-{sizes['response_tokens'][1]}-token responses, "
          f"global batch {sizes['global_batch']}, micro-batch {sizes['micro_batch']}, fp32; "
          f"SFT {sum(spec['sft_step_tokens'])} tokens in {len(spec['sft_step_tokens'])} steps, "
          f"stage 2 {sum(spec['pair_step_tokens'])} tokens in "
          f"{len(spec['pair_step_tokens'])} steps")
    print("\n== per configuration (medians; tokens/s over steps 2..N, and over all steps)")
    benchlib.print_table(["config", "tokens/s", "tokens/s all steps", "time s", "peak RSS GiB",
                          "GiB before final save", "first loss", "last loss", "reps"],
                         config_rows(results))
    print("\n== ours vs TRL 1.16 (ratio = ours / TRL; goal >= 1.5x tokens/s at <= 1x peak RSS)")
    benchlib.print_table(["comparison", "ours tok/s", "TRL tok/s", "ratio tok/s", "ours GiB",
                          "TRL GiB", "ratio RSS", "ours loss 1", "TRL loss 1", "loss agrees"],
                         comparison_rows(results))
    extra_lines(results, Path(spec["workdir"]))


def extra_lines(results: dict[str, list], workdir: Path) -> None:
    redi, dpo = med(results.get("redi_ours", []), "tokens_per_s"), med(
        results.get("dpo_ours", []), "tokens_per_s")
    if redi and dpo:
        print(f"\nREDI step vs our DPO step: {redi:.1f} vs {dpo:.1f} tokens/s "
              f"(ratio REDI/DPO {redi / dpo:.2f})")
    agreement = ref_agreement(workdir)
    if agreement:
        print(f"reference log-prob sums, ours vs TRL precompute: max |diff| "
              f"{agreement['max_abs']:.3g} (relative {agreement['max_rel']:.3g})")
    trl = results.get("dpo_trl")
    if trl:
        pre = trl[0]["precompute"]
        print(f"TRL DPO: padded (padding_free is disabled in TRL 1.16: it warns and falls "
              f"back), precompute batch {pre['batch_size']}, Liger off; TRL peak RSS is "
              f"{'training only (reset after the precompute)' if trl[0].get('peak_rss_is_training_only') else 'the whole process'}")
    best = best_trl_sft(results)
    if best:
        print(f"fastest TRL SFT configuration: {best} "
              f"({'padding_free=True' if best.endswith('_pf') else 'padded'})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="number of pairs (default 64 = 8 steps); fewer = fewer steps")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--workdir", default=None, help="keep model, data and runs here")
    parser.add_argument("--json", default=None, help="also write all results to this file")
    parser.add_argument("--report", default=None,
                        help="only print the tables of a --json file (its workdir must exist)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        run_child_config(Path(args.spec), args.child, args.rep, args.threads)
        return
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        workdir = Path(args.workdir or saved["workdir"])
        spec = json.loads((workdir / "spec.json").read_text())
        report(saved["results"], spec, saved.get("threads", args.threads))
        return
    sizes = dict(QUICK if args.quick else FULL)
    if args.pairs:
        sizes["pairs"] = args.pairs
    reps = args.reps or sizes["reps"]
    only = set(args.only.split(","))
    if unknown := only - set(CONFIGS):
        raise SystemExit(f"unknown configurations {sorted(unknown)}")
    if "dpo_ours" in only:
        only.add("ref_ours")  # our DPO run reads its reference file
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="redi-bench-"))
    try:
        benchlib.print_machine(benchlib.machine(args.threads), "machine (load average at the start)")
        spec_path = prepare(sizes, workdir)
        results = run_all(spec_path, reps, args.threads, only)
        spec = json.loads(spec_path.read_text())
        report(results, spec, args.threads)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"sizes": sizes, "threads": args.threads, "workdir": str(workdir),
                 "results": results}, indent=1))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
