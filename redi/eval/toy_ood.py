"""Toy out-of-domain sets for the tiny preset's Table 5, deterministic in a seed.

* ``generate_toy_mc``: multiple-choice questions in GPQA's Hub schema
  (``Record ID, Question, Correct Answer, Incorrect Answer 1..3``), so they go
  through :mod:`redi.eval.multiple_choice` exactly as GPQA does. The questions are
  the toy arithmetic chains of :mod:`redi.data.toy` (what the tiny model was
  trained on), asked as a choice between the exact value and three near
  misses; the instruction and answer format are new to the model, which is
  what makes the set out of domain.
* ``generate_toy_code``: small Python functions with tests in HumanEval's
  schema (``task_id, prompt, entry_point, canonical_solution, test``), graded
  by :mod:`redi.eval.code_eval` in the same sandbox as HumanEval. Each problem is one
  of a few function families with a random constant; its doctest example and
  its asserts are computed from a reference implementation, so the canonical
  body is checked, not trusted (tests/test_toy_ood.py runs it in the sandbox).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redi.data.toy import fmt, make_problem
from redi.eval import ood_kinds

DISTRACTOR_OFFSETS = (-10, -3, -2, -1, 1, 2, 3, 10)


def generate_toy_mc(seed: int, n: int, exclude: Iterable[str] = ()) -> list[dict[str, str]]:
    """``n`` distinct arithmetic questions (not in ``exclude``) with four distinct options."""
    if n < 1:
        raise ValueError(f"toy multiple-choice set needs n >= 1, got {n}")
    rng = random.Random(f"toy_mc:{seed}")
    seen, rows = set(exclude), []
    while len(rows) < n:
        question, steps = make_problem(rng, rng.choice([2, 3]), fractions=False)
        if question in seen:
            continue
        seen.add(question)
        value = steps[-1].result
        offsets = rng.sample(DISTRACTOR_OFFSETS, 3)  # distinct offsets: distinct options
        rows.append({"Record ID": f"toy_mc/{len(rows)}", "Question": question,
                     "Correct Answer": fmt(value),
                     **{f"Incorrect Answer {i + 1}": fmt(value + d) for i, d in enumerate(offsets)}})
    return rows


@dataclass(frozen=True)
class _Family:
    """A function family: ``{k}`` in the texts is the problem's constant."""

    name: str
    signature: str  # without the leading "def name"
    doc: str
    body: str
    make: Callable[[int], Callable[..., Any]]  # k -> reference implementation
    arg: Callable[[random.Random], Any]  # one random argument


def _ints(rng: random.Random) -> list[int]:
    return [rng.randint(-9, 20) for _ in range(rng.randint(1, 6))]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcxyz") for _ in range(rng.randint(1, 4)))


FAMILIES = (
    _Family("add_constant", "(x: int) -> int", "Return x plus {k}.",
            "    return x + {k}\n", lambda k: lambda x: x + k, lambda r: r.randint(-50, 50)),
    _Family("scale_list", "(xs: list[int]) -> list[int]",
            "Return a new list with every element of xs multiplied by {k}.",
            "    return [v * {k} for v in xs]\n", lambda k: lambda xs: [v * k for v in xs], _ints),
    _Family("count_multiples", "(xs: list[int]) -> int",
            "Return how many elements of xs are divisible by {k}.",
            "    return sum(1 for v in xs if v % {k} == 0)\n",
            lambda k: lambda xs: sum(1 for v in xs if v % k == 0), _ints),
    _Family("clamp", "(x: int) -> int", "Return x limited to the range [-{k}, {k}].",
            "    return max(-{k}, min({k}, x))\n", lambda k: lambda x: max(-k, min(k, x)),
            lambda r: r.randint(-20, 20)),
    _Family("sum_above", "(xs: list[int]) -> int",
            "Return the sum of the elements of xs that are greater than {k}.",
            "    return sum(v for v in xs if v > {k})\n",
            lambda k: lambda xs: sum(v for v in xs if v > k), _ints),
    _Family("repeat_word", "(s: str) -> str", "Return the string s repeated {k} times.",
            "    return s * {k}\n", lambda k: lambda s: s * k, _word),
    _Family("spread_times", "(xs: list[int]) -> int",
            "Return {k} times the difference between the largest and the smallest "
            "element of the non-empty list xs.",
            "    return {k} * (max(xs) - min(xs))\n",
            lambda k: lambda xs: k * (max(xs) - min(xs)), _ints),
    _Family("digit_sum_plus", "(x: int) -> int",
            "Return the sum of the decimal digits of abs(x), plus {k}.",
            "    return sum(int(d) for d in str(abs(x))) + {k}\n",
            lambda k: lambda x: sum(int(d) for d in str(abs(x))) + k,
            lambda r: r.randint(-999, 999)),
)


def generate_toy_code(seed: int, n: int, n_tests: int = 4) -> list[dict[str, str]]:
    """``n`` problems; every family appears before any repeats (when ``n`` allows)."""
    if n < 1 or n_tests < 1:
        raise ValueError(f"toy code set needs n >= 1 and n_tests >= 1, got n={n}, "
                         f"n_tests={n_tests}")
    rng = random.Random(f"toy_code:{seed}")
    problems = []
    order: list[_Family] = []
    for i in range(n):
        if not order:
            order = list(FAMILIES)
            rng.shuffle(order)
        problems.append(_make_code_problem(i, order.pop(), rng.randint(2, 9), rng, n_tests))
    return problems


def _make_code_problem(i: int, fam: _Family, k: int, rng: random.Random,
                       n_tests: int) -> dict[str, str]:
    ref = fam.make(k)
    example = fam.arg(rng)
    args = [example] + [fam.arg(rng) for _ in range(n_tests)]
    prompt = (f"def {fam.name}{fam.signature}:\n"
              f'    """{fam.doc.format(k=k)}\n'
              f"    >>> {fam.name}({example!r})\n"
              f"    {ref(example)!r}\n"
              f'    """\n')
    asserts = "".join(f"    assert candidate({a!r}) == {ref(a)!r}\n" for a in args)
    return {"task_id": f"ToyCode/{i}", "prompt": prompt, "entry_point": fam.name,
            "canonical_solution": fam.body.format(k=k),
            "test": f"\n\ndef check(candidate):\n{asserts}\n"}


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """One JSON object per line, written atomically (loadable by both graders' loaders)."""
    from redi.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows),
                       encoding="utf-8")


# a toy question as redi.data.toy.make_problem writes it (corpus problems may wrap it)
_QUESTION = re.compile(r"Evaluate from left to right: [0-9+\-*/]+")


def known_questions(corpus: str | Path | None, benchmarks_dir: str | Path | None) -> set[str]:
    """Every toy question of the toy corpus (parquet, ``problem``) and of the toy benchmark
    files (``<dir>/*.json``), so that the multiple-choice set asks none of them."""
    texts: list[str] = []
    if corpus is not None:
        import pandas as pd

        texts += pd.read_parquet(corpus, columns=["problem"])["problem"].astype(str).tolist()
    if benchmarks_dir is not None:
        for path in sorted(Path(benchmarks_dir).glob("*.json")):
            texts += [item["problem"] for item in json.loads(path.read_text(encoding="utf-8"))]
    return {q for text in texts for q in _QUESTION.findall(text)}


def toy_code(seed: int, n: int, corpus: str | Path | None = None,
             benchmarks_dir: str | Path | None = None) -> list[dict[str, str]]:
    """The ``code`` kind's toy set: it shares no text with the toy corpus, so reads none."""
    return generate_toy_code(seed, n)


def toy_mc(seed: int, n: int, corpus: str | Path | None = None,
           benchmarks_dir: str | Path | None = None) -> list[dict[str, str]]:
    """The ``multiple_choice`` kind's toy set, none of its questions in the corpus or the
    toy benchmarks."""
    return generate_toy_mc(seed, n, exclude=known_questions(corpus, benchmarks_dir))


def run(params: dict[str, Any], out: str | Path, corpus: str | Path | None = None,
        benchmarks_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The toy_ood job: one generated set (``kind``, ``n``, ``seed``) as JSONL."""
    import logging

    kind, n, seed = params["kind"], params["n"], params["seed"]
    rows = ood_kinds.get(kind).function("toy")(seed, n, corpus, benchmarks_dir)
    write_jsonl(out, rows)
    logging.getLogger(__name__).info("toy %s set: %d items (seed %d) -> %s", kind, len(rows),
                                     seed, out)
    return rows
