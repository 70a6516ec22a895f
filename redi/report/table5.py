"""Table 5 (paper appendix D.2): out-of-domain pass@1 ± SEM of each model, and the
relative improvement of every row over the first one (the reference, SFT-3ep by
default): ``(value - reference) / reference`` of pass@1, beside the paper's (the
benchmark kind's ``paper`` figure, ``redi.eval.ood_kinds``).

Inputs are the out-of-domain summaries ``results/eval/ood/<label>/summary.json``
(``redi.eval.ood``; fractions); the table holds percentages. The job parameters come from
``redi.workflow.ood_plan.table5_spec``::

    {"table": "table5", "preset": "tiny", "title": "...", "reference": "sft_3ep",
     "benchmarks": [{"name": "toy_code", "label": "Toy-Code", "kind": "code"}, ...],
     "rows": [{"label": "sft_3ep", "model": "SFT-3ep", "kind": "sft", "runs": [...]}, ...],
     "paper_row": "table1-final"}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from redi.eval import ood_kinds
from redi.eval.metrics import relative_improvement
from redi.io import write_csv, write_text
from redi.report.tables import DECIMALS, format_number, load_summaries, markdown_table, percent

log = logging.getLogger(__name__)


TRACE_COLUMNS = ["kind", "run", "step", "checkpoint", "label"]


def _pass1(summary: Mapping[str, Any], label: str, name: str) -> Mapping[str, Any]:
    try:
        return summary["benchmarks"][name]
    except KeyError:
        raise ValueError(f"out-of-domain summary of {label!r} has no benchmark {name!r}") from None


def _trace(row: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    model = summary.get("model", {})
    run = model.get("run", "")
    if row["runs"] and run not in row["runs"]:
        # a stale summary (config changed since the evaluation): refuse to mislabel it
        raise ValueError(f"summary of {row['label']!r} names run {run!r}, not one of {row['runs']}")
    return {"kind": row["kind"], "run": run, "step": model.get("step"),
            "checkpoint": model.get("checkpoint", ""), "label": row["label"]}


def table5_frame(spec: Mapping[str, Any], summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per model: per benchmark pass@1 and SEM (%), the relative improvement over
    the reference row (empty on it) and the paper's (on ``paper_row`` only)."""
    reference = summaries[spec["reference"]]
    records = []
    for row in spec["rows"]:
        summary, rec = summaries[row["label"]], {"model": row["model"]}
        for bench in spec["benchmarks"]:
            name = bench["name"]
            ours = _pass1(summary, row["label"], name)["pass@1"]
            ref = _pass1(reference, spec["reference"], name)["pass@1"]
            own = row["label"] == spec["reference"]
            rec[name] = percent(ours)
            rec[f"{name}_sem"] = percent(_pass1(summary, row["label"], name)["pass@1_sem"])
            rec[f"{name}_rel"] = math.nan if own else relative_improvement(ours, ref)
            paper = row["label"] == spec["paper_row"] and not own
            rec[f"{name}_rel_paper"] = ood_kinds.get(bench["kind"]).paper[1] if paper else math.nan
        records.append({**rec, **_trace(row, summary)})
    numbers = [f"{b['name']}{s}" for b in spec["benchmarks"]
               for s in ("", "_sem", "_rel", "_rel_paper")]
    frame = pd.DataFrame.from_records(records, columns=["model", *numbers, *TRACE_COLUMNS])
    frame[numbers] = frame[numbers].astype(float).round(DECIMALS)
    frame["step"] = frame["step"].astype("Int64")
    return frame


def _relative_cell(value: float, own: bool) -> str:
    if own:
        return "—"
    return "n/a (reference 0)" if pd.isna(value) else f"{'+' if value >= 0 else ''}{format_number(value)} %"


def table5_markdown(frame: pd.DataFrame, spec: Mapping[str, Any], n_samples: str) -> str:
    """The markdown twin: one decimal; our relative improvement and the paper's."""
    reference = frame.loc[frame["label"] == spec["reference"], "model"].iloc[0]
    caption = (f"**{spec['title']}** pass@1 (%) over {n_samples} samples per problem ± SEM. "
               f"\"vs {reference}\": the relative improvement (value − reference) / reference "
               f"of pass@1. \"paper\": the paper's relative improvement of Qwen-REDI-1.5B over "
               f"Qwen-SFT-1.5B-3ep (appendix D.2), beside the final REDI model.")
    if spec["preset"] != "paper":
        caption += (f" Preset {spec['preset']}: generated stand-ins for the paper's benchmarks, "
                    "not comparable with its numbers.")
    header, rows = ["Model"], []
    for bench in spec["benchmarks"]:
        paper_name = ood_kinds.get(bench["kind"]).paper[0]
        header += [bench["label"], f"vs {reference}", f"paper ({paper_name})"]
    for _, rec in frame.iterrows():
        own = rec["label"] == spec["reference"]
        cells = [str(rec["model"])]
        for bench in spec["benchmarks"]:
            name = bench["name"]
            paper = rec[f"{name}_rel_paper"]
            cells += [f"{format_number(rec[name])} ± {format_number(rec[name + '_sem'])}",
                      _relative_cell(rec[f"{name}_rel"], own),
                      "—" if pd.isna(paper) else f"+{format_number(paper)} %"]
        rows.append(cells)
    lines = [caption, "", *markdown_table(header, [":--", *["--:"] * (len(header) - 1)], rows), "",
             "Rows (run, checkpoint step, checkpoint; summary label):", ""]
    for _, rec in frame.iterrows():
        where = (f"`{rec['run']}`, step {rec['step']}, `{rec['checkpoint']}`" if rec["run"]
                 else f"external model `{rec['checkpoint']}`")
        lines.append(f"- {rec['model']}: {where} (`{rec['label']}`)")
    return "\n".join(lines) + "\n"


def run_table5(spec: Mapping[str, Any], summary_paths: Sequence[str | Path], csv: str | Path,
               md: str | Path) -> pd.DataFrame:
    """The table5 job: ``results/table5.csv`` and its markdown twin."""
    summaries = load_summaries(summary_paths)
    missing = [r["label"] for r in spec["rows"] if r["label"] not in summaries]
    if missing:
        raise ValueError(f"no out-of-domain summary for rows {missing}")
    frame = table5_frame(spec, summaries)
    samples = sorted({int(_pass1(summaries[r["label"]], r["label"], b["name"])["n_samples"])
                      for r in spec["rows"] for b in spec["benchmarks"]})
    write_csv(csv, frame)
    write_text(md, table5_markdown(frame, spec, "/".join(map(str, samples))))
    log.info("table 5: %d rows -> %s, %s", len(frame), csv, md)
    return frame
