# REDI reproduction workflow: data -> SFT -> stage 2 (DPO/SimPO/REDI) ->
# evaluation -> tables, figures and report. See README.md.
#
#   snakemake --cores 2                       # tiny preset, everything
#   snakemake --cores 2 results/table2.csv    # one table
#   snakemake -n --config preset=paper        # inspect the paper-scale DAG
#   snakemake --profile slurm results/table2.csv   # on a SLURM cluster

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"
include: "rules/claims.smk"
include: "rules/plan.smk"
include: "rules/prune.smk"

report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
