# Shared workflow logic: config validation, presets, params and code inputs.
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the redi package, installed or not

from snakemake.exceptions import WorkflowError

from redi import config as rc
from redi.workflow import module_inputs

try:
    rc.validate_config(config)  # before any job is planned
except rc.ConfigError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

PRESET = rc.preset(config)
RAW_SOURCE = rc.raw_data_source(config)
SFT_RUNS = [rc.sft_name(e) for e in config["sft_epochs"]]
STAGE2_RUNS = list(config["runs"])
TRAIN_GPUS = PRESET["resources"]["train_gpus"]
EVAL_GPUS = PRESET["resources"]["eval_gpus"]
LOGS = "results/logs"

# every target of `snakemake` without arguments; the stage files extend it
ALL_TARGETS = ["results/data/report.json"]


wildcard_constraints:
    run="|".join(re.escape(r) for r in STAGE2_RUNS),
    sft=r"sft_\d+ep",
    epochs=r"\d+",


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
