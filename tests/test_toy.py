"""The toy corpus: deterministic, every filter exercised, real Math-Verify labels."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from redi.data import filters, toy
from redi.grading import grade

PARAMS = {"seed": 7, "n_problems": 240, "benchmarks": {"toy_arith": 12, "toy_frac": 8,
                                                       "toy_long": 8}}


@pytest.fixture(scope="module")
def corpus():
    return toy.generate_corpus(PARAMS, workers=2)


def test_deterministic(corpus):
    again = toy.generate_corpus(PARAMS, workers=2)
    assert json.dumps(corpus, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_schema_and_trace_format(corpus):
    keys = {"problem", "solution", "answer", "problem_type", "question_type", "problem_is_valid",
            "solution_is_valid", "source", "synthetic", "generations", "generations_count",
            "reparsed_answers", "correctness"}
    for row in corpus:
        assert set(row) == keys
        assert set(row["correctness"]) == {"llama_verification", "math_verify_answer",
                                           "math_verify_reparsed_answer"}
        for gen in row["generations"]:
            assert gen.startswith("<think>\n")
    finished = [g for r in corpus for g in r["generations"] if "</think>" in g]
    truncated = [g for r in corpus for g in r["generations"] if "</think>" not in g]
    assert finished and truncated and all("\\boxed{" not in g for g in truncated)
    assert all(1 <= r["generations_count"] <= 4 for r in corpus if r["generations"])


def test_every_filter_is_exercised(corpus):
    rows = [{**r, "original_index": i} for i, r in enumerate(corpus)]
    reasons = {filters.drop_reason(r) for r in rows}
    assert {None, "problem_is_valid_not_yes", "source_cn_k12", "empty_problem", "no_generations",
            "length_mismatch_llama_verification",
            "length_mismatch_math_verify_reparsed_answer"} <= reasons
    kept = [r for r in rows if filters.drop_reason(r) is None]
    labels = [v for r in kept for v in r["correctness"]["llama_verification"]]
    assert None in labels  # null judge labels count as False
    # the dual rule matters: the judge and Math-Verify disagree on some kept generations
    disagree = sum(
        bool(j) != bool(m)
        for r in kept
        for j, m in zip(r["correctness"]["llama_verification"],
                        r["correctness"]["math_verify_reparsed_answer"], strict=True)
    )
    assert disagree > 0
    sft, pairs, report = filters.build_sets(rows)
    # about two thirds of the problems with a correct trace also have an incorrect one
    assert 0.55 <= len(pairs) / len(sft) <= 0.8


def test_math_verify_labels_are_real(corpus):
    checked = 0
    for row in corpus:
        c = row["correctness"]
        if len(c["math_verify_reparsed_answer"]) != len(row["reparsed_answers"]):
            continue
        for ans, label in zip(row["reparsed_answers"], c["math_verify_reparsed_answer"],
                              strict=True):
            if label is None or not row["answer"]:
                continue
            expected = bool(ans) and grade(f"$\\boxed{{{ans}}}$", row["answer"], "math_verify")
            assert label == expected
            checked += 1
    assert checked > 100


def test_slip_propagates_to_a_wrong_answer():
    import random

    rng = random.Random(3)
    _, steps = toy.make_problem(rng, 3, fractions=False)
    good, value = toy.write_trace(rng, steps, None, False, False)
    bad, wrong = toy.write_trace(rng, steps, slip_at=0, truncate=False, long=False)
    assert value == steps[-1].result and wrong != value
    assert f"\\boxed{{{toy.latex(wrong)}}}" in bad


def test_benchmarks_are_disjoint_and_typed(corpus):
    sets = toy.generate_benchmarks(PARAMS, exclude={r["problem"] for r in corpus})
    assert {k: len(v) for k, v in sets.items()} == PARAMS["benchmarks"]
    problems = [i["problem"] for v in sets.values() for i in v]
    assert len(set(problems)) == len(problems)
    assert not set(problems) & {r["problem"] for r in corpus}
    assert all(isinstance(i["answer"], str) for i in sets["toy_arith"])
    assert all(isinstance(i["answer"], list) for i in sets["toy_frac"])
    assert all(isinstance(i["answer"], float) for i in sets["toy_long"])
    # toy_long is harder: more operations
    assert min(i["problem"].count("+") + i["problem"].count("-") + i["problem"].count("*")
               for i in sets["toy_long"]) >= 3


def test_latex_and_fmt():
    assert toy.latex(Fraction(9, 5)) == "\\frac{9}{5}" and toy.fmt(Fraction(9, 5)) == "9/5"
    assert toy.latex(Fraction(-3, 2)) == "-\\frac{3}{2}" and toy.latex(Fraction(4)) == "4"
