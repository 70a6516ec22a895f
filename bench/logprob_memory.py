"""Memory of per-token log-probs (and entropy) at the real vocabulary.

Vocabulary 151,936, hidden 1,536, T = 4,096 and 8,192 tokens, fp32, forward + backward
(a fixed random upstream gradient, as a per-token weighted loss): our chunked path
(``redi.train.logprobs.chunked_token_logps``) vs naive full logits (``hidden @ W.T``,
``log_softmax``, ``gather``). Every measurement runs in a FRESH process: its peak is
VmHWM minus the RSS after the inputs exist (VmHWM is reset there where the kernel
allows; glibc's mmap threshold is fixed at 1 MiB so that RSS follows the live
tensors). The parent compares the values and the gradients (hidden and weight) that
the children saved. Goal: chunked peak <= 1/8 of naive, max |difference| <= 1e-4.

``--what weighted`` measures ``chunked_weighted_logp_sum`` (the fused path of a loss linear
in the log-probs, SFT and REDI) against the naive weighted sum. Beside the ratio of peaks,
the table gives the ratio beyond the [V, H] weight gradient, which both paths must hold.

``--what entropy`` measures the per-token entropy of ``chunked_token_entropy`` (it
returns (log-probs, entropy)) the same way, if ``redi.train.logprobs`` has it; adding another
quantity = one naive function and one entry of ``QUANTITIES``.

    python bench/logprob_memory.py            # the default sizes (naive logps T=8192: 14 GiB;
                                              # naive entropy T=8192 needs ~23 GiB: skipped on 24)
    python bench/logprob_memory.py --quick    # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib

FULL = {"vocab": 151_936, "hidden": 1536, "tokens": [4096, 8192], "chunk_tokens": None}
QUICK = {"vocab": 16_384, "hidden": 64, "tokens": [1024, 2048], "chunk_tokens": 128}
GOAL_RATIO, GOAL_DIFF = 1 / 8, 1e-4
SEED = 0
MIB = 2**20


# ---------------------------------------------------------------- quantities


def naive_logps(hidden: Any, weight: Any, targets: Any) -> Any:
    import torch

    logits = hidden @ weight.T
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def naive_entropy(hidden: Any, weight: Any, targets: Any) -> Any:
    import torch

    logp = torch.log_softmax(hidden @ weight.T, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def chunked(name: str) -> Callable[..., Any] | None:
    from redi.train import logprobs

    return getattr(logprobs, name, None)


@dataclass(frozen=True)
class Quantity:
    naive: Callable[..., Any]
    chunked_name: str  # a function of redi.train.logprobs: (hidden, weight[, targets], ...)
    output: int | None = None  # which element, when the chunked function returns a tuple
    naive_blocks: float = 3.1  # [T, V] fp32 blocks alive at the naive peak (measured)
    weighted: bool = False  # the chunked function takes the upstream as token weights
    # and returns (weighted sum, values): the fused path of a linear loss (SFT, REDI)


QUANTITIES = {
    # naive: logits, log-softmax, their gradient (7.0 GiB at T = 4,096)
    "logps": Quantity(naive_logps, "chunked_token_logps"),
    # chunked_token_entropy(hidden, weight, targets) -> (logps, entropy); naive: + the
    # probabilities and their product (11.6 GiB at T = 4,096)
    "entropy": Quantity(naive_entropy, "chunked_token_entropy", output=1, naive_blocks=4.2),
    # sum_i w_i log p_i with the LM head's gradient computed in the forward
    # (chunked_weighted_logp_sum, what SFT and REDI train with); naive as "logps"
    "weighted": Quantity(naive_logps, "chunked_weighted_logp_sum", weighted=True),
}


def call_chunked(fn: Callable[..., Any], q: Quantity, hidden: Any, weight: Any, targets: Any,
                 upstream: Any, chunk_tokens: int | None) -> tuple[Any, Any]:
    """(the loss to backward, the per-token values to compare)."""
    params = inspect.signature(fn).parameters
    kwargs = {"chunk_tokens": chunk_tokens} if chunk_tokens and "chunk_tokens" in params else {}
    if q.weighted:
        return fn(hidden, weight, targets, upstream, **kwargs)
    args = (hidden, weight, targets) if "targets" in params else (hidden, weight)
    out = fn(*args, **kwargs)
    out = out[q.output] if isinstance(out, tuple) and q.output is not None else out
    return (out * upstream).sum(), out


def call_naive(q: Quantity, hidden: Any, weight: Any, targets: Any, upstream: Any
               ) -> tuple[Any, Any]:
    out = q.naive(hidden, weight, targets)
    return (out * upstream).sum(), out


# ------------------------------------------------------------------- child


def inputs(vocab: int, hidden_size: int, tokens: int) -> tuple[Any, Any, Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(SEED)
    hidden = torch.randn(tokens, hidden_size, generator=gen).requires_grad_()
    weight = (torch.randn(vocab, hidden_size, generator=gen) * 0.02).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), generator=gen)
    upstream = torch.randn(tokens, generator=gen)
    return hidden, weight, targets, upstream


def warm_up(q: Quantity, args: argparse.Namespace) -> None:
    """One small forward + backward of the same path first: what the first call loads
    (kernels, autograd and checkpoint machinery) is then in the baseline, not the peak."""
    hidden, weight, targets, upstream = inputs(min(args.vocab, 1024), args.hidden, 40)
    if args.method == "naive":
        loss, _ = call_naive(q, hidden, weight, targets, upstream)
    else:
        loss, _ = call_chunked(chunked(q.chunked_name), q, hidden, weight, targets, upstream, 16)
    loss.backward()


def run_child(args: argparse.Namespace) -> None:
    import torch

    benchlib.set_threads(args.threads)
    q = QUANTITIES[args.what]
    hidden, weight, targets, upstream = inputs(args.vocab, args.hidden, args.tokens)
    if args.method == "naive":
        def fn() -> tuple[Any, Any]:
            return call_naive(q, hidden, weight, targets, upstream)
    else:
        chunk_fn = chunked(q.chunked_name)

        def fn() -> tuple[Any, Any]:
            return call_chunked(chunk_fn, q, hidden, weight, targets, upstream,
                                args.chunk_tokens)
    warm_up(q, args)
    baseline = benchlib.rss_bytes()
    reset = benchlib.reset_peak_rss()
    start = time.perf_counter()
    loss, out = fn()
    loss.backward()
    elapsed = time.perf_counter() - start
    peak = benchlib.peak_rss_bytes() - (baseline if reset else 0)
    torch.save({"values": out.detach(), "grad_hidden": hidden.grad, "grad_weight": weight.grad},
               args.out)
    benchlib.emit({"peak_bytes": peak, "time_s": elapsed, "peak_reset": reset,
                   "baseline_bytes": baseline})


# ------------------------------------------------------------------ parent


def need_bytes(q: Quantity, vocab: int, hidden: int, tokens: int) -> int:
    """Rough peak of the naive path: its [T, V] fp32 blocks + the weight and its gradient."""
    return int(q.naive_blocks * tokens * vocab * 4 + 2 * vocab * hidden * 4)


def max_diffs(a_path: Path, b_path: Path) -> dict[str, float]:
    import torch

    a = torch.load(a_path, mmap=True)
    b = torch.load(b_path, mmap=True)
    return {k: float((a[k] - b[k]).abs().max()) for k in ("values", "grad_hidden", "grad_weight")}


def measure(what: str, method: str, tokens: int, sizes: dict[str, Any], threads: int,
            out: Path) -> dict[str, Any]:
    cmd = [__file__, "--child", "--what", what, "--method", method, "--tokens", str(tokens),
           "--vocab", str(sizes["vocab"]), "--hidden", str(sizes["hidden"]),
           "--threads", str(threads), "--out", str(out)]
    if sizes["chunk_tokens"]:
        cmd += ["--chunk-tokens", str(sizes["chunk_tokens"])]
    # a fixed mmap threshold: freed blocks >= 1 MiB go back to the OS at once, so RSS
    # follows the live tensors (glibc's dynamic threshold would keep freed chunks mapped)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "MALLOC_MMAP_THRESHOLD_": str(MIB)}
    return benchlib.run_child(cmd, env=env)


def bench_one(what: str, tokens: int, sizes: dict[str, Any], threads: int, tmp: Path
              ) -> list[Any] | None:
    need = need_bytes(QUANTITIES[what], sizes["vocab"], sizes["hidden"], tokens)
    avail = benchlib.mem_available_bytes()
    if need > 0.95 * avail:
        print(f"   {what} T={tokens}: skipped, naive needs ~{need / benchlib.GIB:.1f} GiB, "
              f"{avail / benchlib.GIB:.1f} GiB available")
        return None
    paths = {m: tmp / f"{what}-{tokens}-{m}.pt" for m in ("naive", "chunked")}
    res = {}
    for method, path in paths.items():
        print(f"   {what} T={tokens}: {method} ...", file=sys.stderr, flush=True)
        try:
            res[method] = measure(what, method, tokens, sizes, threads, path)
        except RuntimeError as err:  # the other measurements still run and print
            print(f"   {what} T={tokens} {method} failed: {err}", flush=True)
            return None
    diffs = max_diffs(paths["naive"], paths["chunked"])
    for path in paths.values():
        path.unlink()
    naive, ours = res["naive"]["peak_bytes"], res["chunked"]["peak_bytes"]
    ratio = ours / max(1, naive)
    # the [V, H] weight gradient, which any method must hold (both paths have it)
    grad_w = sizes["vocab"] * sizes["hidden"] * 4
    beyond = (ours - grad_w) / max(1, naive - grad_w)
    worst = max(diffs.values())
    met = ratio <= GOAL_RATIO and worst <= GOAL_DIFF
    return [what, tokens, naive / MIB, ours / MIB, ratio, beyond, res["naive"]["time_s"], res["chunked"]["time_s"],
            res["chunked"]["time_s"] / res["naive"]["time_s"], diffs["values"],
            diffs["grad_hidden"], diffs["grad_weight"], "yes" if met else "NO"]


def measurable(what: str) -> bool:
    if chunked(QUANTITIES[what].chunked_name) is None:
        print(f"   {what}: redi.train.logprobs.{QUANTITIES[what].chunked_name} is not there: "
              f"not measured")
        return False
    return True


def run_parent(args: argparse.Namespace) -> None:
    sizes = dict(QUICK if args.quick else FULL)
    if args.tokens:
        sizes["tokens"] = args.tokens
    benchlib.print_machine(benchlib.machine(args.threads), "machine (load average at the start)")
    whats = list(QUANTITIES) if args.what == "all" else [args.what]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="redi-logprob-"))
    try:
        for what in whats:
            if not measurable(what):
                continue
            for tokens in sizes["tokens"]:
                row = bench_one(what, tokens, sizes, args.threads, tmp)
                if row:
                    rows.append(row)
                    print(f"   measured: {row}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    chunk = sizes["chunk_tokens"] or "default"
    print(f"\n== vocab {sizes['vocab']}, hidden {sizes['hidden']}, fp32, forward + backward, "
          f"chunk tokens {chunk}; peak = VmHWM - RSS with the inputs; goal chunked/naive <= "
          f"{GOAL_RATIO:.3f}, max |diff| <= {GOAL_DIFF:g}")
    benchlib.print_table(
        ["quantity", "T", "naive peak MiB", "chunked peak MiB", "ratio peak",
         "ratio beyond the weight gradient", "naive s",
         "chunked s", "ratio time", "max abs diff values", "max abs diff grad hidden",
         "max abs diff grad weight", "goal met"], rows)
    benchlib.print_machine(benchlib.machine(args.threads), "machine (load average at the end)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--what", default="all", choices=["all", *QUANTITIES])
    parser.add_argument("--tokens", type=int, nargs="+", default=None, help="override T")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-tokens", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and isinstance(args.tokens, list):
        args.tokens = args.tokens[0]
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
