"""The two graders: every real benchmark gold self-verifies, the strict rules,
gold normalisation, and the worker pool's hard time limit."""

from __future__ import annotations

import json
import time

import pytest

from redi import grading
from redi.grading import Grader, gold_candidates, gold_latex, grade, grade_detail, last_boxed
from tests.conftest import BENCHMARKS_DIR

FILES = ["math.json", "aime.json", "amc.json", "minerva.json", "olympiad_bench.json"]
WRONG = "-31415.9265"  # no benchmark answer is close to this


def response(answer: str, think: bool = True) -> str:
    reasoning = "Let me work through this carefully. Wait, let me check the algebra again.\n"
    head = f"<think>\n{reasoning}</think>\n\n" if think else f"<think>\n{reasoning}"
    return (head + "The computation above gives the result. Therefore, the final answer is: "
            f"$\\boxed{{{answer}}}$. I hope it is correct")


def test_every_benchmark_gold_self_verifies_in_both_modes() -> None:
    """1,560 problems x {gold, wrong} x {strict, math_verify} through the worker pool."""
    responses, golds, expected, where = [], [], [], []
    for name in FILES:
        rows = json.loads((BENCHMARKS_DIR / name).read_text())
        for i, row in enumerate(rows):
            boxed = gold_latex(row["answer"])[0]  # what a model would box
            for answer, ok in ((boxed, True), (WRONG, False)):
                responses.append(response(answer))
                golds.append(row["answer"])
                expected.append(ok)
                where.append(f"{name}#{i} gold={row['answer']!r} boxed={answer!r}")
    assert len(responses) == 2 * (500 + 30 + 83 + 272 + 675)
    with Grader(workers=2) as grader:
        for mode in ("strict", "math_verify"):
            grades = grader.grade_many(responses, golds, mode)
            bad = [where[k] for k, g in enumerate(grades) if g.correct != expected[k]]
            assert not bad, f"{mode}: {len(bad)} failures, e.g. {bad[:5]}"
            assert not grader.timeouts


@pytest.mark.parametrize("mode", ["strict", "math_verify"])
def test_gold_types(mode: str) -> None:
    assert grade(response("142"), 142.0, mode)  # AMC floats
    assert grade(response("25"), "025", mode)  # AIME zero padding
    assert grade(response("9.6"), ["9.6\n", "9.60"], mode)  # Minerva alternatives + newline
    assert grade(response("1.3"), ["2", "1.3"], mode)  # any alternative
    assert grade(response("\\frac{1}{2}"), ["$\\frac{1}{2}$"], mode)  # OlympiadBench $...$
    assert grade(response("0.5"), "\\frac{1}{2}", mode)
    assert not grade(response("3"), "4", mode)
    with pytest.raises(ValueError):
        grade(response("3"), None, mode)
    with pytest.raises(ValueError):
        grade(response("3"), "3", "lenient")


def test_gold_normalisation() -> None:
    assert gold_latex(142.0) == ["142"]
    assert gold_latex(["$221,$8$"]) == ["221, 8"]  # OlympiadBench: a stray $
    assert gold_latex(["$69$,$84$"]) == ["69, 84"]
    assert gold_latex(["$(-\\infty, 0) \\cup\\{1\\}$."]) == ["(-\\infty, 0) \\cup\\{1\\}"]
    assert gold_latex("\\$32,\\!348") == ["\\$32,\\!348"]  # an escaped $ is a currency sign
    assert gold_candidates("\\$18.90") == ["$\\$18.90$"]
    prose = "$f(x)=a x+b$, where $b$ is an arbitrary integer"
    assert gold_latex([prose]) == [prose]  # prose around the math: left to Math-Verify
    assert grade(response("32,348"), "\\$32,\\!348", "strict")
    assert grade(response("221, 8"), ["$221,$8$"], "strict")


def test_strict_mode_rules() -> None:
    truncated = response("7", think=False)  # no </think>: the trace was cut off
    assert not grade(truncated, "7", "strict")
    assert grade(truncated, "7", "math_verify")  # Math-Verify's anchorless extraction
    assert grade_detail(truncated, "7", "strict").extracted is None
    # only the text after </think>, and only its last box
    assert not grade("<think>\n$\\boxed{7}$\n</think>\nSo the answer is 7.", "7", "strict")
    both = "<think>\nhm\n</think>\nFirst $\\boxed{3}$, finally $\\boxed{5}$."
    assert grade(both, "5", "strict") and not grade(both, "3", "strict")
    assert grade_detail(both, "5", "strict").extracted == "5"


def test_last_boxed() -> None:
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}") == "x^{2}"
    assert last_boxed("$\\boxed 5$ and more") == "5"
    assert last_boxed("\\fbox{3}") == "3"
    assert last_boxed("\\boxed{1} then \\boxed{2") is None  # the last one is unbalanced (rllm)
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{" * 200_000) is None  # linear, not quadratic


def test_integer_shortcut_agrees_with_math_verify() -> None:
    from math_verify import parse, verify

    pairs = [("5", "5"), ("025", "25"), ("-3", "-3"), ("3", "-3"), ("100", "1000"),
             ("0", "00"), ("123456789012345", "123456789012345"), ("12", "21")]
    for gold, boxed in pairs:
        fast = grading._strict_verdict(boxed, (gold,), 5.0)  # uncached
        reference = verify(parse(f"${gold}$"), parse(f"\\boxed{{{boxed}}}"))
        assert fast == reference, (gold, boxed)


def test_pathological_responses_are_wrong_within_the_limit() -> None:
    big = "<think>\n" + "x" * 1_000_000 + "\n</think>\nThe answer is $\\boxed{5}$ maybe"
    items = [
        "<think>\nok\n</think>\n$\\boxed{9^{9^{9^{9}}}}$",
        "<think>" + "\\frac{1}{2} + " * 80_000,  # 1 MB of LaTeX, never closed
        "<think>\nok\n</think>\n" + "$\\boxed{" * 150_000,
        big,
        "<think>\nok\n</think>\n$\\boxed{5}$",
    ]
    with Grader(workers=2, timeout_s=1) as grader:
        for mode in ("strict", "math_verify"):
            start = time.monotonic()
            grades = grader.grade_many(items, ["6"] * 4 + ["5"], mode)
            elapsed = time.monotonic() - start
            assert [g.correct for g in grades] == [False, False, False, False, True], mode
            # five items on two workers, each under the hard limit (4 s here)
            assert elapsed < 3 * grader.hard_limit_s, (mode, elapsed)


def _sleepy_grade(response: str, gold, mode: str, timeout_s: float = 5.0):
    if response == "hang":
        time.sleep(60)  # stands for C-level work a signal cannot interrupt
    return _real_grade_detail(response, gold, mode, timeout_s)


_real_grade_detail = grading.grade_detail


def test_hard_limit_kills_and_replaces_a_stuck_worker(monkeypatch, caplog) -> None:
    monkeypatch.setattr(grading, "grade_detail", _sleepy_grade)  # forked workers inherit it
    items = [response("1"), "hang", response("3"), response("4"), "hang", response("6")]
    golds = ["1", "2", "3", "4", "5", "7"]
    with Grader(workers=1, timeout_s=1, hard_limit_s=1.5, chunk_size=4) as grader:
        start = time.monotonic()
        grades = grader.grade_many(items, golds, "strict")
        elapsed = time.monotonic() - start
        assert [g.correct for g in grades] == [True, False, True, True, False, False]
        assert [g.timed_out for g in grades] == [False, True, False, False, True, False]
        assert grader.timeouts == [1, 4]
        assert elapsed < 6  # two kills at 1.5 s, not two 60 s sleeps
        # the replacement worker keeps serving
        assert [g.correct for g in grader.grade_many([response("8")], ["8"], "strict")] == [True]
    assert "exceeded 1.5s" in caplog.text
