"""Tables 1-2 (pass@1 ± SEM and pass@16), their markdown twins, the
comparison of the reproduced numbers with the paper's, and the grader agreement
table (the tables' grader vs Math-Verify's on every final-evaluation sample).

Inputs are the final-evaluation summaries ``results/eval/final/<label>/summary.json``
(fractions in [0, 1]); tables hold percentages. What a table shows (its rows,
benchmarks, run labels, captions) arrives from the rule as one JSON object, the
*table spec* (built by ``redi.plan.table_spec``)::

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
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from redi.io import read_json, write_csv, write_text
from redi.losses import OBJECTIVES
from redi.metrics import (
    average_sem,  # Avg SEM = sqrt(sum SEM_b^2) / B, the paper's
    relative_improvement,
)

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).with_name("data")
REPORTED_RESULTS = DATA_DIR / "reported_results.csv"

# CSV precision in percent: pass@1 over 16 x 500 samples is a multiple of
# 0.0125 %, so four decimals keep every MATH-500 value exact.
DECIMALS = 4
# columns after the numbers: where each row comes from
TRACE_COLUMNS = ["role", "run", "config", "step", "checkpoint", "selection", "label"]

# --------------------------------------------------------------- the paper

PAPER_BENCHMARKS = ("MATH-500", "AIME24", "AMC23", "Minerva", "OlympiadBench")
# reported_results.csv `table` (v1 numbering) -> (our table, metric, title)
PAPER_TABLES = {
    "T1": ("table1", "pass@1", "Table 1: main results"),
    "T2": ("table2", "pass@1", "Table 2: ablation from SFT-3ep"),
    "T3": ("table2_pass16", "pass@16", "Table 6 (v1 T3): pass@16 from SFT-3ep"),
    "T4": ("table1_pass16", "pass@16", "Table 7 (v1 T4): pass@16 from SFT-5ep"),
}
# reported model names with a fixed role; the other names are matched on our
# `model` column: baselines by their label, Table 2 method rows by group label
PAPER_ROLES = {"Qwen-SFT-1.5B-3ep": "start", "Qwen-SFT-1.5B-5ep": "sft",
               "Qwen-REDI-1.5B": "final"}
COMPARISON_COLUMNS = [
    "paper_table", "our_table", "metric", "model", "paper_config", "benchmark",
    "reported", "reported_sem", "reproduced", "reproduced_sem", "diff", "sem_basis",
    "diff_sem_units", "our_model", "our_run", "our_config", "our_step", "status",
]


# ----------------------------------------------------------------- helpers


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


# ------------------------------------------------------------------ tables


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


def _fmt(value: float, decimals: int = 1) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def _relative_cells(rec: pd.Series) -> list[str]:
    """Table 4's "vs SFT" and "paper" cells of one row ("—" where there is none)."""
    def signed(value: float) -> str:
        return "—" if pd.isna(value) else f"{'+' if value >= 0 else ''}{_fmt(value)} %"
    return [signed(rec["avg_rel"]), signed(rec["avg_rel_paper"])]


def _best(values: pd.Series) -> set[int]:
    """Rows holding the column's best value at one decimal (ties are all bold)."""
    shown = values.map(lambda v: round(float(v), 1) if pd.notna(v) else math.nan)
    if shown.isna().all():
        return set()
    return set(shown.index[shown == shown.max()])


def _md_table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
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
            cell = _fmt(rec[c])
            if metric == "pass@1":
                cell += f" ± {_fmt(rec[c + '_sem'])}"
            cells.append(f"**{cell}**" if i in best[c] else cell)
        rows.append(cells + (_relative_cells(rec) if relative else []))
    header = ["Model", "Config", *[b["label"] for b in benches], "Avg"]
    header += ["vs SFT", "paper"] if relative else []
    align = [":--", ":--", *["--:"] * (len(header) - 2)]
    lines = [caption, "", *_md_table(header, align, rows), *_quoted_note(quoted),
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


# -------------------------------------------------------- paper comparison


def read_table(path: str | Path) -> pd.DataFrame:
    """A table CSV written by ``pass1_table``/``pass16_table``, types restored."""
    text = {c: str for c in ("model", "role", "run", "config", "checkpoint", "selection",
                             "label")}
    frame = pd.read_csv(path, dtype={**text, "step": "Int64"})
    for column in text:
        frame[column] = frame[column].fillna("")
    return frame


def load_reported(path: str | Path = REPORTED_RESULTS) -> pd.DataFrame:
    """The paper's numbers; ``config`` empty -> '' so rows can be keyed on it."""
    frame = pd.read_csv(path, dtype={"config": str})
    frame["config"] = frame["config"].fillna("")
    return frame


def sem_units(diff: float, reproduced_sem: float | None,
              reported_sem: float | None) -> tuple[float | None, str]:
    """The difference in SEM units and which SEM it is measured in.

    Where the paper reports a SEM, both estimates are uncertain: divide by the
    combined SEM sqrt(ours^2 + paper^2) (a z-score of the difference). Where it
    does not, divide by our SEM alone. pass@16 has no SEM: (None, 'none').
    """
    def ok(x: float | None) -> bool:
        return x is not None and not math.isnan(x)

    if not ok(reproduced_sem):
        return None, "none"
    if ok(reported_sem):
        basis, kind = math.hypot(reproduced_sem, reported_sem), "combined"
    else:
        basis, kind = float(reproduced_sem), "reproduced"
    if basis == 0:
        return None, kind
    return diff / basis, kind


def _paper_name(model: str) -> str:
    """'Qwen2.5-Math-1.5B-Instruct (official)' -> 'Qwen2.5-Math-1.5B-Instruct'."""
    return re.sub(r"\s*\(.*\)\s*$", "", model)


def _match(frame: pd.DataFrame, paper_table: str, model: str) -> tuple[pd.Series | None, str]:
    """Our row for a reported model, or None and why not."""
    role = PAPER_ROLES.get(model)
    if role is not None:
        hits = frame[frame["role"] == role]
        why = f"no {role} row"
    else:
        name = _paper_name(model)
        role = "baseline" if paper_table in ("T1", "T4") else "group"
        hits = frame[(frame["role"] == role) & (frame["model"] == name)]
        why = f"no {role} row named {name!r}"
    return (hits.iloc[0], "") if len(hits) else (None, why)


def _optional(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _not_comparable(by_label: Mapping[str, str], preset: str) -> str:
    """Why a preset's numbers cannot be set against the paper's ('' when they can)."""
    if set(by_label) & set(PAPER_BENCHMARKS):
        return ""
    return (f"not comparable: the {preset} preset evaluates {', '.join(by_label)}, "
            "not the paper's benchmarks")


def _our_column(column: str, by_label: Mapping[str, str], same_set: bool
                ) -> tuple[str | None, str]:
    """Our table column for a paper column (benchmark label or Avg), or None and why not."""
    if column == "Avg":
        return ("avg", "") if same_set else (None, "Avg over a different benchmark set")
    ours = by_label.get(column)
    return ours, "" if ours else f"benchmark {column} not evaluated"


def _compared(rec: dict[str, Any], ours: pd.Series, column: str) -> dict[str, Any]:
    """A reported cell with our value beside it: difference and SEM units."""
    reproduced = float(ours[column])
    our_sem = _optional(ours.get(f"{column}_sem"))
    diff = reproduced - rec["reported"]
    units, basis = sem_units(diff, our_sem, rec["reported_sem"])
    return {**rec, "reproduced": reproduced, "reproduced_sem": our_sem, "diff": diff,
            "sem_basis": basis, "diff_sem_units": units, "our_model": ours["model"],
            "our_run": ours["run"], "our_config": ours["config"], "our_step": ours["step"],
            "status": "compared"}


def _cells(rep: pd.Series, sem_rep: pd.Series | None, ours: pd.Series | None, why_row: str,
           by_label: Mapping[str, str], same_set: bool) -> list[dict[str, Any]]:
    """The comparison rows of one reported row (one per cell the paper fills)."""
    our_table, metric, _ = PAPER_TABLES[rep["table"]]
    records = []
    for column in (*PAPER_BENCHMARKS, "Avg"):
        if pd.isna(rep[column]):
            continue  # the paper leaves this cell empty (pass@16 Avg)
        rec: dict[str, Any] = {
            "paper_table": rep["table"], "our_table": our_table, "metric": metric,
            "model": rep["model"], "paper_config": rep["config"], "benchmark": column,
            "reported": float(rep[column]),
            "reported_sem": _optional(sem_rep[column]) if sem_rep is not None else None,
        }
        ours_col, why_col = _our_column(column, by_label, same_set)
        if ours is None or ours_col is None:
            reason = why_row or why_col
            records.append({**rec, "status": reason if reason.startswith("not comparable")
                            else f"no counterpart: {reason}"})
        else:
            records.append(_compared(rec, ours, ours_col))
    return records


def compare_with_paper(reported: pd.DataFrame, tables: Mapping[str, pd.DataFrame],
                       benchmarks: Sequence[Mapping[str, str]], preset: str) -> pd.DataFrame:
    """One row per reported cell: reported vs reproduced, difference and SEM units.

    ``tables`` maps our table names (table1, table2, table1_pass16, table2_pass16)
    to their CSVs. Benchmarks are matched by label (MATH-500, AIME24, ...); the
    Avg cell only when we evaluate exactly the paper's five benchmarks. A preset
    without any of the paper's benchmarks (tiny) is not comparable: its rows
    keep the reported values and an empty reproduced side.
    """
    by_label = {b["label"]: b["name"] for b in benchmarks}
    same_set = set(by_label) == set(PAPER_BENCHMARKS)
    not_comparable = _not_comparable(by_label, preset)
    sems = reported[reported["metric"] == "sem"]
    records = []
    for _, rep in reported[reported["metric"] != "sem"].iterrows():
        sem_rows = sems[(sems["table"] == rep["table"]) & (sems["model"] == rep["model"])
                        & (sems["config"] == rep["config"])]
        ours, why_row = (None, not_comparable) if not_comparable else _match(
            tables[PAPER_TABLES[rep["table"]][0]], rep["table"], rep["model"])
        records += _cells(rep, sem_rows.iloc[0] if len(sem_rows) else None, ours, why_row,
                          by_label, same_set)
    frame = pd.DataFrame.from_records(records, columns=COMPARISON_COLUMNS)
    numbers = ["reported", "reported_sem", "reproduced", "reproduced_sem", "diff",
               "diff_sem_units"]
    frame[numbers] = frame[numbers].astype(float).round(DECIMALS)
    frame["our_step"] = frame["our_step"].astype("Int64")
    return frame


def _comparison_intro(comparison: pd.DataFrame, preset: str, ours: Sequence[str],
                      grader: str) -> list[str]:
    lines = [f"# Reproduced vs reported numbers (preset `{preset}`)", ""]
    source = "Paper: the v1 numbers (`redi/data/reported_results.csv`, graded with rllm's grader)."
    if comparison["status"].str.startswith("not comparable").all():
        return lines + [
            f"**Not comparable.** The `{preset}` preset evaluates toy benchmarks "
            f"({', '.join(ours)}), not the paper's ({', '.join(PAPER_BENCHMARKS)}): "
            "the reproduced cells are left empty and the paper's values are listed "
            "for reference only.", "", source, ""]
    return lines + [
        f"{source} Ours: the final evaluation, grader `{grader}`. Δ = ours − paper in "
        "percentage points; in brackets Δ in SEM units: Δ / √(SEM_ours² + SEM_paper²) "
        "where the paper reports a SEM, Δ / SEM_ours where it does not (Qwen2.5-Math base "
        "and Instruct rows). pass@16 has no SEM, so only Δ. — = no counterpart in our "
        "tables.",
        "",
    ]


def _diff_cell(r: pd.Series) -> str:
    d = _fmt(r["diff"])
    d = f"+{d}" if float(d) > 0 else d
    if pd.notna(r["diff_sem_units"]):
        d += f" ({_fmt(r['diff_sem_units'])})"
    return d


def _model_rows(cells: pd.DataFrame, name: str, columns: Sequence[str]) -> list[list[str]]:
    """The markdown rows of one reported model: paper, ours and Δ (or the paper's alone)."""
    cell = {r["benchmark"]: r for _, r in cells.iterrows()}
    first = cells.iloc[0]
    if first["status"].startswith("not comparable"):
        # said once above the tables: list the paper's values only
        return [[name, "paper", *(_pm(cell[c]["reported"], cell[c]["reported_sem"])
                                  if c in cell else "" for c in columns)]]
    if first["status"] == "compared":
        ours_name = f"ours: {first['our_model']}"
        if first["our_run"]:
            ours_name += f" `{first['our_run']}` step {first['our_step']}"
    else:
        ours_name = f"ours ({first['status']})"
    paper_cells, our_cells, diff_cells = [], [], []
    for c in columns:
        r = cell.get(c)
        compared = r is not None and r["status"] == "compared"
        paper_cells.append("" if r is None else _pm(r["reported"], r["reported_sem"]))
        our_cells.append(_pm(r["reproduced"], r["reproduced_sem"]) if compared else (
            "" if r is None else "—"))
        diff_cells.append(_diff_cell(r) if compared else ("" if r is None else "—"))
    rows = [[name, "paper", *paper_cells], ["", ours_name, *our_cells]]
    if (cells["status"] == "compared").any():
        rows.append(["", "Δ (SEM units)", *diff_cells])
    return rows


def comparison_markdown(comparison: pd.DataFrame, preset: str,
                        benchmarks: Sequence[Mapping[str, str]], grader: str) -> str:
    """Per paper table: the paper's row, ours, and the difference (in SEM units)."""
    lines = _comparison_intro(comparison, preset, [b["label"] for b in benchmarks], grader)
    for paper_table, (our_table, metric, title) in PAPER_TABLES.items():
        part = comparison[comparison["paper_table"] == paper_table]
        if part.empty:
            continue
        columns = [c for c in (*PAPER_BENCHMARKS, "Avg") if c in set(part["benchmark"])]
        lines += [f"## {title} → `results/{our_table}.csv` ({metric}, %)", ""]
        rows = []
        for (model, config), cells in part.groupby(["model", "paper_config"], sort=False):
            rows += _model_rows(cells, f"{model} ({config})" if config else model, columns)
        lines += _md_table(["Model", "", *columns], [":--", ":--", *["--:"] * len(columns)],
                           rows)
        lines.append("")
    return "\n".join(lines)


def _pm(value: float, sem: float | None) -> str:
    return _fmt(value) if sem is None or pd.isna(sem) else f"{_fmt(value)} ± {_fmt(sem)}"


# ---------------------------------------------------------- training time


def training_time_table(paper: pd.DataFrame, stages: Mapping[str, Sequence[str]],
                        manifests: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Paper wall time per stage (one 8×A100-80GB node) next to ours.

    ``stages`` maps a stage of training_times.csv (sft_3ep, dpo_1ep, ...) to our
    runs of that kind; ours is the median ``wall_time_s`` of their manifests, in
    hours. Stages without runs (the evaluations) keep an empty side.
    """
    records = []
    for _, row in paper.iterrows():
        runs = [r for r in stages.get(row["stage"], []) if r in manifests]
        hours = [float(manifests[r]["wall_time_s"]) / 3600 for r in runs]
        records.append({"stage": row["stage"], "paper_hours": float(row["duration_hours"]),
                        "paper_gpu_hours": float(row["gpu_hours"]),
                        "paper_hardware": row["hardware"], "our_runs": len(runs),
                        "our_hours_median": float(pd.Series(hours).median()) if hours else None})
    return pd.DataFrame.from_records(records)


def _duration(hours: float) -> str:
    """3 significant digits in the unit that suits: toy runs take seconds."""
    seconds = hours * 3600
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{hours:.3g} h"


def training_time_markdown(times: pd.DataFrame, preset: str, train_gpus: int) -> str:
    hardware = f"{train_gpus} GPU(s)" if train_gpus else "CPU"
    lines = [f"## Training time (paper Table 3 and App. C.6) vs ours (preset `{preset}`, "
             f"{hardware} per training job)", "",
             "Ours: `wall_time_s` of `results/train/<run>/manifest.json`, median over the runs "
             "of that kind; the evaluations are not timed here.", ""]
    rows = []
    for _, r in times.iterrows():
        ours = "—" if pd.isna(r["our_hours_median"]) else (
            f"{_duration(r['our_hours_median'])} ({r['our_runs']} "
            f"run{'s' if r['our_runs'] > 1 else ''})")
        rows.append([r["stage"], f"{r['paper_hours']:g} h", f"{r['paper_gpu_hours']:g}",
                     r["paper_hardware"], ours])
    lines += _md_table(["Stage", "Paper", "Paper GPU-h", "Paper hardware", "Ours"],
                       [":--", "--:", "--:", ":--", "--:"], rows)
    return "\n".join(lines) + "\n"


# -------------------------------------------------------- grader agreement


def _sample_columns(graders: Sequence[str]) -> list[str]:
    return ["problem_id", "sample", "gold",
            *(f"{kind}_{g}" for g in graders for kind in ("extracted", "correct"))]


def read_samples(path: str | Path, graders: Sequence[str]) -> pd.DataFrame:
    """The per-sample columns the agreement table needs from a final-eval parquet."""
    import pyarrow.parquet as pq

    wanted = _sample_columns(graders)
    have = set(pq.read_schema(path).names)
    missing = [c for c in wanted if c not in have]
    if missing:
        raise ValueError(f"{path}: per-sample parquet lacks columns {missing} "
                         "(re-run its final evaluation)")
    return pd.read_parquet(path, columns=wanted)


def agreement_row(samples: pd.DataFrame, graders: Sequence[str]) -> dict[str, Any]:
    """pass@1 (%) under each of two graders and how often their verdicts agree."""
    a, b = graders
    ca, cb = samples[f"correct_{a}"].astype(bool), samples[f"correct_{b}"].astype(bool)
    n = len(samples)
    if n == 0:
        raise ValueError("no samples to compare")
    return {"n_samples": n, f"pass@1_{a}": percent(ca.mean()), f"pass@1_{b}": percent(cb.mean()),
            "agreement": percent((ca == cb).mean()), "n_disagree": int((ca != cb).sum()),
            f"only_{a}": int((ca & ~cb).sum()), f"only_{b}": int((cb & ~ca).sum())}


def first_disagreements(samples: pd.DataFrame, graders: Sequence[str],
                        limit: int) -> pd.DataFrame:
    """The first ``limit`` samples (file order: problem, then sample) the graders split on."""
    a, b = graders
    split = samples[samples[f"correct_{a}"].astype(bool) != samples[f"correct_{b}"].astype(bool)]
    return split.head(limit).reset_index(drop=True)


def agreement_tables(spec: Mapping[str, Any], samples: Mapping[tuple[str, str], pd.DataFrame]
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(agreement per model and benchmark, first disagreements of each) from the
    per-sample frames keyed by (summary label, benchmark name)."""
    graders = spec["graders"]
    rows, examples = [], []
    for row in spec["rows"]:
        for bench in spec["benchmarks"]:
            key = (row["label"], bench["name"])
            if key not in samples:
                raise ValueError(f"no per-sample parquet for model {key[0]!r}, "
                                 f"benchmark {key[1]!r}")
            where = {"model": row["model"], "benchmark": bench["label"]}
            rows.append({**where, **agreement_row(samples[key], graders),
                         "label": row["label"], "benchmark_name": bench["name"]})
            split = first_disagreements(samples[key], graders, spec["max_examples"])
            examples += [{**where, **rec, "label": row["label"]}
                         for rec in split.to_dict("records")]
    numbers = [f"pass@1_{g}" for g in graders] + ["agreement"]
    table = pd.DataFrame.from_records(rows)
    table[numbers] = table[numbers].round(DECIMALS)
    columns = ["model", "benchmark", *_sample_columns(graders), "label"]
    return table, pd.DataFrame.from_records(examples, columns=columns)


def _cell(value: Any, width: int = 60) -> str:
    """A markdown table cell: one line, pipes escaped, long text cut."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text[:width]}{'…' if len(text) > width else ''}`" if text else "—"


def agreement_markdown(table: pd.DataFrame, examples: pd.DataFrame,
                       spec: Mapping[str, Any]) -> str:
    a, b = spec["graders"]
    total = int(table["n_samples"].sum())
    agree = total - int(table["n_disagree"].sum())
    lines = [f"# Grader agreement: `{a}` (the tables) vs `{b}` (preset `{spec['preset']}`)", "",
             f"pass@1 (%) of every final evaluation under both graders, and the share of "
             f"samples on which their verdicts agree. Over all {total} samples: "
             f"{percent(agree / total):.2f} % agree.", ""]
    rows = [[str(r["model"]), str(r["benchmark"]), _fmt(r[f"pass@1_{a}"]),
             _fmt(r[f"pass@1_{b}"]), f"{r['agreement']:.2f}", str(r["n_disagree"]),
             str(r[f"only_{a}"]), str(r[f"only_{b}"])] for _, r in table.iterrows()]
    lines += _md_table(["Model", "Benchmark", f"pass@1 {a}", f"pass@1 {b}", "Agree %",
                        "Disagree", f"only {a} ✓", f"only {b} ✓"],
                       [":--", ":--", *["--:"] * 6], rows)
    lines += ["", f"## First disagreements (up to {spec['max_examples']} per model and "
              "benchmark)", ""]
    if examples.empty:
        return "\n".join([*lines, "None: the graders agree on every sample."]) + "\n"
    rows = [[str(r["model"]), str(r["benchmark"]), f"{r['problem_id']} #{r['sample']}",
             _cell(r["gold"]), ("✓ " if r[f"correct_{a}"] else "✗ ") + _cell(r[f"extracted_{a}"]),
             ("✓ " if r[f"correct_{b}"] else "✗ ") + _cell(r[f"extracted_{b}"])]
            for _, r in examples.iterrows()]
    lines += _md_table(["Model", "Benchmark", "Problem #sample", "Gold", a, b],
                       [":--"] * 6, rows)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- job entries


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


def run_comparison(params: Mapping[str, Any], reported_path: str | Path,
                   table_paths: Mapping[str, str | Path], times_path: str | Path,
                   manifest_paths: Sequence[str | Path], csv: str | Path,
                   md: str | Path) -> None:
    """The comparison job: paper_comparison.csv (table cells) and .md (+ training time)."""
    tables = {name: read_table(path) for name, path in table_paths.items()}
    comparison = compare_with_paper(load_reported(reported_path), tables,
                                    params["benchmarks"], params["preset"])
    manifests = {Path(p).parent.name: read_json(p) for p in manifest_paths}
    times = training_time_table(pd.read_csv(times_path), params["training_stages"], manifests)
    write_csv(csv, comparison)
    write_text(md, comparison_markdown(comparison, params["preset"], params["benchmarks"],
                                       params["grader"])
               + "\n" + training_time_markdown(times, params["preset"], params["train_gpus"]))
    counts = comparison["status"].str.split(":").str[0].value_counts().to_dict()
    log.info("%d reported cells: %s", len(comparison), counts)


def run_agreement(spec: Mapping[str, Any], sample_paths: Sequence[str | Path], csv: str | Path,
                  examples_csv: str | Path, md: str | Path) -> None:
    """The agreement job: ``results/eval/final/<label>/<benchmark>.parquet`` files ->
    agreement per model and benchmark (CSV), first disagreements (CSV), markdown."""
    samples = {(Path(p).parent.name, Path(p).stem): read_samples(p, spec["graders"])
               for p in sample_paths}
    table, examples = agreement_tables(spec, samples)
    write_csv(csv, table)
    write_csv(examples_csv, examples)
    write_text(md, agreement_markdown(table, examples, spec))
    log.info("%d model x benchmark cells, %d of %d samples disagree", len(table),
             int(table["n_disagree"].sum()), int(table["n_samples"].sum()))


# ---------------------------------------------------------- Table 3 (cost)


def table3_markdown(table: pd.DataFrame, preset: str) -> str:
    """Table 3 as markdown: our measured cost per stage beside the paper's."""
    lines = [f"## Table 3: training cost per run, measured (preset `{preset}`) vs the paper", "",
             "Ours: job wall time (Snakemake `benchmark:` files; DPO with its share of the "
             "reference log-prob job), devices from the run's manifest, tokens from `log.csv`; "
             "means over the stage's runs. MFU = (6·N·tokens + attention FLOPs) / (time · "
             "devices · bf16 peak), where the device's peak is known.", ""]
    rows = []
    for r in table.to_dict("records"):
        mfu = "—" if r["mfu"] is None or pd.isna(r["mfu"]) else f"{100 * r['mfu']:.1f} %"
        paper = "—" if r["paper_hours"] is None or pd.isna(r["paper_hours"]) else (
            f"{r['paper_hours']:g} h ({r['paper_gpu_hours']:g} GPU-h, {r['paper_hardware']})")
        rows.append([r["stage"], str(r["runs"]), _duration(r["wall_h"]),
                     f"{r['devices']}× {r['device']}", f"{r['device_hours']:.3g}",
                     f"{r['tokens']:,.0f}", f"{r['tokens_per_s_per_device']:,.0f}", mfu, paper])
    lines += _md_table(["Stage", "Runs", "Wall", "Devices", "Device-h", "Tokens",
                        "Tokens/s/device", "MFU", "Paper (one 8×A100-80GB node)"],
                       [":--", "--:", "--:", ":--", "--:", "--:", "--:", "--:", ":--"], rows)
    return "\n".join(lines) + "\n"


def run_table3(spec: Mapping[str, Any], training_times: str | Path, csv: str | Path,
               md: str | Path) -> None:
    """The Table 3 job: ``spec`` from ``redi.plan.table3_spec``."""
    from redi.cost import cost_table

    table = cost_table(spec, pd.read_csv(training_times))
    write_csv(csv, table)
    write_text(md, table3_markdown(table, spec["preset"]))
    log.info("table 3: %d stages -> %s", len(table), csv)
