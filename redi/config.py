"""Configuration: schema validation, preset resolution and per-job hyper-parameters.

Every job receives its hyper-parameters as ONE canonical JSON string through
Snakemake's ``params:`` (see ``canonical_json``); the builders below are the only
place where config values become job parameters, so a config edit reruns exactly
the jobs whose builder output changed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Shared by SFT and stage 2 (paper appendix C.3/C.4).
OPTIMIZER = {
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_eps": 1e-8,
    "weight_decay": 1e-4,
    "warmup_ratio": 0.1,
    "max_grad_norm": 1.0,
    "seed": 42,
}

# Canonical labels of the methods shown in tables and figures.
OBJECTIVE_LABELS = {"dpo": "DPO", "simpo": "SimPO", "redi": "REDI"}


class ConfigError(ValueError):
    """An invalid configuration value; the message names the config key."""


def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def validate_config(config: dict[str, Any]) -> None:
    """Validate ``config`` in place (fills schema defaults) or raise ConfigError.

    Uses ``snakemake.utils.validate`` (JSON Schema 2020-12) and then checks the
    cross-references the schema cannot express.
    """
    import jsonschema
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(SCHEMA_PATH))
    except WorkflowError as err:
        # Snakemake flattens the jsonschema error into text; re-run the check to
        # get the structured error (path, validator) and name the key.
        schema = yaml.safe_load(SCHEMA_PATH.read_text())
        cause = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(config)
        )
        if cause is None:
            raise ConfigError(str(err)) from err
        raise ConfigError(_describe(cause)) from None
    _check_references(config)


def _describe(error) -> str:
    """A one-line message naming the offending key for a jsonschema error."""
    path = list(error.absolute_path)
    if error.validator == "not" and error.validator_value == {}:
        return f"invalid config key '{_key_path(path)}': not allowed here"
    if error.validator == "required":
        return f"invalid config key '{_key_path(path)}': {error.message}"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return f"invalid config key '{_key_path(path)}': {error.message}"
    value = json.dumps(error.instance, default=str)
    if len(value) > 80:
        value = value[:77] + "..."
    hint = ""
    if error.validator == "type" and isinstance(error.instance, str):
        # snakemake's --config parses Python literals, and nested leaves stay strings
        if error.instance.lower() in ("true", "false"):
            hint = " (--config reads Python literals: write True or False)"
        else:
            hint = (" (nested --config values arrive as strings: put the override in a"
                    " --configfile)")
    return f"invalid config key '{_key_path(path)}' = {value}: {error.message}{hint}"


def _check_references(config: dict[str, Any]) -> None:
    runs = config["runs"]
    sft_runs = {sft_name(e) for e in config["sft_epochs"]}

    def need_run(key: str, name: str) -> None:
        if name not in runs:
            raise ConfigError(f"invalid config key '{key}': unknown run '{name}' (not in runs)")

    def need_sft(key: str, name: str) -> None:
        if name not in sft_runs:
            raise ConfigError(
                f"invalid config key '{key}': '{name}' is not trained "
                f"(sft_epochs: {config['sft_epochs']})"
            )

    for name, run in runs.items():
        need_sft(f"runs.{name}.init", run["init"])
        if name in sft_runs:
            raise ConfigError(f"invalid config key 'runs.{name}': the name is reserved for SFT")
    t2 = config["tables"]["table2"]
    need_sft("tables.table2.start", t2["start"])
    for i, group in enumerate(t2["groups"]):
        for j, name in enumerate(group["runs"]):
            need_run(f"tables.table2.groups.{i}.runs.{j}", name)
        pin = group.get("pin")
        if pin is not None and pin not in group["runs"]:
            raise ConfigError(
                f"invalid config key 'tables.table2.groups.{i}.pin': '{pin}' is not one of "
                f"the group's runs"
            )
    t1 = config["tables"]["table1"]
    need_sft("tables.table1.sft", t1["sft"])
    need_run("tables.table1.final", t1["final"])
    for fig, names in config["figures"].items():
        for j, name in enumerate([names] if isinstance(names, str) else names):
            need_run(f"figures.{fig}" + ("" if isinstance(names, str) else f".{j}"), name)
    if config["preset"] not in config["presets"]:
        raise ConfigError(f"invalid config key 'preset': unknown preset '{config['preset']}'")
    preset = config["presets"][config["preset"]]
    key = f"presets.{config['preset']}"
    names = [b["name"] for b in preset["benchmarks"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"invalid config key '{key}.benchmarks': duplicate benchmark names")
    for field in ("intermediate_benchmark", "fig8_benchmark"):
        if preset[field] not in names:
            raise ConfigError(
                f"invalid config key '{key}.{field}': '{preset[field]}' is not one of {names}"
            )
    raw = raw_data_source(config)
    if raw == "toy" and "toy" not in preset:
        raise ConfigError(f"invalid config key '{key}.toy': raw_data is 'toy' but no toy section")
    if raw not in ("hub", "toy") and not raw.endswith((".jsonl", ".parquet")):
        raise ConfigError(
            f"invalid config key 'raw_data' = {raw!r}: expected 'hub', 'toy' or a path to "
            f"a .jsonl/.parquet file"
        )
    baselines = [b["name"] for b in preset["baselines"]]
    if len(set(baselines)) != len(baselines):
        raise ConfigError(f"invalid config key '{key}.baselines': duplicate baseline names")


# --------------------------------------------------------------------------- names


def sft_name(epochs: int) -> str:
    return f"sft_{int(epochs)}ep"


def preset(config: dict[str, Any]) -> dict[str, Any]:
    """The active preset's settings (a copy)."""
    return copy.deepcopy(config["presets"][config["preset"]])


def raw_data_source(config: dict[str, Any]) -> str:
    """`hub`, `toy` or a file path: the top-level key wins over the preset's default."""
    return config.get("raw_data") or config["presets"][config["preset"]]["raw_data"]


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats in shortest repr.

    Non-finite floats are rejected so a NaN can never silently enter a param.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


# ---------------------------------------------------------------- per-job params


def toy_params(config: dict[str, Any]) -> dict[str, Any]:
    return preset(config)["toy"]


def base_model_params(config: dict[str, Any]) -> dict[str, Any]:
    return preset(config)["base_model"]


def filter_params(config: dict[str, Any]) -> dict[str, Any]:
    return {"shuffle_seed": preset(config)["data"]["shuffle_seed"]}


def length_filter_params(config: dict[str, Any]) -> dict[str, Any]:
    data = preset(config)["data"]
    return {
        "max_prompt_tokens": data["max_prompt_tokens"],
        "max_response_tokens": data["max_response_tokens"],
    }


def verify_params(config: dict[str, Any]) -> dict[str, Any]:
    return {"timeout_s": config["evaluation"]["grading_timeout_s"]}


def sft_params(config: dict[str, Any], epochs: int) -> dict[str, Any]:
    sft = preset(config)["sft"]
    return {"stage": "sft", "run": sft_name(epochs), "epochs": int(epochs), **sft, **OPTIMIZER}


def stage2_params(config: dict[str, Any], run: str) -> dict[str, Any]:
    spec = dict(config["runs"][run])
    stage2 = preset(config)["stage2"]
    scale = stage2.pop("lr_scale")
    lr = spec["lr"] * scale
    if not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"invalid config key 'runs.{run}.lr': scaled LR {lr} is not positive")
    return {
        "stage": "stage2",
        "run": run,
        **spec,
        "paper_lr": spec["lr"],
        "lr": lr,
        "epochs": 1,
        **stage2,
        **OPTIMIZER,
    }


def ref_logps_params(config: dict[str, Any], init: str) -> dict[str, Any]:
    stage2 = preset(config)["stage2"]
    return {
        "init": init,
        "micro_batch": stage2["micro_batch"],
        "max_prompt_length": stage2["max_prompt_length"],
        "max_length": stage2["max_length"],
    }


# where the download rule puts the Hub copies when a preset's benchmarks_dir is null
BENCHMARKS_DOWNLOAD_DIR = "results/data/benchmarks"


def benchmarks_dir(config: dict[str, Any]) -> str:
    """The folder the benchmark JSON files are read from (null: the Hub download)."""
    return preset(config)["benchmarks_dir"] or BENCHMARKS_DOWNLOAD_DIR


def benchmark_specs(config: dict[str, Any], names: list[str] | None = None) -> list[dict]:
    p = preset(config)
    specs = p["benchmarks"] if names is None else [
        b for b in p["benchmarks"] if b["name"] in names
    ]
    return [{**b, "dir": benchmarks_dir(config)} for b in specs]


def benchmark_download_params(config: dict[str, Any]) -> dict[str, Any]:
    return {"benchmarks": preset(config)["benchmarks"]}


def _generation_params(config: dict[str, Any], protocol: str) -> dict[str, Any]:
    ev = config["evaluation"]
    p = preset(config)
    return {
        **p["eval"],
        "temperature": ev["temperature"],
        "top_p": ev["top_p"],
        "seed": ev["seed"],
        "think_prefix": ev["think_prefix"],
        "grading_timeout_s": ev["grading_timeout_s"],
        **ev[protocol],
        "protocol": protocol,
    }


def intermediate_eval_params(config: dict[str, Any]) -> dict[str, Any]:
    bench = preset(config)["intermediate_benchmark"]
    return {**_generation_params(config, "intermediate"),
            "benchmarks": benchmark_specs(config, [bench])}


def final_eval_params(config: dict[str, Any], force_think: bool | None = None) -> dict[str, Any]:
    params = {**_generation_params(config, "final"), "benchmarks": benchmark_specs(config)}
    if force_think is not None:
        params["force_think"] = force_think
    return params


def final_model_params(config: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """Final protocol + the model to evaluate (a FINAL_MODELS entry, with run labels).

    A baseline may set ``force_think: false`` (e.g. a model without <think>).
    """
    runs = model.get("runs") or ([model["run"]] if "run" in model else [])
    spec = {**model, "run_labels": {r: run_label(config, r) for r in runs}}
    return {**final_eval_params(config, model.get("force_think")), "model": spec}


def genstats_params(config: dict[str, Any]) -> dict[str, Any]:
    bench = preset(config)["fig8_benchmark"]
    return {**_generation_params(config, "final"), "benchmarks": benchmark_specs(config, [bench])}


def run_label(config: dict[str, Any], run: str) -> str:
    """Human-readable hyper-parameters of a run, e.g. 'DPO β=0.001 LR=2e-7'."""
    if run.startswith("sft_"):
        return f"SFT {run[4:-2]} epochs"
    spec = config["runs"][run]
    parts = [OBJECTIVE_LABELS[spec["objective"]]]
    for key, sym in (("alpha", "α"), ("beta", "β"), ("gamma", "γ")):
        if key in spec:
            parts.append(f"{sym}={spec[key]:g}")
    parts.append(f"LR={spec['lr']:.0e}".replace("e-0", "e-"))
    if spec["init"] != config["tables"]["table2"]["start"]:
        parts.append(f"from {spec['init']}")
    return " ".join(parts)
