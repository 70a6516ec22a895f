"""The grader agreement table: the tables' grader vs Math-Verify on every
final-evaluation sample."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from redi.io import write_csv, write_text
from redi.report.tables import DECIMALS, format_number, markdown_table, percent

log = logging.getLogger(__name__)


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
    rows = [[str(r["model"]), str(r["benchmark"]), format_number(r[f"pass@1_{a}"]),
             format_number(r[f"pass@1_{b}"]), f"{r['agreement']:.2f}", str(r["n_disagree"]),
             str(r[f"only_{a}"]), str(r[f"only_{b}"])] for _, r in table.iterrows()]
    lines += markdown_table(["Model", "Benchmark", f"pass@1 {a}", f"pass@1 {b}", "Agree %",
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
    lines += markdown_table(["Model", "Benchmark", "Problem #sample", "Gold", a, b],
                       [":--"] * 6, rows)
    return "\n".join(lines) + "\n"


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
