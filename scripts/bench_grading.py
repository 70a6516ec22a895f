"""Grading throughput (responses/s) of the worker pool on typical responses.

Each response is a long reasoning trace, ``</think>``, and a short final
answer with a boxed expression, graded against real benchmark golds (the
five sets in --benchmarks, or toy integers without it). By default every
problem gets 16 samples whose answers repeat (half boxes the gold, the rest
one of three wrong golds), as in a real final evaluation; ``--samples 1``
gives the cold figure with every answer distinct. The modes (default: the
paper's ``rllm`` and ``strict``) grade the same responses side by side, each
with fresh workers (no verdict cached from another mode or benchmark), and the
last line gives the speed ratio of the first mode to the others.

    python scripts/bench_grading.py --benchmarks ../shared/benchmarks --workers 2
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from redi.grading import MODES, Grader, gold_latex

THINK = ("Let me set up the problem. We have $x^2 - 5x + 6 = 0$, so $(x-2)(x-3) = 0$ and "
         "$x \\in \\{2, 3\\}$. Wait, let me double-check the discriminant: $25 - 24 = 1$. ")
TAIL = ("\n\nTo summarize: the key identity gives $\\frac{a+b}{2} \\geq \\sqrt{ab}$, with "
        "equality when $a = b$, and substituting the values above yields the result.\n\n"
        "Therefore, the final answer is: $\\boxed{{answer}}$. I hope it is correct")


def load_golds(bench_dir: str | None, seed: int) -> dict[str, list]:
    """Benchmark name -> gold answers (toy integers without a folder)."""
    if not bench_dir:
        rng = random.Random(seed)
        return {"integers": [str(rng.randint(1, 10**6)) for _ in range(1000)]}
    return {path.stem: [row["answer"] for row in json.loads(path.read_text())]
            for path in sorted(Path(bench_dir).glob("*.json"))}


def make_items(golds: list, samples: int, max_problems: int, seed: int):
    """``samples`` responses per problem: half box the gold, the rest one of three
    wrong answers (golds of other problems of the same benchmark)."""
    rng = random.Random(seed)
    golds = rng.sample(golds, min(max_problems, len(golds)))
    responses, targets = [], []
    for gold in golds:
        wrong = [gold_latex(rng.choice(golds))[0] for _ in range(3)]
        for _ in range(samples):
            answer = gold_latex(gold)[0] if rng.random() < 0.5 else rng.choice(wrong)
            think = THINK * rng.randint(10, 40)  # 2-8 kB of reasoning
            responses.append(f"<think>\n{think}\n</think>" + TAIL.replace("{answer}", answer))
            targets.append(gold)
    return responses, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default=None, help="folder of benchmark JSON files")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16, help="samples per problem")
    parser.add_argument("--problems", type=int, default=200, help="per benchmark")
    parser.add_argument("--modes", nargs="+", default=["rllm", "strict"], choices=MODES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sets = load_golds(args.benchmarks, args.seed)
    print(f"{args.workers} workers, {args.samples} samples per problem, "
          f"up to {args.problems} problems per benchmark")
    totals = {mode: [0, 0.0] for mode in args.modes}
    for name, golds in sets.items():
        responses, targets = make_items(golds, args.samples, args.problems, args.seed)
        for mode in args.modes:
            with Grader(workers=args.workers) as grader:  # started before the clock
                start = time.perf_counter()
                grades = grader.grade_many(responses, targets, mode)
                elapsed = time.perf_counter() - start
            totals[mode][0] += len(responses)
            totals[mode][1] += elapsed
            print(f"{name:16s} {mode:12s} {len(responses) / elapsed:8.0f} responses/s "
                  f"({len(responses)} in {elapsed:.1f} s; "
                  f"{sum(g.correct for g in grades)} correct, "
                  f"{len(grader.timeouts)} timed out)")
    rates = {mode: count / elapsed for mode, (count, elapsed) in totals.items()}
    for mode, rate in rates.items():
        print(f"{'all':16s} {mode:12s} {rate:8.0f} responses/s")
    first, *others = args.modes
    for other in others:
        print(f"ratio {first}/{other}: {rates[first] / rates[other]:.1f}x")


if __name__ == "__main__":
    main()
