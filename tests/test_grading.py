"""The three graders: every real benchmark gold self-verifies, the paper's (rllm)
rule step by step, the strict rules, gold normalisation, and the worker pool's
hard time limit."""

from __future__ import annotations

import json
import time

import pytest

from redi import grading
from redi.grading import (
    Grader,
    gold_candidates,
    gold_latex,
    grade,
    grade_detail,
    last_boxed,
    rllm_answer,
    rllm_golds,
)
from tests.conftest import BENCHMARKS_DIR

FILES = ["math.json", "aime.json", "amc.json", "minerva.json", "olympiad_bench.json"]
WRONG = "-31415.9265"  # no benchmark answer is close to this


def response(answer: str, think: bool = True) -> str:
    reasoning = "Let me work through this carefully. Wait, let me check the algebra again.\n"
    head = f"<think>\n{reasoning}</think>\n\n" if think else f"<think>\n{reasoning}"
    return (head + "The computation above gives the result. Therefore, the final answer is: "
            f"$\\boxed{{{answer}}}$. I hope it is correct")


def self_verify_items(boxed_gold) -> tuple[list[str], list, list[bool], list[str]]:
    """Every real benchmark problem answered with ``boxed_gold(answer)`` and WRONG."""
    responses, golds, expected, where = [], [], [], []
    for name in FILES:
        rows = json.loads((BENCHMARKS_DIR / name).read_text())
        for i, row in enumerate(rows):
            boxed = boxed_gold(row["answer"])
            for answer, ok in ((boxed, True), (WRONG, False)):
                responses.append(response(answer))
                golds.append(row["answer"])
                expected.append(ok)
                where.append(f"{name}#{i} gold={row['answer']!r} boxed={answer!r}")
    return responses, golds, expected, where


def test_every_benchmark_gold_self_verifies_in_every_mode() -> None:
    """1,560 problems x {gold, wrong} x every mode through the worker pool."""
    # what a model would box: the cleaned gold (Math-Verify modes), the paper's gold
    boxed_gold = {"strict": lambda g: gold_latex(g)[0], "math_verify": lambda g: gold_latex(g)[0],
                  "rllm": lambda g: rllm_golds(g)[0]}
    with Grader(workers=2) as grader:
        for mode in ("rllm", "strict", "math_verify"):
            responses, golds, expected, where = self_verify_items(boxed_gold[mode])
            assert len(responses) == 2 * (500 + 30 + 83 + 272 + 675)
            grades = grader.grade_many(responses, golds, mode)
            bad = [where[k] for k, g in enumerate(grades) if g.correct != expected[k]]
            assert not bad, f"{mode}: {len(bad)} failures, e.g. {bad[:5]}"
            assert not grader.timeouts


@pytest.mark.parametrize("mode", ["rllm", "strict", "math_verify"])
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


def test_rllm_answer_extraction() -> None:
    """Step 2 of the paper's rule, each branch."""
    assert rllm_answer("so $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"  # nested braces
    assert rllm_answer("\\boxed{3} then \\boxed{x^{2}}") == "x^{2}"  # the last box
    assert rllm_answer("$\\boxed{ 5 }$") == " 5 "  # no stripping
    assert rllm_answer("\\boxed{a}} b}") == "a"  # up to the first balancing brace
    assert rllm_answer("\\boxed{3} and \\fbox{4}") == "3"  # \fbox only without \boxed
    assert rllm_answer("no box here") is None
    assert rllm_answer("\\fbox{5}") is None  # no \boxed: no answer (unlike strict)
    assert rllm_answer("$\\boxed 5$") is None  # not the literal "\boxed{"
    assert rllm_answer("$\\boxed {5}$") is None
    assert rllm_answer("\\boxed{1} then \\boxed{2") is None  # the last one is unbalanced
    assert rllm_answer("\\boxed{" * 200_000) is None  # linear, not quadratic


def test_rllm_golds() -> None:
    """Step 3: str() of every alternative, boxed golds unboxed, nothing else."""
    assert rllm_golds(142.0) == ("142.0",)  # AMC floats stay floats
    assert rllm_golds("025") == ("025",)  # AIME zero padding stays
    assert rllm_golds(["9.6\n", "9.60"]) == ("9.6\n", "9.60")  # Minerva: kept as is
    assert rllm_golds(["$\\frac{1}{2}$"]) == ("$\\frac{1}{2}$",)
    assert rllm_golds("so $\\boxed{\\frac{1}{2}}$") == ("\\frac{1}{2}",)
    assert rllm_golds(["\\boxed 5", "7"]) == ("7",)  # an unusable boxed gold is dropped
    for bad in (None, [], "\\fbox{5} \\boxed 5"):
        with pytest.raises(ValueError, match="gold answer"):
            rllm_golds(bad)


def test_rllm_rule() -> None:
    """Steps 1 and 4 on hand-written responses, with strict's verdict beside."""
    def both(text: str, gold) -> tuple[bool, bool]:
        return grade(text, gold, "rllm"), grade(text, gold, "strict")

    assert both(response("7", think=False), "7") == (False, False)  # no </think>
    # two </think>: only the text between the first and the second is graded
    twice = "<think>a</think> $\\boxed{3}$ </think> $\\boxed{4}$"
    assert both(twice, "3") == (True, True) and both(twice, "4") == (False, False)
    assert grade_detail(twice, "4", "rllm").extracted == "3"
    assert both("<think>\n$\\boxed{7}$\n</think>\nSo 7.", "7") == (False, False)
    for form in ("\\boxed 5", "\\boxed {5}", "\\fbox{5}"):  # the paper's rule: no answer
        assert both(f"<think>x</think> ${form}$", "5") == (False, True), form
    assert both(response("116."), "116") == (True, False)  # trailing period
    assert both(response("x = 13"), 13.0) == (False, True)  # "13.0" is not "x = 13"
    assert both(response("13"), 13.0) == (True, True)
    assert both(response("142"), 142.0) == (True, True)
    assert both(response("25"), "025") == (True, True)
    assert both(response("1.3"), ["2", "1.3"]) == (True, True)  # any alternative
    assert both(response("4"), ["2", "1.3"]) == (False, False)
    assert both(response("\\frac{1}{2}"), "\\boxed{0.5}") == (True, True)  # boxed gold
    assert both(response("0.5"), "The answer is $\\boxed{\\frac12}$.") == (True, True)
    assert grade_detail(response("\\frac{1}{2}"), "0.5", "rllm") == grading.Grade(
        True, "\\frac{1}{2}")
    assert grade_detail(response("3"), "4", "rllm") == grading.Grade(False, "3")
    with pytest.raises(ValueError, match="None"):
        grade(response("3"), None, "rllm")


def test_strict_small_numbers_relative_tolerance() -> None:
    """Math-Verify's 6-decimal rounding calls any two tiny numbers equal; strict
    mode compares numbers below 1e-3 with a relative tolerance of 1e-3."""
    gold = ["8.224\\times10^{-19}"]  # a Minerva gold
    assert not grade(response("8.224\\times10^{-22}"), gold, "strict")
    assert not grade(response("x = 8.224\\times10^{-22}"), gold, "strict")  # equation
    assert grade(response("8.224\\times10^{-22}"), gold, "math_verify")  # LightEval as is
    assert grade(response("8.224 \\times 10^{-19}"), gold, "strict")
    assert grade(response("8.2245\\times10^{-19}"), gold, "strict")  # 6e-5 relative
    assert not grade(response("8.3\\times10^{-19}"), gold, "strict")  # 9e-3 relative
    assert not grade(response("\\frac{1}{2004!}"), "\\frac{1}{2006!}", "strict")
    assert not grade(response("10^{-9}"), "0", "strict")
    assert grade(response("0"), "0.0", "strict")
    # from 1e-3 up Math-Verify's own rounding decides, as before
    assert grade(response("0.083333"), "\\frac{1}{12}", "strict")
    assert grade(response("0.0012344"), "0.0012341", "strict")  # both round to 0.001234


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


def test_rllm_integer_shortcut_agrees_with_mathruler() -> None:
    from mathruler.grader import grade_answer

    values = ["0", "00", "-0", "5", "05", "-5", "7", "025", "25", "250", "1000", "999",
              "123456789012345", "123456789012344", "-123456789012345"]
    pairs = [(a, b) for a in values for b in values]
    assert sum(grading._mathruler_accepts(a, b) for a, b in pairs) == 25
    for given, gold in pairs:
        assert grading._mathruler_accepts(given, gold) == grade_answer(given, gold), (given, gold)
    # not plain integers: mathruler itself decides
    assert grading._PLAIN_INT.fullmatch("1234567890123456") is None  # past float precision
    assert grading._PLAIN_INT.fullmatch("٣") is None  # a non-ASCII digit
    assert grading._mathruler_accepts(" 5", "5") and grading._mathruler_accepts("5.0", "5")


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
        for mode in ("rllm", "strict", "math_verify"):
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


@pytest.mark.parametrize("mode", ["rllm", "strict"])
def test_hard_limit_kills_and_replaces_a_stuck_worker(monkeypatch, caplog, mode: str) -> None:
    monkeypatch.setattr(grading, "grade_detail", _sleepy_grade)  # forked workers inherit it
    items = [response("1"), "hang", response("3"), response("4"), "hang", response("6")]
    golds = ["1", "2", "3", "4", "5", "7"]
    with Grader(workers=1, timeout_s=1, hard_limit_s=1.5, chunk_size=4) as grader:
        start = time.monotonic()
        grades = grader.grade_many(items, golds, mode)
        elapsed = time.monotonic() - start
        assert [g.correct for g in grades] == [True, False, True, True, False, False]
        assert [g.timed_out for g in grades] == [False, True, False, False, True, False]
        assert grader.timeouts == [1, 4]
        assert elapsed < 6  # two kills at 1.5 s, not two 60 s sleeps
        # the replacement worker keeps serving
        assert [g.correct for g in grader.grade_many([response("8")], ["8"], mode)] == [True]
    assert "exceeded 1.5s" in caplog.text


def _sleepy_mathruler(given: str, gold: str) -> bool:
    if given == "hang":
        time.sleep(60)  # stands for a sympy simplify that never ends (it has no timeout)
    return _real_mathruler(given, gold)


_real_mathruler = grading._mathruler_accepts


def test_hard_limit_covers_the_rllm_sympy_step(monkeypatch) -> None:
    """The kill happens inside mathruler's grader; the cache does not keep the item."""
    monkeypatch.setattr(grading, "_mathruler_accepts", _sleepy_mathruler)
    items = [response("1"), response("hang"), response("2"), response("hang")]
    with Grader(workers=2, timeout_s=0.5, hard_limit_s=1.0, chunk_size=2) as grader:
        start = time.monotonic()
        grades = grader.grade_many(items, ["1", "3", "2", "3"], "rllm")
        assert time.monotonic() - start < 4
        assert [g.correct for g in grades] == [True, False, True, False]
        assert grader.timeouts == [1, 3]
        again = grader.grade_many([response("hang"), response("5")], ["3", "5"], "rllm")
        assert [(g.correct, g.timed_out) for g in again] == [(False, True), (True, False)]
