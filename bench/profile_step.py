"""Profile one optimizer step of our SFT, DPO and REDI runs (torch.profiler, CPU).

The model and data are train_vs_trl.py's (``train_vs_trl.prepare``: random Qwen2 with the real
151,936-token vocabulary, hidden 256, 2 layers; synthetic pairs), one process, fixed
threads. Each objective runs ``run_sft`` / ``run_stage2`` as the workflow does; the
profiler records the SECOND of three optimizer steps only (the first is warm-up; model
load, tokenisation and the final checkpoint save are outside). Printed per objective: the
step's wall time and real tokens, the share of its self CPU time in matrix multiplies
(all of them, and those with the vocabulary as a dimension: the LM head) and outside any
operator (``ProfilerStep*``'s own time: Python, the data path), and the top operators.

    python bench/profile_step.py                 # 24 pairs, responses 100-600 tokens
    python bench/profile_step.py --quick         # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import train_vs_trl

MATMULS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::matmul")
TOP = 12


def profiled_run(objective: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One run with the profiler active on its second optimizer step."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from redi.train import ref_logps, training

    params = spec["params"]["sft" if objective == "sft" else objective]
    run_dir = workdir / "runs" / objective
    shutil.rmtree(run_dir, ignore_errors=True)
    marks: list[float] = []
    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                   schedule=schedule(wait=0, warmup=1, active=1, repeat=1))

    def after_step(step: int) -> None:
        marks.append(time.perf_counter())
        prof.step()

    hooks = training.Hooks(after_step=after_step)
    manifest, log_csv = run_dir / "manifest.json", run_dir / "log.csv"
    init = workdir / "init_manifest.json"
    with prof:
        if objective == "sft":
            training.run_sft(params, workdir / "sft.parquet", workdir / "model", manifest,
                             log_csv, hooks)
        else:
            ref = None
            if objective == "dpo":
                ref = workdir / "ref_profile.parquet"
                if not ref.exists():
                    ref_logps.compute_ref_logps(params, workdir / "pairs.parquet", init, ref)
            training.run_stage2(params, workdir / "pairs.parquet", init, manifest, log_csv,
                                ref, hooks)
    rows = train_vs_trl.read_log(log_csv)
    if len(rows) < 3:  # step 2 must not be the last: the last one saves the model
        raise SystemExit(f"{objective}: needs >= 3 optimizer steps (more --pairs)")
    events = prof.key_averages(group_by_input_shape=True)
    return {"objective": objective, "events": events, "vocab": spec["sizes"]["vocab_size"],
            "step_s": marks[1] - marks[0], "tokens": int(rows[1]["tokens"]),
            "threads": torch.get_num_threads()}


def is_vocab_matmul(event: Any, vocab: int) -> bool:
    return event.key in MATMULS and any(vocab in (shape or []) for shape in event.input_shapes)


def summarise(res: dict[str, Any]) -> None:
    events, vocab = res["events"], res["vocab"]
    total = sum(e.self_cpu_time_total for e in events)  # microseconds, all threads' ops
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    head = sum(e.self_cpu_time_total for e in events if is_vocab_matmul(e, vocab))
    head_calls = sum(e.count for e in events if is_vocab_matmul(e, vocab))
    outside = sum(e.self_cpu_time_total for e in events if e.key.startswith("ProfilerStep"))
    print(f"\n== {res['objective']}: step 2, {res['step_s']:.2f} s wall, {res['tokens']} tokens "
          f"({res['tokens'] / res['step_s']:.1f} tokens/s), {res['threads']} threads; "
          f"self CPU {total / 1e6:.2f} s")
    benchlib.print_table(
        ["share of self CPU time", "%", "calls"],
        [["all matrix multiplies", 100 * matmul / total, ""],
         ["LM-head matrix multiplies (vocabulary as a dimension)", 100 * head / total,
          head_calls],
         ["outside any operator (Python, data path)", 100 * outside / total, ""],
         ["other operators", 100 * (total - matmul - outside) / total, ""]])
    by_op: dict[str, list[float]] = {}
    for e in events:
        acc = by_op.setdefault(e.key, [0.0, 0])
        acc[0] += e.self_cpu_time_total
        acc[1] += e.count
    top = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:TOP]
    print()  # a blank line: two tables, not one
    benchlib.print_table(["operator", "self CPU s", "%", "calls"],
                         [[k, v[0] / 1e6, 100 * v[0] / total, int(v[1])] for k, v in top])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--pairs", type=int, default=None,
                        help="pairs (default 24 = 3 steps of 8; quick: 12 = 3 steps of 4)")
    parser.add_argument("--response-tokens", type=int, nargs=2, default=None,
                        help="response lengths, min max (default 100 600)")
    parser.add_argument("--objectives", default="sft,dpo,redi")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--workdir", default=None, help="keep model and data here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    benchlib.set_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    sizes = dict(train_vs_trl.QUICK if args.quick else train_vs_trl.FULL)
    sizes["pairs"] = args.pairs or (12 if args.quick else 24)
    if not args.quick:
        sizes["response_tokens"] = args.response_tokens or [100, 600]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="redi-prof-"))
    try:
        benchlib.print_machine(benchlib.machine(args.threads), "machine (load average at the start)")
        spec = json.loads(train_vs_trl.prepare(sizes, workdir).read_text())
        for objective in args.objectives.split(","):
            summarise(profiled_run(objective, spec, workdir))
        benchlib.print_machine(benchlib.machine(args.threads), "machine (load average at the end)")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
