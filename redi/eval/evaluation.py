"""Evaluation jobs: training curves, final evaluations and generation statistics.

One protocol (``redi.workflow.config.intermediate_eval_params`` / ``final_eval_params``)
drives every job: sample n completions per problem with the Open-R1 prompt in
the model's chat template (``<think>`` forced in the final protocol), grade
them, and summarise the 0/1 score matrix (``redi.eval.metrics``). File formats:
docs/ARCHITECTURE.md (Evaluation).

Curve and final-evaluation jobs are resumable: each finished unit (a checkpoint of
a curve, one benchmark of a final evaluation; one backend call each) is saved in
``<output>.units/`` under the hash of everything that determines it (``Units``),
so a job killed at any moment loses at most the unit in progress, and its rerun
writes the same bytes as an uninterrupted run. The folder goes once the outputs
are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redi.data.prompts import THINK_CLOSE, render_eval_prompt
from redi.eval.backends import make_backend
from redi.eval.benchmarks import benchmark_path, load_benchmark
from redi.eval.generation import Backend, Completion, Sampling
from redi.eval.metrics import summarize, wait_count
from redi.grading import MODES, Grade, Grader
from redi.io import read_json, sha256_file, write_csv, write_json, write_parquet
from redi.model.models import load_tokenizer

log = logging.getLogger(__name__)

CURVE_COLUMNS = ["step", "epoch", "checkpoint", "accuracy", "sem", "n_problems", "n_samples"]
RESPONSE_COLUMNS = ["step", "benchmark", "problem_id", "sample", "response"]
GENSTATS_COLUMNS = ["step", "benchmark", "n_responses", "mean_tokens", "mean_wait",
                    "wait_per_1k_tokens", "accuracy"]


# ------------------------------------------------------------------ protocol


# the preset's `eval` keys that configure vLLM engines (unset: the backend's default)
VLLM_OPTIONS = ("max_model_len", "gpu_memory_utilization", "cpu_engines", "dtype")


def sampling(params: dict[str, Any]) -> Sampling:
    return Sampling(temperature=params["temperature"], top_p=params["top_p"],
                    max_new_tokens=params["max_new_tokens"], seed=params["seed"])


def backend_from_params(params: dict[str, Any], threads: int = 1, gpus: int = 0) -> Backend:
    """The preset's backend: ``hf`` (batch_size sequences at a time) or ``vllm`` (one
    engine per GPU; without GPUs ``cpu_engines`` engines on the job's ``threads``)."""
    if params["backend"] == "hf":
        return make_backend("hf", sampling(params), batch_size=params["batch_size"],
                            threads=threads)
    options = {key: params[key] for key in VLLM_OPTIONS if params.get(key) is not None}
    return make_backend("vllm", sampling(params), gpus=gpus, threads=threads, **options)


def request_seed(seed: int, benchmark: str, problem_id: Any) -> int:
    """The sampling seed of one problem (its j-th sample uses ``+ j``): a function of
    the evaluation seed, benchmark and problem only, so samples do not depend on how
    prompts are batched or sharded over GPUs."""
    digest = hashlib.sha256(f"{seed}/{benchmark}/{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 2**16)  # + j stays a 31-bit int


def final_modes(mode: str) -> list[str]:
    """What a final evaluation grades: the tables' grader first, then every other
    mode beside it (per-sample parquet, ``pass@1_<mode>``, the agreement table)."""
    if mode not in MODES:
        raise ValueError(f"unknown grading mode {mode!r}; expected one of {MODES}")
    return [mode, *(m for m in MODES if m != mode)]


@dataclass
class BenchmarkResult:
    """Every sample of one benchmark for one model (rows: problem-major)."""

    name: str
    label: str
    problem_ids: list[str]
    n_samples: int
    responses: list[str]
    n_tokens: list[int]
    finished: list[bool]
    grades: dict[str, list]  # mode -> [Grade] aligned with responses
    golds: list[Any]  # per problem, as in the benchmark file

    def matrix(self, mode: str) -> list[list[bool]]:
        n = self.n_samples
        flat = [g.correct for g in self.grades[mode]]
        return [flat[i * n:(i + 1) * n] for i in range(len(self.problem_ids))]

    def summary(self, mode: str) -> dict[str, float]:
        return summarize(self.matrix(mode), ks=sorted({1, self.n_samples}))

    def sample_keys(self) -> list[tuple[str, int]]:
        """(problem id, sample index) of every response, in order."""
        return [(pid, j) for pid in self.problem_ids for j in range(self.n_samples)]

    def frame(self):
        """One row per sample (the per-benchmark parquet of the final evaluation)."""
        import pandas as pd

        keys = self.sample_keys()
        data: dict[str, Any] = {
            "problem_id": [pid for pid, _ in keys],
            "sample": [j for _, j in keys],
            "response": self.responses,
            "n_tokens": self.n_tokens,
            "finished": self.finished,
            "has_think_close": [THINK_CLOSE in r for r in self.responses],
        }
        # JSON text: a gold is a string, a number or a list of alternatives
        data["gold"] = [json.dumps(g, ensure_ascii=False) for g in self.golds
                        for _ in range(self.n_samples)]
        for mode in MODES:
            if mode in self.grades:
                data[f"extracted_{mode}"] = [g.extracted for g in self.grades[mode]]
                data[f"correct_{mode}"] = [g.correct for g in self.grades[mode]]
                data[f"timed_out_{mode}"] = [g.timed_out for g in self.grades[mode]]
        return pd.DataFrame(data)

    def length_stats(self) -> dict[str, float]:
        tokens = sum(self.n_tokens)
        waits = sum(wait_count(r) for r in self.responses)
        count = len(self.responses)
        return {
            "mean_tokens": tokens / count,
            "mean_wait": waits / count,
            # ratio of the means: long responses weigh by their length
            "wait_per_1k_tokens": 1000.0 * waits / tokens if tokens else 0.0,
            "frac_think_close": sum(THINK_CLOSE in r for r in self.responses) / count,
            "frac_truncated": sum(not f for f in self.finished) / count,
        }


    def to_json(self) -> dict[str, Any]:
        """Everything but the name and label (a unit file; ``from_json`` reverses it)."""
        return {"problem_ids": self.problem_ids, "n_samples": self.n_samples,
                "responses": self.responses, "n_tokens": self.n_tokens,
                "finished": self.finished, "golds": self.golds,
                "grades": {mode: [[g.correct, g.extracted, g.timed_out] for g in grades]
                           for mode, grades in self.grades.items()}}

    @classmethod
    def from_json(cls, spec: dict[str, Any], data: dict[str, Any]) -> BenchmarkResult:
        grades = {mode: [Grade(*g) for g in items] for mode, items in data["grades"].items()}
        return cls(name=spec["name"], label=spec["label"], problem_ids=data["problem_ids"],
                   n_samples=data["n_samples"], responses=data["responses"],
                   n_tokens=data["n_tokens"], finished=data["finished"], grades=grades,
                   golds=data["golds"])


def load_benchmarks(params: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict]]]:
    return [(spec, load_benchmark(spec)) for spec in params["benchmarks"]]


# ------------------------------------------------------------- resumable units


def model_identity(model: str) -> list[Any]:
    """What identifies a model's weights without reading gigabytes: every file of its
    folder with its size and modification time (a retrained, replaced or re-downloaded
    checkpoint changes them); a name that is no folder stands for itself."""
    root = Path(model)
    if not root.is_dir():
        return [model]
    files = sorted(f for f in root.rglob("*") if f.is_file())
    return [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def unit_key(model: str, params: dict[str, Any], spec: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    """Everything that determines one unit: the model and its weights, the protocol
    (every parameter but the benchmark list: a unit is one benchmark), the benchmark's
    spec and file content, and the caller's extras (a checkpoint's manifest entry, the
    grading modes). JSON-normalised, so it compares equal to its saved copy."""
    key = {"model": model, "weights": model_identity(model),
           "params": {k: v for k, v in params.items() if k != "benchmarks"},
           "benchmark": spec, "benchmark_sha256": sha256_file(benchmark_path(spec)), **extra}
    return json.loads(json.dumps(key, sort_keys=True))


class Units:
    """The finished units of one job in ``folder``: one JSON file per unit, named by
    the sha256 of its key and holding the key, so a changed input (another key) never
    reads a stale unit. Files are written atomically: a kill leaves none half-written."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.reused = 0
        self.computed = 0

    def _path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest}.json"

    def load(self, key: dict[str, Any]) -> Any | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            saved = read_json(path)
        except (OSError, ValueError):  # unreadable: compute it again
            return None
        if saved.get("key") != key:
            return None
        self.reused += 1
        return saved["value"]

    def save(self, key: dict[str, Any], value: Any) -> None:
        write_json(self._path(key), {"key": key, "value": value})
        self.computed += 1

    def report(self, job: str) -> None:
        log.info("%s: %d units reused from %s, %d computed", job, self.reused, self.folder,
                 self.computed)

    def clean(self) -> None:
        """After the outputs are written: nothing left to resume."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _requests(tokenizer: Any, benchmarks: Sequence[tuple[dict[str, Any], list[dict]]],
              params: dict[str, Any], force: bool) -> tuple[list[str], list[float], list[int]]:
    """Every problem's prompt, expected answer length (vLLM starts long ones first) and
    sampling seed, benchmark by benchmark."""
    prompts, priority, seeds = [], [], []
    for spec, items in benchmarks:
        for item in items:
            seeds.append(request_seed(params["seed"], spec["name"], item["id"]))
            prompts.append(render_eval_prompt(tokenizer, item["problem"], force,
                                              params["think_prefix"],
                                              params["think_prefix_newline"]))
            priority.append(float(spec.get("expected_tokens", 0)))
    return prompts, priority, seeds


def evaluate_model(
    model: str,
    benchmarks: Sequence[tuple[dict[str, Any], list[dict]]],
    params: dict[str, Any],
    backend: Backend,
    grader: Grader,
    modes: Sequence[str],
    force_think: bool | None = None,
) -> dict[str, BenchmarkResult]:
    """Generate ``n_samples`` per problem of every benchmark in one backend call; grade.
    ``params["thinks"]`` false (a model that does not think): rllm and strict grade
    the whole response instead of the text after ``</think>``."""
    force = params["force_think"] if force_think is None else force_think
    thinks = params.get("thinks", True)
    n = params["n_samples"]
    prompts, priority, seeds = _requests(load_tokenizer(model), benchmarks, params, force)
    # the graded response starts with what was forced into the prompt, so the
    # strict grader sees the opening tag (also when the template itself opens it)
    prefix = params["think_prefix"]
    start = time.monotonic()
    completions = backend.generate(model, prompts, n, priority=priority, seeds=seeds)
    elapsed = time.monotonic() - start
    total_tokens = sum(c.n_tokens for comps in completions for c in comps)
    log.info("%s: %d responses, %d tokens in %.1f s (%.0f tokens/s)", model,
             len(prompts) * n, total_tokens, elapsed, total_tokens / max(elapsed, 1e-9))
    flat: list[tuple[str, Completion, Any]] = []
    k = 0
    for _, items in benchmarks:
        for item in items:
            opened = prompts[k].endswith(prefix)
            flat.extend(((prefix if opened else "") + c.text, c, item["answer"])
                        for c in completions[k])
            k += 1
    responses = [r for r, _, _ in flat]
    golds = [g for _, _, g in flat]
    grades = {}
    for mode in modes:
        grades[mode] = grader.grade_many(responses, golds, mode, thinks=thinks)
        if grader.timeouts:
            log.warning("%s: %d responses hit the grading time limit (%s mode); counted wrong",
                        model, len(grader.timeouts), mode)
    results: dict[str, BenchmarkResult] = {}
    offset = 0
    for spec, items in benchmarks:
        size = len(items) * n
        sl = slice(offset, offset + size)
        results[spec["name"]] = BenchmarkResult(
            name=spec["name"], label=spec["label"], problem_ids=[it["id"] for it in items],
            n_samples=n, responses=responses[sl],
            n_tokens=[c.n_tokens for _, c, _ in flat[sl]],
            finished=[c.finished for _, c, _ in flat[sl]],
            grades={mode: grades[mode][sl] for mode in modes},
            golds=[it["answer"] for it in items],
        )
        offset += size
    return results


# --------------------------------------------------------------------- curves


def _log_rows(log_csv: str | Path):
    import pandas as pd

    frame = pd.read_csv(log_csv)
    # the manifest's epoch is the checkpoint's; the log's is per optimizer step
    return frame.drop(columns=[c for c in ("epoch",) if c in frame.columns])


def init_row(init_curve: str | Path, init_checkpoint: str) -> dict[str, Any] | None:
    """The SFT curve's row of ``init_checkpoint`` as step 0 of a stage-2 curve."""
    import pandas as pd

    curve = pd.read_csv(init_curve)
    hit = curve[curve["checkpoint"].map(os.path.normpath) == os.path.normpath(init_checkpoint)]
    if hit.empty:
        return None
    row = hit.iloc[-1]
    return {"step": 0, "epoch": 0.0, "checkpoint": init_checkpoint,
            "accuracy": float(row["accuracy"]), "sem": float(row["sem"]),
            "n_problems": int(row["n_problems"]), "n_samples": int(row["n_samples"])}


def best_checkpoint(rows: Sequence[dict[str, Any]], run: str) -> dict[str, Any]:
    """Highest accuracy among the run's own checkpoints (step > 0); ties -> earliest."""
    own = [r for r in rows if r["step"] > 0]
    if not own:
        raise ValueError(f"run {run}: no checkpoints to choose from")
    best = min(own, key=lambda r: (-r["accuracy"], r["step"]))
    return {"run": run, "step": int(best["step"]), "epoch": best["epoch"],
            "checkpoint": best["checkpoint"], "accuracy": best["accuracy"]}


def run_curve(
    manifest_path: str,
    log_csv: str,
    params: dict[str, Any],
    out_csv: str,
    out_best: str,
    init_curve: str | None = None,
    threads: int = 1,
    gpus: int = 0,
    backend: Backend | None = None,
) -> None:
    """Intermediate evaluation of every checkpoint of one run (one process); each
    checkpoint's row is a unit in ``<out_csv>.units/`` (module docstring)."""
    import pandas as pd

    started = time.monotonic()
    manifest = read_json(manifest_path)
    run = manifest["run"]
    todo = [(c["step"], c["epoch"], c["path"]) for c in manifest["checkpoints"]]
    rows: list[dict[str, Any]] = []
    if manifest.get("stage") == "stage2":
        row = init_row(init_curve, manifest["init"]) if init_curve else None
        if row is None:
            log.warning("%s: init %s not in %s; evaluating it", run, manifest["init"], init_curve)
            todo.insert(0, (0, 0.0, manifest["init"]))
        else:
            rows.append(row)
    units = Units(f"{out_csv}.units")
    with Grader(workers=threads, timeout_s=params["grading_timeout_s"]) as grader:
        backend = backend or backend_from_params(params, threads, gpus)
        benchmarks = load_benchmarks(params)
        (spec, _), = benchmarks  # one benchmark: the curve's
        for step, epoch, path in todo:
            entry = {"step": int(step), "epoch": epoch, "checkpoint": path}
            key = unit_key(path, params, spec, entry=entry)
            row = units.load(key)
            if row is None:
                row = _curve_row(path, benchmarks, params, backend, grader, entry)
                units.save(key, row)
            rows.append(row)
            log.info("%s step %d: accuracy %.4f ± %.4f", run, step, row["accuracy"], row["sem"])
    units.report(run)
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS).sort_values("step", kind="stable")
    curve = curve.merge(_log_rows(log_csv), on="step", how="left")
    write_csv(out_csv, curve)
    write_json(out_best, {**best_checkpoint(rows, run), "generation": backend.describe()})
    units.clean()
    log.info("%s: %d checkpoints evaluated in %.1f s", run, len(todo), time.monotonic() - started)


def _curve_row(path: str, benchmarks: Sequence[tuple[dict[str, Any], list[dict]]],
               params: dict[str, Any], backend: Backend, grader: Grader,
               entry: dict[str, Any]) -> dict[str, Any]:
    """One checkpoint's curve row (its intermediate evaluation)."""
    mode = params["grader"]
    (result,) = evaluate_model(path, benchmarks, params, backend, grader, [mode]).values()
    stats = result.summary(mode)
    return {**entry, "accuracy": stats["pass@1"], "sem": stats["pass@1_sem"],
            "n_problems": len(result.problem_ids), "n_samples": result.n_samples}


# --------------------------------------------------------------- final evals


def resolve_model(spec: dict[str, Any], manifests: Sequence[str], bests: Sequence[str],
                  model_dir: str | None) -> dict[str, Any]:
    """Which checkpoint a final-evaluation label evaluates, with its provenance.

    ``spec`` is the label's entry of FINAL_MODELS (+ ``run_labels``); ``manifests``
    and ``bests`` are the inputs of its runs, in the spec's run order.
    """
    kind = spec["kind"]
    labels = spec.get("run_labels", {})
    if kind == "baseline":
        return {"kind": kind, "name": spec["name"], "label": spec["label"],
                "source": spec["model"], "checkpoint": model_dir or spec["model"]}
    if kind == "sft" or (kind == "run" and spec["checkpoint"] == "last"):
        manifest = read_json(manifests[0])
        final = next((c for c in manifest["checkpoints"] if c.get("final")),
                     manifest["checkpoints"][-1])
        return {"kind": kind, "run": manifest["run"], "step": int(final["step"]),
                "epoch": final["epoch"], "checkpoint": manifest["final_checkpoint"],
                "run_label": labels.get(manifest["run"], manifest["run"])}
    candidates = [read_json(p) for p in bests]
    if kind == "run":
        (best,) = candidates
        return {"kind": kind, "run": best["run"], "step": best["step"], "epoch": best["epoch"],
                "checkpoint": best["checkpoint"], "accuracy_intermediate": best["accuracy"],
                "run_label": labels.get(best["run"], best["run"])}
    if kind == "group":
        # the group's row: its run with the highest peak (ties -> config order)
        best = max(candidates, key=lambda b: b["accuracy"])
        return {"kind": kind, "run": best["run"], "step": best["step"], "epoch": best["epoch"],
                "checkpoint": best["checkpoint"], "accuracy_intermediate": best["accuracy"],
                "group": spec.get("label"), "run_label": labels.get(best["run"], best["run"]),
                "selected_from": [{"run": b["run"], "step": b["step"],
                                   "accuracy": b["accuracy"]} for b in candidates]}
    raise ValueError(f"unknown final-model kind {kind!r}")


def benchmark_summary(result: BenchmarkResult, mode: str) -> dict[str, Any]:
    """Metrics under ``mode`` (the tables' grader) and pass@1 under the others graded."""
    stats = result.summary(mode)
    out: dict[str, Any] = {"label": result.label, "n_problems": len(result.problem_ids),
                           "n_samples": result.n_samples, **stats}
    for other in result.grades:
        if other != mode:
            out[f"pass@1_{other}"] = result.summary(other)["pass@1"]
    out.update(result.length_stats())
    out["n_grading_timeouts"] = sum(g.timed_out for gs in result.grades.values() for g in gs)
    return out


def run_final(
    label: str,
    params: dict[str, Any],
    out_dir: str,
    manifests: Sequence[str] = (),
    bests: Sequence[str] = (),
    model_dir: str | None = None,
    threads: int = 1,
    gpus: int = 0,
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Final protocol on every benchmark: per-benchmark parquet + summary.json.

    ``params``: ``redi.workflow.config.final_model_params`` (the protocol + ``model``, the
    label's FINAL_MODELS entry). Each benchmark is a unit (one backend call) in
    ``<out_dir>.units/`` (module docstring).
    """
    started = time.monotonic()
    params = dict(params)
    spec = params.pop("model")
    model = resolve_model(spec, manifests, bests, model_dir)
    mode = params["grader"]
    force = params["force_think"]
    log.info("final evaluation %s: %s (force_think=%s, thinks=%s)", label,
             model["checkpoint"], force, params.get("thinks", True))
    units = Units(f"{Path(out_dir)}.units")
    with Grader(workers=threads, timeout_s=params["grading_timeout_s"]) as grader:
        backend = backend or backend_from_params(params, threads, gpus)
        results = {spec["name"]: _final_unit(model["checkpoint"], spec, items, params, backend,
                                             grader, units)
                   for spec, items in load_benchmarks(params)}
    units.report(label)
    for name, result in results.items():
        write_parquet(Path(out_dir) / f"{name}.parquet", result.frame())
    summary = {
        "label": label,
        "model": model,
        "protocol": params,
        "grader": mode,
        # the context the model was sampled with (vLLM: capped at the model's own)
        "generation": {**backend.describe(), **backend.context(model["checkpoint"])},
        "benchmarks": {name: benchmark_summary(r, mode) for name, r in results.items()},
    }
    write_json(Path(out_dir) / "summary.json", summary)
    for name, bench in summary["benchmarks"].items():
        log.info("%s %s: pass@1 %.4f ± %.4f, pass@%d %.4f", label, name, bench["pass@1"],
                 bench["pass@1_sem"], bench["n_samples"], bench[f"pass@{bench['n_samples']}"])
    units.clean()
    log.info("%s: evaluated in %.1f s", label, time.monotonic() - started)
    return summary


def _final_unit(checkpoint: str, spec: dict[str, Any], items: list[dict],
                params: dict[str, Any], backend: Backend, grader: Grader,
                units: Units) -> BenchmarkResult:
    """One benchmark of a final evaluation: its saved unit, else generated and graded
    under every mode (``final_modes``) in one backend call, then saved."""
    modes = final_modes(params["grader"])
    key = unit_key(checkpoint, params, spec, modes=modes)
    saved = units.load(key)
    if saved is not None:
        return BenchmarkResult.from_json(spec, saved)
    (result,) = evaluate_model(checkpoint, [(spec, items)], params, backend, grader, modes,
                               force_think=params["force_think"]).values()
    units.save(key, result.to_json())
    return result


# ------------------------------------------------------------------ genstats


def run_genstats(
    manifest_path: str,
    params: dict[str, Any],
    out_csv: str,
    threads: int = 1,
    gpus: int = 0,
    backend: Backend | None = None,
    out_responses: str | None = None,
) -> None:
    """Figure 8: length and "Wait" statistics of every checkpoint (step 0 = init);
    ``out_responses``: every response (``RESPONSE_COLUMNS``), which Figure 9's entropy
    of generated text reuses instead of generating again."""
    import pandas as pd

    started = time.monotonic()
    manifest = read_json(manifest_path)
    todo = [(0, manifest["init"])] + [(c["step"], c["path"]) for c in manifest["checkpoints"]]
    mode = params["grader"]
    rows, responses = [], []
    with Grader(workers=threads, timeout_s=params["grading_timeout_s"]) as grader:
        backend = backend or backend_from_params(params, threads, gpus)
        benchmarks = load_benchmarks(params)
        for step, path in todo:
            results = evaluate_model(path, benchmarks, params, backend, grader, [mode])
            for name, result in results.items():
                stats = result.length_stats()
                rows.append({"step": int(step), "benchmark": name,
                             "n_responses": len(result.responses),
                             "mean_tokens": stats["mean_tokens"], "mean_wait": stats["mean_wait"],
                             "wait_per_1k_tokens": stats["wait_per_1k_tokens"],
                             "accuracy": result.summary(mode)["pass@1"]})
                responses += [(int(step), name, pid, j, text) for (pid, j), text in
                              zip(result.sample_keys(), result.responses, strict=True)]
    frame = pd.DataFrame(rows, columns=GENSTATS_COLUMNS)
    if not all(math.isfinite(v) for v in frame["mean_tokens"]):
        raise ValueError("non-finite generation statistics")
    write_csv(out_csv, frame)
    if out_responses:
        write_parquet(out_responses, pd.DataFrame(responses, columns=RESPONSE_COLUMNS))
    log.info("%s: %d models in %.1f s", manifest["run"], len(todo), time.monotonic() - started)
