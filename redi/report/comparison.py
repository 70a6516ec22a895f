"""The reproduced numbers beside the paper's, with the training times
(paper_comparison.csv/.md)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from redi.io import read_json, write_csv, write_text
from redi.report.table3 import training_time_markdown, training_time_table
from redi.report.tables import DECIMALS, format_number, markdown_table

log = logging.getLogger(__name__)


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


def read_table(path: str | Path) -> pd.DataFrame:
    """A table CSV written by ``pass1_table``/``pass16_table``, types restored."""
    text = {c: str for c in ("model", "role", "run", "config", "checkpoint", "selection",
                             "label")}
    frame = pd.read_csv(path, dtype={**text, "step": "Int64"})
    for column in text:
        frame[column] = frame[column].fillna("")
    return frame


def load_reported(path: str | Path) -> pd.DataFrame:
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
    source = "Paper: the v1 numbers (`redi/report/paper/reported_results.csv`, graded with rllm's grader)."
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
    d = format_number(r["diff"])
    d = f"+{d}" if float(d) > 0 else d
    if pd.notna(r["diff_sem_units"]):
        d += f" ({format_number(r['diff_sem_units'])})"
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
        lines += markdown_table(["Model", "", *columns], [":--", ":--", *["--:"] * len(columns)],
                           rows)
        lines.append("")
    return "\n".join(lines)


def _pm(value: float, sem: float | None) -> str:
    return format_number(value) if sem is None or pd.isna(sem) else f"{format_number(value)} ± {format_number(sem)}"


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
