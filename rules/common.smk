# Shared set-up: config validation, the names every stage uses and the rules' input
# functions. Names and job parameters come from redi/workflow/plan.py (unit-tested); this
# file binds them to the config.
import os
import shutil
import sys

sys.path.insert(0, workflow.basedir)  # the redi package, installed or not

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from redi.workflow import config as rc
from redi.workflow import (
    default_target,
    names,
    ood_plan,
    paths,
    plan,
    prune_plan,
    report_plan,
    snakemake_helpers,
)
from redi.workflow.plan import final_args
from redi.workflow.snakemake_helpers import hp, shell_args

# jobs import redi from this checkout too: the conda envs do not install it
# (Snakemake copies env files into .snakemake/conda/, so `-e ..` cannot work)
os.environ.update(PYTHONPATH=snakemake_helpers.pythonpath(workflow.basedir, os.environ.get("PYTHONPATH")))

try:
    plan.validate(config)  # before any job is planned
except rc.ConfigError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

# A dry run with --software-deployment-method conda (the slurm profile) on a
# machine without conda: Snakemake would stop at `conda info` while hashing
# environments. Planning needs no environment, so plan without; a real run
# still fails loudly when conda is missing.
_deployment = workflow.deployment_settings.deployment_method
if (DeploymentMethod.CONDA in _deployment and shutil.which("conda") is None
        and snakemake_helpers.dry_run_requested(sys.argv[1:])):
    _deployment.discard(DeploymentMethod.CONDA)
    logger.warning("conda not found: dry run planned without conda environments "
                   "(a real run with --software-deployment-method conda needs conda).")

PRESET = names.preset(config)
# a --config on the command line replaces the slurm profile's `preset=paper`: say
# which preset this is, so a cluster run of the tiny preset does not go unnoticed
logger.info(f"preset: {config['preset']}")
SFT_RUNS = plan.sft_runs(config)
BASE_SFT_RUNS = plan.base_sft_runs(config)  # Table 4's other base models
STAGE2_RUNS = plan.stage2_runs(config)
FINAL_MODELS = plan.final_models(config)
TRAIN_GPUS = PRESET["resources"]["train_gpus"]
EVAL_GPUS = PRESET["resources"]["eval_gpus"]
TRAIN_THREADS = PRESET["resources"]["train_threads"]
EVAL_THREADS = PRESET["resources"]["eval_threads"]
LOGS = paths.LOGS
code = snakemake_helpers.code_inputs(workflow.basedir)  # code(script): the script + its redi/ modules
# every target of `snakemake` without arguments
ALL_TARGETS = default_target.all_targets(config)


wildcard_constraints:
    run=snakemake_helpers.one_of(STAGE2_RUNS),
    sft=snakemake_helpers.one_of(SFT_RUNS + BASE_SFT_RUNS),
    base=snakemake_helpers.one_of(plan.base_models(config)),
    epochs=r"\d+",


def job_resources(job, gpu=None, threads=1):
    """The job's scheduler request, from the active preset (redi.workflow.snakemake_helpers.job_resources)."""
    return snakemake_helpers.job_resources(config, job, gpu, threads)


# --------------------------------------------------------- input functions


def get_tokenizer_corpus(wildcards):
    return plan.tokenizer_corpus(config)


def get_base_tokenizer_corpus(wildcards):
    return plan.tokenizer_corpus(config, wildcards.base)


def get_base_tokenizer(wildcards):
    return plan.tokenizer_dir(config, wildcards.base)


def get_base_model(wildcards):
    return plan.base_model_dir(wildcards.base)


def get_base_sft_data(wildcards):
    return plan.data_path(config, wildcards.base, paths.SFT_DATA)


def get_ref_pairs(wildcards):
    return plan.pairs_path(config, wildcards.sft)


def get_stage2_inputs(wildcards):
    return plan.stage2_inputs(config, wildcards.run)


def get_init_manifest(wildcards):
    return paths.manifest(plan.init_run(config, wildcards.run))


def get_curve_inputs(wildcards):
    return plan.curve_inputs(config, wildcards.curve_run)


def get_final_inputs(wildcards):
    return plan.final_inputs(config, wildcards.label)


def get_toy_ood_inputs(wildcards):
    return ood_plan.toy_ood_inputs(config, wildcards.ood_toy)


def get_ood_inputs(wildcards):
    return ood_plan.ood_inputs(config, wildcards.label)


def get_table_inputs(wildcards):
    return report_plan.table_inputs(config, wildcards.table)


def get_figure_inputs(wildcards):
    return report_plan.figure_inputs(config, wildcards.figure)


def get_prune_inputs(wildcards):
    return prune_plan.prune_inputs(config, wildcards.prune_run)
