"""The plan of the opt-in checkpoint pruning (``presets.<preset>.prune_checkpoints``):
which runs are pruned, what each prune job waits for (every job that loads one of the
run's checkpoints) and which runs are kept whole (Figures 8-10 read every checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redi.train.losses import OBJECTIVES
from redi.workflow import names, paths, plan
from redi.workflow.names import Config
from redi.workflow.report_plan import figure_readers

# what reads every checkpoint of a run (Figures 8-10): pruning keeps all of that run's
EVERY_CHECKPOINT_READS = ("genstats", "entropy", "token_logps")


def every_checkpoint_runs(config: Config) -> list[str]:
    """The runs Figures 8-10 read checkpoint by checkpoint: pruning keeps them whole."""
    return figure_readers(config, EVERY_CHECKPOINT_READS)


def prune_runs(config: Config) -> list[str]:
    """Every trained run (SFT, Table 4's base SFT runs, stage 2): each may be pruned."""
    return names.all_sft_runs(config) + plan.stage2_runs(config)


def prune_targets(config: Config) -> list[str]:
    """Each run's prune marker when the preset's ``prune_checkpoints`` is on, else none."""
    if not names.preset(config).get("prune_checkpoints", False):
        return []
    return [paths.prune_marker(r) for r in prune_runs(config)]


def prune_params(config: Config, run: str) -> dict[str, Any]:
    return {"run": run, "every_checkpoint": run in every_checkpoint_runs(config)}


def _label_runs(spec: Mapping[str, Any]) -> list[str]:
    """The runs whose checkpoints a final-evaluation model may be."""
    if spec["kind"] == "group":
        return list(spec["runs"])
    return [spec["run"]] if "run" in spec else []


def checkpoint_consumers(config: Config, run: str) -> list[str]:
    """An output of every job that loads a checkpoint of ``run``: the stage-2 runs it
    initialises and their reference log-probs, the final and out-of-domain evaluations
    of its models, Figure 8's generations and Figures 9/10's analysis of it and of the
    runs it initialises (step 0). Its curve is the prune job's own input."""
    children = [r for r in plan.stage2_runs(config) if plan.init_run(config, r) == run]
    out = [paths.manifest(r) for r in children]
    if any(OBJECTIVES[config["runs"][r]["objective"]].needs_ref for r in children):
        out.append(paths.ref_logps(run))
    labels = [label for label, spec in plan.final_models(config).items() if run in _label_runs(spec)]
    out += [paths.final_summary(label) for label in labels]
    out += [paths.ood_summary(label) for label in labels if label in config["tables"]["table5"]["models"]]
    genstats = figure_readers(config, ["genstats"])
    analysed = figure_readers(config, ["entropy", "token_logps"])
    for r in (run, *children):
        out += [paths.FIGURE_INPUTS["genstats"].format(run=r)] if r in genstats else []
        out += [paths.FIGURE_INPUTS[k].format(run=r) for k in ("entropy", "token_logps")
                if r in analysed]
    return out


def prune_inputs(config: Config, run: str) -> dict[str, Any]:
    """What a run's prune job waits for: its manifest, curve and best checkpoint, and
    every job that loads one of its checkpoints (``checkpoint_consumers``)."""
    return {"manifest": paths.manifest(run), "curve": paths.curve(run), "best": paths.best(run),
            "consumers": checkpoint_consumers(config, run)}
