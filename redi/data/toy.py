"""A deterministic toy corpus in the OpenR1-Math-Raw schema, and toy benchmarks.

Problems are short multi-step arithmetic a tiny model can partly learn
(integer chains and fraction answers); ``toy_long`` is a harder, longer
out-of-distribution set. "Teacher" traces are written as
``<think>\\n...\\n</think>\\n...\\boxed{answer}`` with realistic failure modes:

* an arithmetic slip that propagates to a wrong final answer,
* a trace truncated before ``</think>`` (no answer),
* reflective "Wait, ..." checks, and occasional very long traces (so the
  length filter has something to drop).

Labels mimic the real corpus: ``math_verify_*`` labels come from really running
Math-Verify; ``llama_verification`` is a noisy judge (it disagrees sometimes,
and is sometimes null) so the dual-verifier rule matters. A few rows are
deliberately malformed or filtered (cn_k12, invalid problems, list-length
mismatches, empty generations, empty problem) so every filter is exercised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from redi.data.prompts import EVAL_USER_TEMPLATE
from redi.grading import Grader

SOURCES = ["olympiads", "aops_forum", "amc_aime", "cn_contest", "number_theory", "inequalities"]
WAIT_PHRASES = [
    "Wait, let me double-check that step.",
    "Wait, let me verify the last line.",
    "Wait, is that right? Let me recompute.",
]


@dataclass
class Step:
    text_op: str  # e.g. "multiply by 3"
    lhs: Fraction
    op: str  # + - * /
    rhs: int
    result: Fraction


def fmt(value: Fraction) -> str:
    """Plain-text number: 7, -3, 9/5."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def latex(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _apply(lhs: Fraction, op: str, rhs: int) -> Fraction:
    return {"+": lhs + rhs, "-": lhs - rhs, "*": lhs * rhs, "/": lhs / rhs}[op]


OP_WORDS = {"+": "add {}", "-": "subtract {}", "*": "multiply by {}", "/": "divide by {}"}


def make_problem(rng: random.Random, n_ops: int, fractions: bool) -> tuple[str, list[Step]]:
    """A chain 'Start with a. Add b, then multiply by c, ...' and its exact steps."""
    value = Fraction(rng.randint(1, 9))
    start = value
    steps: list[Step] = []
    for k in range(n_ops):
        if fractions and k == n_ops - 1:
            op, rhs = "/", rng.randint(2, 5)
        elif value <= 10 and rng.random() < 0.2:
            op, rhs = "*", 2
        elif value > 9 and rng.random() < 0.5:
            op, rhs = "-", rng.randint(1, 9)
        else:
            op, rhs = "+", rng.randint(1, 9)
        result = _apply(value, op, rhs)
        steps.append(Step(OP_WORDS[op].format(rhs), value, op, rhs, result))
        value = result
    problem = f"Evaluate from left to right: {expression(start, steps)}"
    return problem, steps


def expression(start: Fraction, steps: list[Step]) -> str:
    """Compact 'a+b*c' (no spaces: each operand's left neighbour is unique)."""
    return "".join([fmt(start)] + [f"{s.op}{s.rhs}" for s in steps])


def write_trace(
    rng: random.Random, steps: list[Step], slip_at: int | None, truncate: bool, long: bool
) -> tuple[str, Fraction]:
    """A teacher trace that rewrites the expression one operation per line.

    A slip at step k (a wrong partial result) propagates to every later line.
    As in R1 traces, failed attempts are the longer ones: a slipped trace
    usually re-checks itself ("Wait, ...") without finding the error, and a
    truncated trace rambles until it is cut off before ``</think>``.
    """
    lines = [expression(steps[0].lhs, steps)]
    value = steps[0].lhs
    for k, step in enumerate(steps):
        result = _apply(value, step.op, step.rhs)
        if slip_at == k:
            result += rng.choice([-2, -1, 1, 2])
        lines.append("=" + expression(result, steps[k + 1:]))
        last = f"{fmt(value)}{step.op}{step.rhs}={fmt(result)}."
        value = result
    if slip_at is not None and rng.random() < 0.7:
        checks = rng.randint(1, 3)
    else:
        checks = int(rng.random() < 0.25)
    for _ in range(checks):  # reflective checks re-state the (possibly wrong) last step
        lines.append(f"{rng.choice(WAIT_PHRASES)} {last}")
    if long or truncate:  # rambling: over-long traces (length filter) and cut-off ones
        for _ in range(rng.randint(12, 20) if long else rng.randint(3, 8)):
            lines.append(f"Wait, let me recompute everything once more. The result is {fmt(value)}.")
    lines.append(f"So the result is {fmt(value)}.")
    if truncate:
        cut = rng.randint(len(lines) // 2, len(lines) - 1)
        return "<think>\n" + "\n".join(lines[:cut]) + "\n", value
    answer = f"The result is $\\boxed{{{latex(value)}}}$."
    return "<think>\n" + "\n".join(lines) + f"\n</think>\n{answer}", value


def _simulated_reparse(rng: random.Random, generation: str, value: Fraction) -> str:
    """What an LLM re-extraction of the final answer would return."""
    if "</think>" in generation:
        return latex(value)
    # truncated: the extractor grabs the last number it sees (or nothing)
    numbers = [tok.strip(".") for tok in generation.split() if tok.strip(".").lstrip("-").isdigit()]
    return numbers[-1] if numbers and rng.random() < 0.7 else ""


def generate_corpus(params: dict[str, Any], workers: int = 2) -> list[dict[str, Any]]:
    """Rows in the OpenR1-Math-Raw schema (deterministic in ``params['seed']``)."""
    rng = random.Random(params["seed"])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < params["n_problems"]:
        fractions = rng.random() < 0.3
        problem, steps = make_problem(rng, rng.choice([2, 2, 3]), fractions)
        if problem in seen:
            continue
        seen.add(problem)
        answer = steps[-1].result
        if rng.random() < params.get("instruction_share", 0.0):
            # some corpus problems carry the evaluation instruction, so the tiny
            # model has seen its wording (a 200k-parameter model cannot
            # generalise to an unseen instruction the way an LLM does)
            problem = EVAL_USER_TEMPLATE.format(problem=problem)
        elif rng.random() < 0.03:  # a few over-long statements for the prompt-length filter
            problem = "Here is a long warm-up. " * rng.randint(20, 30) + problem
        # kind: mixed (>=1 right and >=1 wrong), all right, or all wrong
        kind = rng.choices(["mixed", "right", "wrong"], weights=[0.55, 0.33, 0.12])[0]
        n_gen = rng.randint(2, 4) if kind == "mixed" else rng.randint(1, 3)
        if kind == "mixed":
            good = [True] + [rng.random() < 0.4 for _ in range(n_gen - 2)] + [False]
            rng.shuffle(good)
        else:
            good = [kind == "right"] * n_gen
        generations, values = [], []
        for is_good in good:
            truncate = not is_good and rng.random() < 0.3
            slip = None if is_good or truncate else rng.randrange(len(steps))
            trace, value = write_trace(rng, steps, slip, truncate, long=rng.random() < 0.03)
            generations.append(trace)
            values.append(value)
        rows.append(
            {
                "problem": problem,
                "solution": "",
                "answer": latex(answer),
                "problem_type": "Algebra",
                "question_type": "math-word-problem",
                "problem_is_valid": "Yes",
                "solution_is_valid": "Yes",
                "source": rng.choice(SOURCES),
                "synthetic": False,
                "generations": generations,
                "generations_count": len(generations),
                "reparsed_answers": [_simulated_reparse(rng, g, v)
                                     for g, v in zip(generations, values, strict=True)],
                "_values": values,
            }
        )
    _label(rows, rng, workers)
    _corrupt(rows, rng)
    for row in rows:
        del row["_values"]
    return rows


def _label(rows: list[dict[str, Any]], rng: random.Random, workers: int) -> None:
    """Math-Verify labels (really computed) and a noisy simulated Llama judge."""
    flat = [(r, i) for r in rows for i in range(len(r["generations"]))]
    golds = [r["answer"] for r, _ in flat]
    reparsed = [f"$\\boxed{{{r['reparsed_answers'][i]}}}$" if r["reparsed_answers"][i] else ""
                for r, i in flat]
    generations = [r["generations"][i] for r, i in flat]
    with Grader(workers=workers) as grader:
        mv_reparsed = grader.grade_many(reparsed, golds, "math_verify")
        mv_answer = grader.grade_many(generations, golds, "math_verify")
    for row in rows:
        row["correctness"] = {"llama_verification": [], "math_verify_answer": [],
                              "math_verify_reparsed_answer": []}
    for k, (row, i) in enumerate(flat):
        finished = "</think>" in row["generations"][i]
        truth = finished and row["_values"][i] == _frac_from_latex(row["answer"])
        judge: bool | None = truth if rng.random() > 0.08 else not truth
        if rng.random() < 0.03:
            judge = None
        c = row["correctness"]
        c["llama_verification"].append(judge)
        c["math_verify_answer"].append(mv_answer[k].correct)
        c["math_verify_reparsed_answer"].append(
            None if rng.random() < 0.02 else mv_reparsed[k].correct
        )


def _frac_from_latex(text: str) -> Fraction:
    if text.startswith("\\frac") or text.startswith("-\\frac"):
        sign = -1 if text.startswith("-") else 1
        num, den = text.split("{")[1].rstrip("}"), text.split("{")[2].rstrip("}")
        return sign * Fraction(int(num), int(den))
    return Fraction(int(text))


def _corrupt(rows: list[dict[str, Any]], rng: random.Random) -> None:
    """Rows every filter must catch (the real corpus has all of these).

    Each kind hits a share of the rows at random, and the first rows get one
    kind each, so even a small corpus exercises every filter.
    """
    kinds = [  # (kind, share of rows)
        ("cn_k12", 0.08), ("invalid", 0.03), ("short_judge_list", 0.015),
        ("long_verify_list", 0.01), ("no_generations", 0.01), ("empty_problem", 0.005),
        ("valid_spelling", 0.02),
    ]
    for i, row in enumerate(rows):
        if i < len(kinds):
            kind = kinds[i][0]
        else:
            u, kind = rng.random(), None
            for name, share in kinds:
                if u < share:
                    kind = name
                    break
                u -= share
        c = row["correctness"]
        if kind == "cn_k12":
            row["source"] = "cn_k12"
        elif kind == "invalid":
            row["problem_is_valid"] = rng.choice(["No", "no", "NO "])
        elif kind == "short_judge_list":
            c["llama_verification"] = c["llama_verification"][:-1]
        elif kind == "long_verify_list":
            c["math_verify_reparsed_answer"] = [*c["math_verify_reparsed_answer"], True]
        elif kind == "no_generations":
            row.update(generations=[], generations_count=0, reparsed_answers=[])
            row["correctness"] = {k: [] for k in c}
        elif kind == "empty_problem":
            row["problem"] = ""
        elif kind == "valid_spelling":  # still valid: the check is case/space-insensitive
            row["problem_is_valid"] = rng.choice(["yes", " Yes", "YES"])


def generate_benchmarks(
    params: dict[str, Any], exclude: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """Toy benchmark sets, disjoint from the corpus problems.

    The gold types mirror the real files: ``toy_arith`` answers are strings
    (like MATH-500), ``toy_frac`` lists of alternatives (like Minerva) and
    ``toy_long`` floats (like AMC).
    """
    rng = random.Random(params["seed"] + 1)
    seen = set(exclude)
    out: dict[str, list[dict[str, Any]]] = {}
    makers = {
        "toy_arith": lambda: make_problem(rng, rng.choice([2, 3]), fractions=False),
        "toy_frac": lambda: make_problem(rng, rng.choice([2, 3]), fractions=True),
        "toy_long": lambda: make_problem(rng, rng.choice([4, 5]), fractions=False),
    }
    for name, count in params["benchmarks"].items():
        if name not in makers:
            raise ValueError(f"unknown toy benchmark {name!r}; expected one of {sorted(makers)}")
        items = []
        while len(items) < count:
            problem, steps = makers[name]()
            if problem in seen:
                continue
            seen.add(problem)
            value = steps[-1].result
            if name == "toy_arith":
                answer: Any = latex(value)
            elif name == "toy_frac":
                answer = [latex(value)] + ([f"{float(value):.4g}"] if value.denominator != 1 else [])
            else:
                answer = float(value)
            items.append({"id": f"{name}/{len(items)}", "problem": problem, "answer": answer})
        out[name] = items
    return out


def run(params: dict[str, Any], corpus_out: str, benchmarks_out: str, workers: int) -> None:
    """Write the toy corpus (parquet) and the toy benchmark folder (JSON files)."""
    import json
    import logging

    import pandas as pd

    from redi.io import atomic_path, write_parquet

    rows = generate_corpus(params, workers=workers)
    write_parquet(corpus_out, pd.DataFrame(rows))
    benchmarks = generate_benchmarks(params, exclude={r["problem"] for r in rows})
    with atomic_path(benchmarks_out) as tmp:
        tmp.mkdir()
        for name, items in benchmarks.items():
            (tmp / f"{name}.json").write_text(json.dumps(items, indent=1))
    logging.getLogger(__name__).info(
        "toy corpus: %d rows, %d generations; benchmarks %s", len(rows),
        sum(len(r["generations"]) for r in rows), {k: len(v) for k, v in benchmarks.items()})
