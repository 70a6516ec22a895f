"""Tables 1, 2 and 4 (pass@1 ± SEM and pass@16) and their markdown twins, and the
helpers the other table modules share (percentages, averages, markdown).

Inputs are the final-evaluation summaries ``results/eval/final/<label>/summary.json``
(fractions in [0, 1]); tables hold percentages. What a table shows (its rows,
benchmarks, run labels, captions) arrives from the rule as one JSON object, the
*table spec* (built by ``redi.workflow.report_plan.table_spec``)::

    {"table": "table2", "title": "...", "selection": "...", "preset": "tiny",
     "benchmarks": [{"name": "toy_arith", "label": "Toy-Arith"}, ...],
     "run_labels": {"dpo_b0.001_lr2e-7": "DPO β=0.001 LR=2e-7", ...},
     "rows": [{"label": "table2-dpo", "model": "DPO", "role": "group",
               "runs": [...], "selection": "best of 11 runs, peak checkpoint"}, ...]}

Row roles: ``start`` (Table 2's SFT model), ``group`` (a Table 2 method row),
``baseline`` (external model; ``source`` = Hub id or folder), ``sft`` (Table 1's
SFT model) and ``final`` (Table 1's REDI model).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from redi.eval.metrics import (
    average_sem,  # Avg SEM = sqrt(sum SEM_b^2) / B, the paper's
    relative_improvement,
)
from redi.io import read_json, write_csv, write_text
from redi.train.losses import OBJECTIVES

log = logging.getLogger(__name__)


# CSV precision in percent: pass@1 over 16 x 500 samples is a multiple of
# 0.0125 %, so four decimals keep every MATH-500 value exact.
DECIMALS = 4


# columns after the numbers: where each row comes from
TRACE_COLUMNS = ["role", "run", "config", "step", "checkpoint", "selection", "label"]


def percent(fraction: float) -> float:
    return 100.0 * float(fraction)


def average(values: Sequence[float]) -> float:
    """Avg column: the unweighted mean over benchmarks (not weighted by problem count)."""
    if not values:
        raise ValueError("no values to average")
    return math.fsum(values) / len(values)


def config_text(run_label: str) -> str:
    """'DPO β=0.001 LR=2e-7' -> 'β=0.001 LR=2e-7': the model column names the method."""
    head, _, rest = run_label.partition(" ")
    if rest and head in {o.label for o in OBJECTIVES.values()}:
        return rest
    return run_label


def load_summaries(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """label -> summary for ``results/eval/final/<label>/summary.json`` files."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        label = Path(path).parent.name
        summary = read_json(path)
        if summary.get("label", label) != label:
            raise ValueError(f"{path}: label {summary.get('label')!r} != folder {label!r}")
        out[label] = summary
    return out


def _benchmark(summary: Mapping[str, Any], name: str, label: str) -> Mapping[str, Any]:
    try:
        return summary["benchmarks"][name]
    except KeyError:
        raise ValueError(f"summary of {label!r} has no benchmark {name!r}") from None


def _trace(row: Mapping[str, Any], summary: Mapping[str, Any],
           run_labels: Mapping[str, str]) -> dict[str, Any]:
    """The traceability columns of one row: role, run, config, step, checkpoint, ..."""
    model = summary.get("model", {})
    trace = {"role": row["role"], "selection": row.get("selection", ""), "label": row["label"]}
    if row["role"] == "baseline":
        return {**trace, "run": "", "config": "", "step": None,
                "checkpoint": row.get("source", model.get("checkpoint", ""))}
    missing = [k for k in ("run", "step", "checkpoint") if k not in model]
    if missing:
        raise ValueError(f"summary of {row['label']!r}: model lacks {missing}")
    run = model["run"]
    allowed = row.get("runs") or [run]
    if run not in allowed:
        # a stale summary (config changed since the evaluation): refuse to mislabel it
        raise ValueError(f"summary of {row['label']!r} names run {run!r}, not one of {allowed}")
    label = run_labels.get(run) or model.get("run_label") or run
    return {**trace, "run": run, "config": config_text(label), "step": int(model["step"]),
            "checkpoint": model["checkpoint"]}


def _frame(records: list[dict[str, Any]], numbers: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=["model", *numbers, *TRACE_COLUMNS])
    frame[numbers] = frame[numbers].astype(float).round(DECIMALS)
    frame["step"] = frame["step"].astype("Int64")  # empty for external baselines
    return frame


def pass1_table(spec: Mapping[str, Any], summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """pass@1 (%) ± SEM per benchmark, Avg and Avg SEM, one row per spec row.

    Avg and Avg SEM are computed from the unrounded values.
    """
    names = [b["name"] for b in spec["benchmarks"]]
    numbers = [c for n in names for c in (n, f"{n}_sem")] + ["avg", "avg_sem"]
    records = []
    for row in spec["rows"]:
        summary = summaries[row["label"]]
        rec: dict[str, Any] = {"model": row["model"]}
        for name in names:
            bench = _benchmark(summary, name, row["label"])
            rec[name] = percent(bench["pass@1"])
            rec[f"{name}_sem"] = percent(bench["pass@1_sem"])
        rec["avg"] = average([rec[n] for n in names])
        rec["avg_sem"] = average_sem([rec[f"{n}_sem"] for n in names])
        records.append({**rec, **_trace(row, summary, spec.get("run_labels", {}))})
    if any("relative_to" in row for row in spec["rows"]):
        _add_relative(records, spec["rows"])
        numbers += ["avg_rel", "avg_rel_paper"]
    return _frame(records, numbers)


def _add_relative(records: list[dict[str, Any]], rows: Sequence[Mapping[str, Any]]) -> None:
    """Table 4's columns: the relative improvement (%) of a row's Avg over the Avg of its
    ``relative_to`` row (from the unrounded values), and the paper's (``paper_relative``)."""
    avg = {rec["label"]: rec["avg"] for rec in records}
    for rec, row in zip(records, rows, strict=True):
        reference = row.get("relative_to")
        rec["avg_rel"] = relative_improvement(rec["avg"], avg[reference]) if reference else math.nan
        paper = row.get("paper_relative")
        rec["avg_rel_paper"] = math.nan if paper is None else float(paper)


def pass16_table(spec: Mapping[str, Any], summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """pass@16 (%) per benchmark and their mean; same rows as ``pass1_table``."""
    names = [b["name"] for b in spec["benchmarks"]]
    records = []
    for row in spec["rows"]:
        summary = summaries[row["label"]]
        rec: dict[str, Any] = {"model": row["model"]}
        for name in names:
            rec[name] = percent(_benchmark(summary, name, row["label"])["pass@16"])
        rec["avg"] = average([rec[n] for n in names])
        records.append({**rec, **_trace(row, summary, spec.get("run_labels", {}))})
    return _frame(records, [*names, "avg"])


def protocol(spec: Mapping[str, Any], summaries: Mapping[str, Mapping]) -> dict[str, str]:
    """Samples per problem and grader of the table's evaluations (for the caption)."""
    samples, graders = set(), set()
    for row in spec["rows"]:
        summary = summaries[row["label"]]
        graders.add(str(summary.get("grader", "unknown")))
        for b in spec["benchmarks"]:
            samples.add(int(_benchmark(summary, b["name"], row["label"])["n_samples"]))
    return {"n_samples": "/".join(str(n) for n in sorted(samples)),
            "grader": ", ".join(sorted(graders))}


def format_number(value: float, decimals: int = 1) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def _relative_cells(rec: pd.Series) -> list[str]:
    """Table 4's "vs SFT" and "paper" cells of one row ("—" where there is none)."""
    def signed(value: float) -> str:
        return "—" if pd.isna(value) else f"{'+' if value >= 0 else ''}{format_number(value)} %"
    return [signed(rec["avg_rel"]), signed(rec["avg_rel_paper"])]


def _best(values: pd.Series) -> set[int]:
    """Rows holding the column's best value at one decimal (ties are all bold)."""
    shown = values.map(lambda v: round(float(v), 1) if pd.notna(v) else math.nan)
    if shown.isna().all():
        return set()
    return set(shown.index[shown == shown.max()])


def markdown_table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def table_markdown(frame: pd.DataFrame, spec: Mapping[str, Any], metric: str,
                   proto: Mapping[str, str]) -> str:
    """The paper-style twin of a table CSV: one decimal, best per column in bold.

    ``metric`` is ``pass@1`` (cells ``81.7 ± 0.2``) or ``pass@16``. The caption
    names the metric, the checkpoint selection and the grader; a list under the
    table names each row's run, step and checkpoint.
    """
    benches = spec["benchmarks"]
    n, count = proto["n_samples"], len(benches)
    if metric == "pass@1":
        what = (f"pass@1 (%) over {n} samples ± SEM (spread of the {n} per-sample "
                f"benchmark scores, paper App. C.5). Avg: unweighted mean over the {count} "
                f"benchmarks, Avg SEM = √(Σ SEM²)/{count}.")
    elif metric == "pass@16":
        what = (f"pass@16 (%): share of problems solved by at least one of {n} samples. "
                f"Avg: unweighted mean over the {count} benchmarks.")
    else:
        raise ValueError(f"unknown metric {metric!r}")
    caption = (f"**{spec['title']}** {what} {spec['selection']} "
               f"Grader: {proto['grader']}. Best value per column in bold.")
    columns = [b["name"] for b in benches] + ["avg"]
    relative = metric == "pass@1" and "avg_rel" in frame.columns
    best = {c: _best(frame[c]) for c in columns}
    quoted = _quoted_labels(spec)
    rows = []
    for i, rec in frame.iterrows():
        name = str(rec["model"]) + ("\\*" if rec["label"] in quoted else "")
        cells = [name, str(rec["config"]) or "—"]
        for c in columns:
            cell = format_number(rec[c])
            if metric == "pass@1":
                cell += f" ± {format_number(rec[c + '_sem'])}"
            cells.append(f"**{cell}**" if i in best[c] else cell)
        rows.append(cells + (_relative_cells(rec) if relative else []))
    header = ["Model", "Config", *[b["label"] for b in benches], "Avg"]
    header += ["vs SFT", "paper"] if relative else []
    align = [":--", ":--", *["--:"] * (len(header) - 2)]
    lines = [caption, "", *markdown_table(header, align, rows), *_quoted_note(quoted),
             "", "Rows (run, checkpoint step, checkpoint; summary label):", ""]
    for _, rec in frame.iterrows():
        if rec["role"] == "baseline":
            where = f"external model `{rec['checkpoint']}`"
        else:
            where = f"`{rec['run']}`, step {rec['step']}, `{rec['checkpoint']}`"
        lines.append(f"- {rec['model']}: {where} ({rec['selection']}; `{rec['label']}`)")
    return "\n".join(lines) + "\n"


def _quoted_labels(spec: Mapping[str, Any]) -> set[str]:
    """Rows whose numbers the paper quotes (the model's official report) rather than
    evaluates: ours are an evaluation, so the reader must not take them as the paper's
    protocol applied to that model."""
    return {r["label"] for r in spec["rows"] if r.get("quoted_in_paper")}


def _quoted_note(quoted: set[str]) -> list[str]:
    if not quoted:
        return []
    return ["", "\\* The paper quotes this model's officially reported pass@1 instead of "
            "evaluating it; the row here is our evaluation (no forced `<think>`, graded "
            "on the whole response)."]


def run_tables(spec: Mapping[str, Any], summary_paths: Sequence[str | Path], csv: str | Path,
               md: str | Path, pass16_csv: str | Path, pass16_md: str | Path) -> None:
    """The table job: pass@1 and pass@16 tables of one spec, CSV + markdown each."""
    summaries = load_summaries(summary_paths)
    missing = [r["label"] for r in spec["rows"] if r["label"] not in summaries]
    if missing:
        raise ValueError(f"no summary for rows {missing}")
    proto = protocol(spec, summaries)
    for metric, build, csv_path, md_path, title in (
        ("pass@1", pass1_table, csv, md, spec["title"]),
        ("pass@16", pass16_table, pass16_csv, pass16_md, spec["title_pass16"]),
    ):
        frame = build(spec, summaries)
        write_csv(csv_path, frame)
        write_text(md_path, table_markdown(frame, {**spec, "title": title}, metric, proto))
        log.info("%s: %d rows -> %s, %s", metric, len(frame), csv_path, md_path)
