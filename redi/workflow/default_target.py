"""What `snakemake` without a target builds (the Snakefile's ``all`` rule)."""

from __future__ import annotations

from redi.report.plotting import FIGURES
from redi.workflow import names, ood_plan, paths, plan, prune_plan, report_plan
from redi.workflow.names import Config


def all_targets(config: Config) -> list[str]:
    """What `snakemake` without a target builds: the data report, every trained run, its
    curve, every final evaluation, the out-of-domain evaluations of Table 5, Figure 8's
    statistics, every table and figure; with ``prune_checkpoints`` on, each run's prune
    marker."""
    trained = names.all_sft_runs(config) + plan.stage2_runs(config)
    genstats = [paths.genstats(r) for r in report_plan.figure_readers(config, ["genstats"])]
    return [
        paths.DATA_REPORT,
        *(paths.manifest(r) for r in trained),
        *(path for r in trained for path in (paths.curve(r), paths.best(r))),
        *(paths.final_summary(label) for label in plan.final_models(config)),
        *ood_plan.table5_inputs(config),
        *genstats,
        *(path for t in report_plan.tables(config) for path in paths.table_outputs(t).values()),
        *paths.PAPER_COMPARISON.values(),
        *paths.AGREEMENT_OUTPUTS.values(),
        *paths.TABLE3_OUTPUTS.values(),
        *paths.TABLE5_OUTPUTS.values(),
        paths.TOKEN_CORRELATION,
        *(paths.figure(f, ext) for f in FIGURES for ext in ("png", "pdf")),
        *paths.CLAIMS_OUTPUTS.values(),
        *prune_plan.prune_targets(config),
    ]
