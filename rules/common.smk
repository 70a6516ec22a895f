# Shared workflow logic: config validation, presets, params and code inputs.
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the redi package, installed or not
# jobs import redi from this checkout too: the conda envs do not install it
# (Snakemake copies env files into .snakemake/conda/, so `-e ..` cannot work)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p)

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from redi import config as rc
from redi.workflow import module_inputs

try:
    rc.validate_config(config)  # before any job is planned
except rc.ConfigError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

# A dry run with --software-deployment-method conda (the slurm profile) on a
# machine without conda: Snakemake would stop at `conda info` while hashing
# environments. Planning needs no environment, so plan without; a real run
# still fails loudly when conda is missing. (The executor, hence
# workflow.dryrun, is not known while the Snakefile is parsed: read argv.)
def _dry_run_requested(argv):
    return any(a in ("--dry-run", "--dryrun")
               or (a[:1] == "-" and a[1:2] != "-" and a[1:].isalpha() and "n" in a)
               for a in argv)


_deployment = workflow.deployment_settings.deployment_method
if (DeploymentMethod.CONDA in _deployment and shutil.which("conda") is None
        and _dry_run_requested(sys.argv[1:])):
    _deployment.discard(DeploymentMethod.CONDA)
    logger.warning("conda not found: dry run planned without conda environments "
                   "(a real run with --software-deployment-method conda needs conda).")

PRESET = rc.preset(config)
# a --config on the command line replaces the slurm profile's `preset=paper`: say
# which preset this is, so a cluster run of the tiny preset does not go unnoticed
logger.info(f"preset: {config['preset']}")
RAW_SOURCE = rc.raw_data_source(config)
SFT_RUNS = [rc.sft_name(e) for e in config["sft_epochs"]]
STAGE2_RUNS = list(config["runs"])
TRAIN_GPUS = PRESET["resources"]["train_gpus"]
EVAL_GPUS = PRESET["resources"]["eval_gpus"]
TRAIN_THREADS = PRESET["resources"]["train_threads"]
EVAL_THREADS = PRESET["resources"]["eval_threads"]
LOGS = "results/logs"


# Table 2 rows after the start model: one per group of runs (config order); the
# slugs are unique and non-empty (validated), each names results/eval/final/table2-<slug>.
TABLE2_GROUPS = [
    {"label": g["label"], "slug": rc.table2_slug(g["label"]),
     "runs": [g["pin"]] if g.get("pin") else g["runs"], "pinned": bool(g.get("pin"))}
    for g in config["tables"]["table2"]["groups"]
]

# Every model that gets the final evaluation (16 samples, 5 benchmarks), by
# label: results/eval/final/{label}/summary.json
#   kind sft      -> the SFT run's final checkpoint
#   kind group    -> best checkpoint of the group's best run (peak intermediate acc.)
#   kind run      -> one run, its `best` or `last` checkpoint
#   kind baseline -> an external model (Hub id or local folder)
FINAL_MODELS = {
    config["tables"]["table2"]["start"]: {"kind": "sft", "run": config["tables"]["table2"]["start"]},
    config["tables"]["table1"]["sft"]: {"kind": "sft", "run": config["tables"]["table1"]["sft"]},
    **{f"table2-{g['slug']}": {"kind": "group", "runs": g["runs"], "label": g["label"]}
       for g in TABLE2_GROUPS},
    "table1-final": {"kind": "run", "run": config["tables"]["table1"]["final"],
                     "checkpoint": config["tables"]["table1"]["final_checkpoint"]},
    **{f"baseline-{b['name']}": {"kind": "baseline", **b} for b in PRESET["baselines"]},
}

# every target of `snakemake` without arguments; the stage files extend it
ALL_TARGETS = ["results/data/report.json"]


wildcard_constraints:
    run="|".join(re.escape(r) for r in STAGE2_RUNS),
    sft=r"sft_\d+ep",
    epochs=r"\d+",


def slurm_placement(gpu=False):
    """SLURM account/partition from the user's environment, never from the repository:
    REDI_SLURM_ACCOUNT, REDI_SLURM_PARTITION and (GPU rules) REDI_SLURM_GPU_PARTITION.
    Unset -> not passed: the slurm plugin guesses the account and uses the default
    partition. Ignored by local runs."""
    partition = (gpu and os.environ.get("REDI_SLURM_GPU_PARTITION")) or os.environ.get(
        "REDI_SLURM_PARTITION")
    placement = {"slurm_account": os.environ.get("REDI_SLURM_ACCOUNT"), "slurm_partition": partition}
    return {key: value for key, value in placement.items() if value}


def shell_args(flag, paths):
    """`flag` and its paths, each shell-quoted, for a params string ("" without paths):
    the shell line uses it as {params.x} (already quoted, so never {params.x:q})."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return " ".join([flag, *map(shlex.quote, paths)]) if paths else ""


def hp(params):
    """One canonical JSON string: the job's hyper-parameters (reruns on change)."""
    return rc.canonical_json(params)


def code(script):
    """The entry script and every redi/ module it imports: rule inputs."""
    return [script, *module_inputs(script, workflow.basedir)]


def raw_corpus_path():
    if RAW_SOURCE == "toy":
        return "results/data/raw_toy.parquet"
    if RAW_SOURCE == "hub":
        return "results/data/raw_hub.parquet"
    return RAW_SOURCE
