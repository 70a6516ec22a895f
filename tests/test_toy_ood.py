"""The tiny preset's out-of-domain sets: GPQA-schema multiple choice and HumanEval-schema code
problems, deterministic in a seed; every toy code problem's canonical body passes the sandbox."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from redi.data.toy import fmt
from redi.eval import code_eval, multiple_choice, toy_ood

MC_KEYS = {"Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
           "Incorrect Answer 3"}


def left_to_right(expression: str) -> Fraction:
    """Evaluate the toy corpus' compact 'a+b*c' strictly left to right."""
    value = Fraction(int(re.match(r"\d+", expression).group()))
    for op, operand in re.findall(r"([+\-*/])(\d+)", expression):
        rhs = int(operand)
        value = {"+": value + rhs, "-": value - rhs, "*": value * rhs, "/": value / rhs}[op]
    return value


def test_toy_mc_schema_and_answers():
    rows = toy_ood.generate_toy_mc(seed=3, n=30)
    assert len(rows) == 30 and all(set(r) == MC_KEYS for r in rows)
    assert len({r["Question"] for r in rows}) == 30
    for row in rows:
        assert row["Question"].startswith("Evaluate from left to right: ")
        gold = left_to_right(row["Question"].split(": ", 1)[1])
        assert row["Correct Answer"] == fmt(gold)
        options = [row["Correct Answer"]] + [row[f"Incorrect Answer {i}"] for i in (1, 2, 3)]
        assert len(set(options)) == 4
    items = multiple_choice.build_items(rows, "toy_mc")  # the GPQA path accepts it as is
    assert [i.id for i in items[:2]] == ["toy_mc/0", "toy_mc/1"]


def test_toy_mc_is_deterministic_and_respects_exclude():
    first = toy_ood.generate_toy_mc(seed=5, n=20)
    assert first == toy_ood.generate_toy_mc(seed=5, n=20)
    assert first != toy_ood.generate_toy_mc(seed=6, n=20)
    banned = {first[0]["Question"], first[3]["Question"]}
    again = toy_ood.generate_toy_mc(seed=5, n=20, exclude=banned)
    assert not banned & {r["Question"] for r in again}


def test_toy_code_schema():
    problems = toy_ood.generate_toy_code(seed=0, n=len(toy_ood.FAMILIES))
    assert {p["entry_point"] for p in problems} == {f.name for f in toy_ood.FAMILIES}
    for i, p in enumerate(problems):
        assert set(p) == {"task_id", "prompt", "entry_point", "canonical_solution", "test"}
        assert p["task_id"] == f"ToyCode/{i}"
        code_eval.validate_problem(p)
        assert p["prompt"].startswith(f"def {p['entry_point']}(") and p["prompt"].endswith('"""\n')
        assert p["test"].startswith("\n\ndef check(candidate):\n    assert candidate(")
        assert p["test"].count("assert candidate(") == 5  # the doctest example + 4 tests


def test_toy_code_is_deterministic():
    assert toy_ood.generate_toy_code(1, 12) == toy_ood.generate_toy_code(1, 12)
    assert toy_ood.generate_toy_code(1, 12) != toy_ood.generate_toy_code(2, 12)


def test_canonical_solutions_pass_and_empty_bodies_fail():
    problems = toy_ood.generate_toy_code(seed=11, n=2 * len(toy_ood.FAMILIES))
    completions = [[p["canonical_solution"], "", "    pass\n"] for p in problems]
    grades = code_eval.grade(problems, completions, workers=2)
    assert grades.correct.tolist() == [[True, False, False]] * len(problems)
    assert {r[1].detail for r in grades.results} == {"AssertionError"}


def test_files_round_trip_through_both_loaders(tmp_path):
    code = toy_ood.generate_toy_code(seed=0, n=4)
    toy_ood.write_jsonl(tmp_path / "toy_code.jsonl", code)
    assert code_eval.load_problems(tmp_path / "toy_code.jsonl") == code
    rows = toy_ood.generate_toy_mc(seed=0, n=4)
    toy_ood.write_jsonl(tmp_path / "toy_mc.jsonl", rows)
    assert multiple_choice.load_rows(tmp_path / "toy_mc.jsonl") == rows


@pytest.mark.parametrize("call", [lambda: toy_ood.generate_toy_mc(0, 0),
                                  lambda: toy_ood.generate_toy_code(0, 0),
                                  lambda: toy_ood.generate_toy_code(0, 3, n_tests=0)])
def test_bad_sizes_are_rejected(call):
    with pytest.raises(ValueError, match="needs n >= 1"):
        call()
