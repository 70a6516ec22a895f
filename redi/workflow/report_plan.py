"""The reports' plan: every table's rows, spec and inputs (Tables 1-5, the grader
agreement, the paper comparison), every figure's runs and inputs, the
claims check's spec, and every target of `snakemake` without arguments."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redi.report.plotting import FIGURES, STEP_SIZES
from redi.train.losses import OBJECTIVES, stage2_objectives
from redi.workflow import config as rc
from redi.workflow import names, paths, plan
from redi.workflow.names import Config
from redi.workflow.ood_plan import table5_spec
from redi.workflow.snakemake_helpers import shell_args


def _preset_benchmarks(preset: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": b["name"], "label": b["label"]} for b in preset["benchmarks"]]


def _preset_benchmark(preset: Mapping[str, Any], name: str) -> dict[str, str]:
    return next(b for b in _preset_benchmarks(preset) if b["name"] == name)


def _peak(config: Config) -> str:
    """How checkpoints are picked, for the captions (its closing bracket left to them)."""
    preset = names.preset(config)
    inter = _preset_benchmark(preset, preset["intermediate_benchmark"])["label"]
    n_inter = config["evaluation"]["intermediate"]["n_samples"]
    return f"peak intermediate {inter} accuracy (pass@1 over {n_inter} samples"


Rows = tuple[str, str, list[dict[str, Any]]]  # title, selection caption, rows


def _table2_rows(config: Config) -> Rows:
    """The start SFT model, then the best run of each group: the paper's order."""
    t2 = config["tables"]["table2"]
    start = plan.sft_model_name(t2["start"])
    rows = [{"label": t2["start"], "model": start, "role": "start", "runs": [t2["start"]],
             "selection": "final checkpoint"}]
    for g in plan.table2_groups(config):
        pick = "pinned run" if g["pinned"] else f"best of {len(g['runs'])} runs"
        rows.append({"label": f"table2-{g['slug']}", "model": g["label"], "role": "group",
                     "runs": list(g["runs"]), "selection": f"{pick}, peak checkpoint"})
    title = f"Table 2 (preset {config['preset']}): ablation from {start}."
    selection = (f"Method rows: the best run of each group and its checkpoint, both by "
                 f"{_peak(config)}; config `pin` forces a run); {start}: its final checkpoint.")
    return title, selection, rows


def _table1_rows(config: Config) -> Rows:
    """The external baselines, the SFT model and the final model."""
    t1 = config["tables"]["table1"]
    final, sft = t1["final"], plan.sft_model_name(t1["sft"])
    method = OBJECTIVES[config["runs"][final]["objective"]].label
    rows = [{"label": f"baseline-{b['name']}", "model": b["label"], "role": "baseline",
             "source": b["model"], "selection": "external model",
             "quoted_in_paper": b.get("quoted_in_paper", False)}
            for b in names.preset(config)["baselines"]]
    rows.append({"label": t1["sft"], "model": sft, "role": "sft", "runs": [t1["sft"]],
                 "selection": "final checkpoint"})
    which = t1["final_checkpoint"]
    rows.append({"label": "table1-final", "model": f"{method} (final)", "role": "final",
                 "runs": [final], "selection": f"{which} checkpoint"})
    title = f"Table 1 (preset {config['preset']}): main results."
    checkpoint = f"checkpoint with the {_peak(config)})" if which == "best" else "last checkpoint"
    selection = (f"{method} (final): run `{final}`, its {checkpoint}; {sft}: its final "
                 "checkpoint; baselines as released.")
    return title, selection, rows


# The paper's relative improvement of REDI over SFT on the benchmark average (v2,
# appendix D.2: "17.7 %" for Llama-3.2-3B, "4.2 %" for Qwen2.5-Math-7B; Table 4's cells
# did not survive the text extraction), by the base model's name in `base_models`.
PAPER_TABLE4_RELATIVE = {"llama3b": 17.7, "qwen7b": 4.2}


def _table4_rows(config: Config) -> Rows:
    """Per base model its SFT row and its REDI row (Avg relative to the SFT row)."""
    t4 = config["tables"]["table4"]
    rows = []
    for row in t4["models"]:
        base = names.run_base(config, row["sft"])
        name = config["base_models"][base]["label"]
        method = OBJECTIVES[config["runs"][row["final"]]["objective"]].label
        epochs = names.SFT_RUN.fullmatch(row["sft"])["epochs"]
        rows.append({"label": row["sft"], "model": f"{name} SFT-{epochs}ep", "role": "sft",
                     "runs": [row["sft"]], "selection": "final checkpoint"})
        rows.append({"label": f"table4-{base}", "model": f"{name} {method}", "role": "final",
                     "runs": [row["final"]], "selection": f"{t4['final_checkpoint']} checkpoint",
                     "relative_to": row["sft"],
                     "paper_relative": PAPER_TABLE4_RELATIVE.get(base)})
    which = t4["final_checkpoint"]
    checkpoint = f"checkpoint with the {_peak(config)})" if which == "best" else "last checkpoint"
    title = f"Table 4 (preset {config['preset']}): other base models."
    selection = (f"Per base model: its SFT run (final checkpoint) and the stage-2 run from it "
                 f"({checkpoint}). \"vs SFT\": the relative improvement of Avg over the SFT "
                 f"row; \"paper\": the paper's (appendix D.2).")
    return title, selection, rows


@dataclass(frozen=True)
class TableKind:
    """A registry entry: one table of final-evaluation summaries (pass@1 ± SEM and
    pass@16, CSV and markdown each, ``redi.report.tables.run_tables``). ``rows`` gives its
    title, selection caption and rows (``final_models`` labels); ``title`` is its
    report subcategory. Captions: ``report/<name>.rst`` and ``report/<name>_pass16.rst``."""

    rows: Callable[[Config], Rows]
    title: str


# Adding a table = one rows function + one entry here + its two captions.
TABLES: dict[str, TableKind] = {
    "table1": TableKind(_table1_rows, "Table 1"),
    "table2": TableKind(_table2_rows, "Table 2"),
    "table4": TableKind(_table4_rows, "Table 4"),
}


def tables(config: Config) -> list[str]:
    """The tables of ``TABLES`` with rows in this config (Table 4 needs other base models)."""
    return [t for t in TABLES if TABLES[t].rows(config)[2]]


def table_spec(config: Config, table: str) -> dict[str, Any]:
    """The job parameters of one table of ``TABLES`` (see ``redi.reporting``)."""
    title, selection, rows = TABLES[table].rows(config)
    runs = sorted({r for row in rows for r in row.get("runs", [])})
    return {
        "table": table,
        "preset": config["preset"],
        "title": title,
        "title_pass16": title.replace(":", ", pass@16:", 1),
        "selection": selection,
        "benchmarks": _preset_benchmarks(names.preset(config)),
        "rows": rows,
        "run_labels": {r: plan.run_label(config, r) for r in runs},
    }


def table_inputs(config: Config, table: str) -> list[str]:
    return [paths.final_summary(row["label"])
            for row in table_spec(config, table)["rows"]]


def agreement_spec(config: Config) -> dict[str, Any]:
    """The agreement table's job parameters: the tables' grader vs Math-Verify's
    ``strict`` (vs ``rllm`` when the tables use strict), for every model of the tables
    (each label once) on every benchmark."""
    grader = config["evaluation"]["final"]["grader"]
    reference = "rllm" if grader == "strict" else "strict"
    rows: dict[str, dict[str, str]] = {}
    for table in TABLES:
        for row in table_spec(config, table)["rows"]:
            rows.setdefault(row["label"], {"label": row["label"], "model": row["model"]})
    return {"preset": config["preset"], "graders": [grader, reference],
            "benchmarks": _preset_benchmarks(names.preset(config)), "rows": list(rows.values()),
            "max_examples": plan.AGREEMENT_EXAMPLES}


def agreement_inputs(config: Config) -> list[str]:
    spec = agreement_spec(config)
    return [paths.final_samples(row["label"], b["name"])
            for row in spec["rows"] for b in spec["benchmarks"]]


def _objective_order(config: Config) -> list[str]:
    """The stage-2 objectives in Table 2's row order (then any others)."""
    listed = [config["runs"][r]["objective"] for g in config["tables"]["table2"]["groups"]
              for r in g["runs"]]
    return list(dict.fromkeys([*listed, *stage2_objectives()]))


def table3_spec(config: Config) -> dict[str, Any]:
    """Table 3 (training cost, measured): per stage its runs' manifests and job
    benchmark files; DPO runs also name their reference job, shared by the DPO runs
    from the same SFT model."""
    stages = [{"label": f"SFT {run[4:-2]} ep", "paper": f"{run}",
               "runs": [{"manifest": paths.manifest(run), "benchmark": paths.benchmark_tsv("sft", run)}]}
              for run in plan.sft_runs(config)]
    for objective in _objective_order(config):
        runs = [r for r in plan.stage2_runs(config, primary_only=True)
                if config["runs"][r]["objective"] == objective]
        needs_ref = OBJECTIVES[objective].needs_ref
        entries = [{"manifest": paths.manifest(r), "benchmark": paths.benchmark_tsv("stage2", r),
                    **({"ref": paths.benchmark_tsv("ref_logps", plan.init_run(config, r))}
                       if needs_ref else {})} for r in runs]
        shared: dict[str, int] = {}
        for entry in entries:
            if "ref" in entry:
                shared[entry["ref"]] = shared.get(entry["ref"], 0) + 1
        if entries:
            stages.append({"label": OBJECTIVES[objective].label, "paper": f"{objective}_1ep",
                           "runs": entries, "shared": shared})
    return {"preset": config["preset"], "stages": stages}


def table3_inputs(spec: Mapping[str, Any]) -> list[str]:
    """Every record Table 3 reads (manifests and job benchmark files)."""
    paths = [path for stage in spec["stages"] for run in stage["runs"]
             for path in (run["manifest"], run["benchmark"])]
    paths += [ref for stage in spec["stages"] for ref in stage.get("shared", {})]
    return list(dict.fromkeys(paths))


def comparison_params(config: Config) -> dict[str, Any]:
    """Benchmarks and grader, and which of our runs time each paper training stage."""
    preset = names.preset(config)
    stages: dict[str, list[str]] = {r: [r] for r in plan.sft_runs(config)}
    for run in plan.stage2_runs(config, primary_only=True):
        stages.setdefault(f"{config['runs'][run]['objective']}_1ep", []).append(run)
    return {"preset": config["preset"], "benchmarks": _preset_benchmarks(preset),
            "grader": config["evaluation"]["final"]["grader"], "training_stages": stages,
            "train_gpus": preset["resources"]["train_gpus"]}


def figure_runs(config: Config, figure: str | None = None) -> list[str]:
    """The runs of one figure of ``redi.report.plotting.FIGURES``, or of all figures: the SFT
    runs, then each run at its first appearance in `figures` (not the order of `runs`,
    which a --configfile override reorders)."""
    if figure is not None and FIGURES[figure].shows == "sft":
        return plan.sft_runs(config)
    if figure is not None:
        names = config["figures"][figure]
        return [names] if isinstance(names, str) else list(names)
    shown = [r for f in config["figures"] for r in figure_runs(config, f)]
    return list(dict.fromkeys(plan.sft_runs(config) + shown))


def _figure_spec(config: Config, run: str, own: bool) -> dict[str, Any]:
    """A run's spec in a figure's params: in full for the figure's own runs; for the
    others only what fixes their colour and the own runs' dashes (the objective and
    its ``style_keys``), so that changing another figure's run does not replan this one."""
    if run not in config["runs"]:
        return {"objective": "sft"}
    spec = config["runs"][run]
    objective = OBJECTIVES[spec["objective"]]
    keys = (*rc.RUN_FIELDS, *objective.hyper_names) if own else (
        "objective", *objective.style_keys)
    return {k: v for k, v in spec.items() if k in keys}


def figure_readers(config: Config, reads: Iterable[str]) -> list[str]:
    """The runs of the figures that read any of ``reads`` (``paths.FIGURE_INPUTS`` kinds)."""
    return list(dict.fromkeys(r for f, kind in FIGURES.items() if set(reads) & set(kind.reads)
                              for r in figure_runs(config, f)))


def figure_params(config: Config, figure: str) -> dict[str, Any]:
    """One figure's job parameters: its runs with their specs and legend labels, the
    specs of every other run in any figure (``_figure_spec``: a run keeps its colour
    across figures), the benchmark it shows."""
    preset = names.preset(config)
    own = figure_runs(config, figure)
    palette = figure_runs(config)
    return {
        "figure": figure,
        "runs": own,
        "palette": palette,
        "specs": {r: _figure_spec(config, r, r in own) for r in palette},
        "labels": {r: plan.run_label(config, r) for r in own},
        "benchmark": _preset_benchmark(preset, preset[FIGURES[figure].benchmark]),
        # the step-size panels (redi.report.plotting.STEP_SIZES): the authors' LR x grad norm,
        # then the update norm (report/fig3.rst)
        "step_sizes": list(STEP_SIZES),
    }


def figure_inputs(config: Config, figure: str) -> dict[str, list[str]]:
    """A figure job's inputs by kind (``redi.report.plotting.READS``): those its registry entry
    reads for each of its runs, the other kinds empty."""
    reads, runs = FIGURES[figure].reads, figure_runs(config, figure)
    return {kind: [path.format(run=r) for r in runs] if kind in reads else []
            for kind, path in paths.FIGURE_INPUTS.items()}


def figure_args(inputs: Any) -> str:
    """The figure job's input options, ``--<kind> PATH...`` for each kind it reads."""
    return " ".join(shell_args(f"--{kind.replace('_', '-')}", inputs[kind])
                    # a Snakemake Namedlist: `in` would test its values
                    for kind in paths.FIGURE_INPUTS if kind in inputs.keys() and inputs[kind])  # noqa: SIM118


def _group_kind(config: Config, runs: list[str]) -> str:
    """A Table 2 group's kind from its runs' objective (α = 1 REDI is symmetric)."""
    specs = [config["runs"][r] for r in runs]
    objective = specs[0]["objective"]
    if objective == "redi" and all(s.get("alpha") == 1.0 for s in specs):
        return "symmetric"
    return objective


def claims_spec(config: Config) -> dict[str, Any]:
    """The job's parameters: Table 2's groups by kind, the hyper-parameters of every
    run of Table 2's grid (pins ignored: the grid's curves decide the DPO claims), the
    SFT rows, Table 4's (SFT, REDI) pairs and Table 5's rows."""
    from redi.report.claims import SEM_FACTOR

    t2 = config["tables"]["table2"]
    groups, runs = {}, {}
    for g in t2["groups"]:
        kind = _group_kind(config, g["runs"])
        groups[kind] = {"label": f"table2-{names.table2_slug(g['label'])}", "runs": g["runs"]}
        for r in g["runs"]:
            spec = config["runs"][r]
            runs[r] = {k: spec[k] for k in ("objective", "lr", "alpha", "beta") if k in spec}
    t4 = [(m["sft"], f"table4-{names.run_base(config, m['sft'])}")
          for m in config["tables"]["table4"]["models"]] if "table4" in tables(config) else []
    t5 = table5_spec(config)
    return {"preset": config["preset"], "sem_factor": SEM_FACTOR, "groups": groups,
            "runs": runs, "table2_start": t2["start"], "table1_sft": config["tables"]["table1"]["sft"],
            "table4": t4, "table5": {"reference": t5["reference"], "benchmarks": t5["benchmarks"],
                                     "models": [r["label"] for r in t5["rows"]]}}


def claims_inputs(config: Config) -> dict[str, list[str]]:
    """The tables (pass@1 and pass@16 CSVs, Table 5) and the curves of Table 2's grid."""
    csvs = [paths.table_outputs(t)[k] for t in tables(config) for k in ("csv", "pass16_csv")]
    runs = claims_spec(config)["runs"]
    return {"tables": [*csvs, paths.TABLE5_OUTPUTS["csv"]],
            "curves": [paths.FIGURE_INPUTS["curves"].format(run=r) for r in runs]}
