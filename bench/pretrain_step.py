"""Where a tiny base model's pretraining time goes (CPU), and the sha256 of its weights.

Runs ``redi.model.base_model.pretrain`` as the base-model job does, for ``--steps`` steps of the
tiny preset's base model ``--base`` (primary, llama3b or qwen7b of config.yaml; its
tokenizer trained on the toy corpus as the tokenizer job trains it) with ``--threads``
torch threads, ``--repeats`` times. Printed per repeat: ms per optimizer step (the
document generation timed apart) and the sha256 of the weights. The sha256 is the same in
every repeat and must stay the same across a change that claims to keep the result
bit-identical (compare at the job's thread count: another count gives other bits). With
``--profile``, one more run under torch.profiler: self CPU ms per step by operator group
(matrix multiplies, attention, optimizer, the rest) and the top operators.

    python bench/pretrain_step.py                        # primary, 100 steps, 2 threads
    python bench/pretrain_step.py --threads 1 --profile  # where the time goes
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")
TOP = 12


def load_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((benchlib.ROOT / "config.yaml").read_text())


def base_name(base: str) -> str | None:
    """config.yaml's name of ``base``: None for the primary base model."""
    return None if base == "primary" else base


def tokenizer_for(base: str, workdir: Path) -> Any:
    """The tokenizer the tokenizer job trains for ``base`` (its own, or the primary one's
    where it shares it) on the toy corpus."""
    from redi.data import toy
    from redi.model import base_model
    from redi.workflow import plan

    config = load_config()
    corpus = workdir / "raw_toy.parquet"
    if not corpus.exists():
        toy.run(plan.toy_params(config), str(corpus), str(workdir / "toy_benchmarks"),
                workers=1)
    spec = plan.tokenizer_params(config, plan.tokenizer_owner(config, base_name(base)))
    return base_model.tiny_tokenizer(str(corpus), spec["vocab_size"],
                                     spec.get("family", base_model.DEFAULT_FAMILY))


def weights_sha256(model: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def timed_run(params: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """One pretraining from the seeded init: seconds of the documents and of the steps."""
    from redi.model import base_model

    started = time.perf_counter()
    base_model.pretraining_documents(
        random.Random(params["seed"]), params["pretrain_tokens"], tokenizer,
        params["pretrain_instruction_share"], params["pretrain_chat_share"])
    documents = time.perf_counter() - started
    model = base_model.tiny_model(tokenizer, params)
    started = time.perf_counter()
    base_model.pretrain(model, tokenizer, params)
    steps = time.perf_counter() - started - documents
    return {"documents_s": documents, "step_ms": 1000 * steps / params["pretrain_steps"],
            "sha256": weights_sha256(model)}


def profiled_run(params: dict[str, Any], tokenizer: Any) -> None:
    """Self CPU time per step by operator group and the top operators."""
    from torch.profiler import ProfilerActivity, profile

    from redi.model import base_model

    model = base_model.tiny_model(tokenizer, params)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        base_model.pretrain(model, tokenizer, params)
    events = [e for e in prof.key_averages() if e.key.startswith(("aten::", "Optimizer"))]
    per_step = 1e3 * params["pretrain_steps"]  # profiler microseconds -> ms per step
    ops = [e for e in events if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in ops)
    groups = {
        "matrix multiplies": sum(e.self_cpu_time_total for e in ops if e.key in MATMULS),
        "attention (SDPA)": sum(e.self_cpu_time_total for e in ops if "scaled_dot" in e.key),
        "optimizer step (total)": sum(e.cpu_time_total for e in events
                                      if e.key.startswith("Optimizer.step")),
    }
    print(f"\n== operators' self CPU time, ms per step (all aten: {total / per_step:.1f})")
    benchlib.print_table(["group", "ms/step", "% of aten"],
                         [[k, v / per_step, 100 * v / total] for k, v in groups.items()])
    print()
    top = sorted(ops, key=lambda e: -e.self_cpu_time_total)[:TOP]
    benchlib.print_table(["operator", "ms/step", "calls/step"],
                         [[e.key, e.self_cpu_time_total / per_step,
                           e.count / params["pretrain_steps"]] for e in top])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="primary", choices=("primary", "llama3b", "qwen7b"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="the base-model job's: 2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--workdir", default=None, help="keep the toy corpus here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # before torch imports tqdm, which reads it
    benchlib.set_threads(args.threads)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="redi-pt-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        benchlib.print_machine(benchlib.machine(args.threads), "machine (load average at the start)")
        from redi.workflow import plan

        params = {**plan.base_model_params(load_config(), base_name(args.base)),
                  "pretrain_steps": args.steps}
        tokenizer = tokenizer_for(args.base, workdir)
        runs = [timed_run(params, tokenizer) for _ in range(args.repeats)]
        print(f"\n== {args.base}: {args.steps} steps of {params['pretrain_batch']} x "
              f"{params['pretrain_block']} tokens, {args.threads} thread(s)")
        benchlib.print_table(["repeat", "ms/step", "documents s", "weights sha256"],
                             [[k + 1, r["step_ms"], r["documents_s"], r["sha256"][:16]]
                              for k, r in enumerate(runs)])
        print(f"median {benchlib.median([r['step_ms'] for r in runs]):.1f} ms/step; "
              f"{len({r['sha256'] for r in runs})} distinct weights")
        if args.profile:
            profiled_run(params, tokenizer)
        benchlib.print_machine(benchlib.machine(args.threads), "machine (load average at the end)")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
