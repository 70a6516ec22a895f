"""Table 3: training cost, measured, beside the paper's numbers.

From the workflow's own records: each job's ``benchmark:`` file (wall time), the
run's ``log.csv`` (tokens per step, and the sum of squared sequence lengths for
the attention FLOPs) and ``manifest.json`` (processes, device, model config).
Per stage (SFT 3 ep, SFT 5 ep, DPO, SimPO, REDI): the mean over its runs of the
wall time, devices, device-hours, tokens, tokens/s per device and MFU where the
device's peak is known. DPO runs carry their share of the reference log-prob job
(its time divided by the DPO runs that use it).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from redi.io import write_csv, write_text
from redi.report.flops import device_peak, non_embedding_params, training_flops
from redi.report.tables import markdown_table

log = logging.getLogger(__name__)


TABLE3_COLUMNS = ["stage", "runs", "wall_h", "devices", "device", "device_hours", "tokens",
                  "tokens_per_s_per_device", "mfu", "paper_hours", "paper_gpu_hours",
                  "paper_hardware"]


def job_seconds(benchmark_tsv: str | Path) -> float:
    """Wall seconds of a job from Snakemake's ``benchmark:`` file (its last line)."""
    lines = Path(benchmark_tsv).read_text().strip().splitlines()
    header, last = lines[0].split("\t"), lines[-1].split("\t")
    return float(last[header.index("s")])


def run_record(manifest_path: str | Path, benchmark_tsv: str | Path,
               extra_seconds: float = 0.0) -> dict[str, Any]:
    """One run's cost: wall time (+ its share of a shared job), devices, tokens, FLOPs."""
    import pandas as pd

    manifest = json.loads(Path(manifest_path).read_text())
    log = pd.read_csv(manifest["log"])
    device = manifest.get("provenance", {}).get("device", {})
    gpus = device.get("type") == "cuda"
    config = json.loads((Path(manifest["final_checkpoint"]) / "config.json").read_text())
    tokens = float(log["tokens"].sum())
    tokens_sq = float(log["tokens_sq"].sum()) if "tokens_sq" in log else math.nan
    flops = training_flops(non_embedding_params(config), tokens, tokens_sq,
                           config["num_hidden_layers"], config["hidden_size"])
    return {"seconds": job_seconds(benchmark_tsv) + extra_seconds,
            "devices": int(manifest.get("world_size", 1)),
            "device": device.get("name", "unknown") if gpus else "CPU",
            "peak": device_peak(device.get("name")) if gpus else None,
            "tokens": tokens, "flops": flops}


def stage_row(stage: str, records: Sequence[dict[str, Any]],
              paper: Mapping[str, Any] | None) -> dict[str, Any]:
    """Table 3's row of one stage: means over its runs, beside the paper's numbers."""
    n = len(records)
    seconds = sum(r["seconds"] for r in records) / n
    devices = records[0]["devices"]
    tokens = sum(r["tokens"] for r in records) / n
    peak = records[0]["peak"]
    flops = sum(r["flops"] for r in records) / n
    mfu = flops / (seconds * devices * peak) if peak and seconds else None
    return {
        "stage": stage, "runs": n, "wall_h": seconds / 3600, "devices": devices,
        "device": records[0]["device"], "device_hours": seconds * devices / 3600,
        "tokens": tokens, "tokens_per_s_per_device": tokens / seconds / devices,
        "mfu": mfu if mfu is None or math.isfinite(mfu) else None,
        "paper_hours": paper["duration_hours"] if paper else None,
        "paper_gpu_hours": paper["gpu_hours"] if paper else None,
        "paper_hardware": paper["hardware"] if paper else None,
    }


def cost_table(spec: Mapping[str, Any], paper_times: Any) -> Any:
    """Table 3 from ``spec``: per stage, its runs (manifest, benchmark file) and, for DPO,
    the reference jobs' benchmark files with the number of runs that share each."""
    import pandas as pd

    paper = {row["stage"]: row for row in paper_times.to_dict("records")}
    rows = []
    for stage in spec["stages"]:
        shares = {ref: job_seconds(ref) / n for ref, n in stage.get("shared", {}).items()}
        records = [run_record(run["manifest"], run["benchmark"], shares.get(run.get("ref"), 0.0))
                   for run in stage["runs"]]
        if records:
            rows.append(stage_row(stage["label"], records, paper.get(stage["paper"])))
    return pd.DataFrame(rows, columns=TABLE3_COLUMNS)


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
    lines += markdown_table(["Stage", "Paper", "Paper GPU-h", "Paper hardware", "Ours"],
                       [":--", "--:", "--:", ":--", "--:"], rows)
    return "\n".join(lines) + "\n"


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
    lines += markdown_table(["Stage", "Runs", "Wall", "Devices", "Device-h", "Tokens",
                        "Tokens/s/device", "MFU", "Paper (one 8×A100-80GB node)"],
                       [":--", "--:", "--:", ":--", "--:", "--:", "--:", "--:", ":--"], rows)
    return "\n".join(lines) + "\n"


def run_table3(spec: Mapping[str, Any], training_times: str | Path, csv: str | Path,
               md: str | Path) -> None:
    """The Table 3 job: ``spec`` from ``redi.workflow.report_plan.table3_spec``."""
    table = cost_table(spec, pd.read_csv(training_times))
    write_csv(csv, table)
    write_text(md, table3_markdown(table, spec["preset"]))
    log.info("table 3: %d stages -> %s", len(table), csv)
