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
TRAIN_THREADS = PRESET["resources"]["train_threads"]
EVAL_THREADS = PRESET["resources"]["eval_threads"]
LOGS = "results/logs"


def slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# Table 2 rows after the start model: one per group of runs (config order).
TABLE2_GROUPS = [
    {"label": g["label"], "slug": slug(g["label"]), "runs": [g["pin"]] if g.get("pin") else g["runs"],
     "pinned": bool(g.get("pin"))}
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
