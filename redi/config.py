"""Configuration: schema validation, preset resolution and per-job hyper-parameters.

Every job receives its hyper-parameters as ONE canonical JSON string through
Snakemake's ``params:`` (see ``canonical_json``); the builders below are the only
place where config values become job parameters, so a config edit reruns exactly
the jobs whose builder output changed.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Hub copies the workflow downloads (the corpus id lives here, not in redi.data,
# so that parsing the Snakefile never imports the data stack).
RAW_HUB_DATASET = "open-r1/OpenR1-Math-Raw"
# Folders of results/train/ that are not runs: a run may not be named like them.
RESERVED_RUN_NAMES = ("ref_logps",)
SFT_RUN = re.compile(r"sft_\d+ep")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Workflow outputs that a config may name as inputs before they exist.
PRODUCED_PATHS = frozenset({
    "results/data/raw_toy.parquet", "results/data/raw_hub.parquet",
    "results/data/toy_benchmarks", "results/data/benchmarks", "results/models/base",
})

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


def validate_config(config: dict[str, Any], root: str | os.PathLike = ".") -> None:
    """Validate ``config`` in place (fills schema defaults) or raise ConfigError.

    Everything a job would find out only when it runs is checked here, before any
    job is planned: finite numbers, the schema (JSON Schema 2020-12; integers must
    be written as integers), cross-references, names that become paths, batch
    geometry, and the local files and Hub revisions of the active preset. Local
    paths are relative to ``root`` (the working directory of the workflow).
    """
    _check_finite(config, [])
    _check_schema(config)
    _check_references(config)
    _check_names(config)
    preset, key = config["presets"][config["preset"]], f"presets.{config['preset']}"
    _check_batches(preset, key)
    _check_scaled_lrs(config, preset, key)
    _check_sources(config, preset, key, Path(root))


def _check_finite(value: Any, path: list) -> None:
    """No NaN or infinity anywhere: JSON Schema bounds let them through (nan > 0 is False)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"invalid config key '{_key_path(path)}' = {value}: not a finite "
                          f"number (.nan and .inf are not allowed)")
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for k, v in items:
        _check_finite(v, [*path, k])


@functools.lru_cache(maxsize=1)
def _validator():
    """The schema's validator: fills `default`s, and an integer is an int (not 8.0)."""
    import jsonschema
    import yaml

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, inst: isinstance(inst, int) and not isinstance(inst, bool))
    properties = base.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, schema):  # the jsonschema FAQ's recipe
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": set_defaults}, type_checker=checker)
    return cls(yaml.safe_load(SCHEMA_PATH.read_text()))


def _check_schema(config: dict[str, Any]) -> None:
    import jsonschema

    cause = jsonschema.exceptions.best_match(_validator().iter_errors(config))
    if cause is not None:
        raise ConfigError(_describe(cause))


# what the schema's name patterns mean (its message only quotes the regex)
_PATTERN_HINTS = {
    "^[A-Za-z0-9][A-Za-z0-9_.+-]*$": " (a single file or folder name: letters, digits and"
                                     " _ . + -, starting with a letter or digit)",
    "^[A-Za-z0-9][A-Za-z0-9_./-]*$": " (a commit hash, tag or branch name)",
}
# YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent
_YAML11_FLOAT = re.compile(r"([+-]?\d+(?:\.\d*)?)[eE]([+-]?\d+)")


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
    return f"invalid config key '{_key_path(path)}' = {value}: {error.message}{_hint(error)}"


def _hint(error) -> str:
    """Why a value may have the wrong type, for the usual mistakes."""
    instance = error.instance
    if error.validator == "pattern":
        return _PATTERN_HINTS.get(error.validator_value, "")
    if error.validator != "type":
        return ""
    if isinstance(instance, float) and instance.is_integer() and "integer" in error.validator_value:
        return f" (write {int(instance)})"
    if not isinstance(instance, str):
        return ""
    if instance.lower() in ("true", "false"):  # snakemake's --config reads Python literals
        return " (--config reads Python literals: write True or False)"
    text = instance.strip()
    if match := _YAML11_FLOAT.fullmatch(text):
        mantissa, exponent = match.groups()
        mantissa += "" if "." in mantissa else ".0"
        exponent = exponent if exponent[0] in "+-" else f"+{exponent}"
        if f"{mantissa}e{exponent}" != text:  # else it was quoted, or a nested --config
            return f" (write {mantissa}e{exponent}: YAML 1.1 reads {text} as a string)"
    return " (nested --config values arrive as strings: put the override in a --configfile)"


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
    for field in ("intermediate_benchmark", "fig8_benchmark"):
        if preset[field] not in names:
            raise ConfigError(
                f"invalid config key '{key}.{field}': '{preset[field]}' is not one of {names}"
            )


def _unique(key: str, values: list[str], what: str) -> None:
    """``values`` (item i at config key ``key.format(i)``) name files or folders: no two
    may be equal."""
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"invalid config key '{key.format(i)}': {what} {value!r} is "
                              f"already used by {key.format(seen[value])}")
        seen[value] = i


def table2_slug(label: str) -> str:
    """The folder-name form of a Table 2 label: results/eval/final/table2-<slug>."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _check_names(config: dict[str, Any]) -> None:
    """Names that become folder or file names: unique, and never a workflow folder."""
    folded: dict[str, str] = {}
    for name in config["runs"]:
        if SFT_RUN.fullmatch(name) or name in RESERVED_RUN_NAMES:
            raise ConfigError(f"invalid config key 'runs.{name}': the name is reserved "
                              f"(results/train/{name}/ belongs to "
                              f"{'an SFT run' if SFT_RUN.fullmatch(name) else 'the workflow'})")
        if name.lower() in folded:  # one folder on a case-insensitive file system
            raise ConfigError(f"invalid config key 'runs.{name}': differs from run "
                              f"'{folded[name.lower()]}' only in case")
        folded[name.lower()] = name
    slugs = []
    for i, group in enumerate(config["tables"]["table2"]["groups"]):
        slugs.append(table2_slug(group["label"]))
        if not slugs[-1]:
            raise ConfigError(f"invalid config key 'tables.table2.groups.{i}.label' = "
                              f"{group['label']!r}: needs an ASCII letter or digit (its slug "
                              f"names results/eval/final/table2-<slug>)")
    _unique("tables.table2.groups.{}.label", slugs, "the slug")
    preset, key = config["presets"][config["preset"]], f"presets.{config['preset']}"
    benchmarks = preset["benchmarks"]
    _unique(key + ".benchmarks.{}.name", [b["name"] for b in benchmarks], "the name")
    _unique(key + ".benchmarks.{}.file", [b["file"] for b in benchmarks], "the file")
    _unique(key + ".baselines.{}.name", [b["name"] for b in preset["baselines"]], "the name")


def _check_batches(preset: dict[str, Any], key: str) -> None:
    """Batch geometry the training engine needs (training runs train_gpus processes)."""
    gpus = preset["resources"]["train_gpus"]
    processes = max(1, gpus)
    for stage in ("sft", "stage2"):
        p, k = preset[stage], f"{key}.{stage}"
        micro, total = p["micro_batch"], p["global_batch"]
        if micro > total:
            raise ConfigError(f"invalid config key '{k}.micro_batch' = {micro}: larger than "
                              f"global_batch {total}")
        if total % (micro * processes):
            raise ConfigError(
                f"invalid config key '{k}.global_batch' = {total}: not a multiple of "
                f"micro_batch {micro} x {processes} training process(es) "
                f"({key}.resources.train_gpus = {gpus})")
    s2 = preset["stage2"]
    if s2["max_length"] <= s2["max_prompt_length"]:
        raise ConfigError(
            f"invalid config key '{key}.stage2.max_length' = {s2['max_length']}: must exceed "
            f"max_prompt_length {s2['max_prompt_length']} (room for the completions)")


def _check_scaled_lrs(config: dict[str, Any], preset: dict[str, Any], key: str) -> None:
    scale = preset["stage2"]["lr_scale"]
    for run, spec in config["runs"].items():
        lr = spec["lr"] * scale
        if not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"invalid config key 'runs.{run}.lr' = {spec['lr']}: x "
                              f"{key}.stage2.lr_scale {scale} = {lr}, not a positive finite LR")


def hub_id(value: str, root: str | os.PathLike = ".") -> str | None:
    """``value`` as a Hub repository id, or None when it names a local folder (an
    existing one, or anything written as a path: ``results/...``, ``/``, ``.``, ``~``)."""
    if value.startswith(("results/", "/", ".", "~")) or (Path(root) / value).exists():
        return None
    return value if HUB_ID.fullmatch(value) else None


def _need_path(key: str, value: str, root: Path) -> None:
    if os.path.normpath(value) in PRODUCED_PATHS or (root / value).exists():
        return
    raise ConfigError(f"invalid config key '{key}' = {value!r}: no such file or folder "
                      f"(relative to the working directory {root.resolve()})")


def _need_revision(key: str, revision: str | None, repo: str) -> None:
    if not revision:
        raise ConfigError(f"invalid config key '{key}': {repo} is downloaded from the Hub: pin "
                          f"its revision (a commit hash, or `main` to take the latest)")


def _check_sources(config: dict[str, Any], preset: dict[str, Any], key: str, root: Path) -> None:
    """The active preset's inputs: local files exist, Hub downloads name a revision."""
    raw = raw_data_source(config)
    raw_key = "raw_data" if config.get("raw_data") else f"{key}.raw_data"
    if raw == "toy" and "toy" not in preset:
        raise ConfigError(f"invalid config key '{key}.toy': raw_data is 'toy' but no toy section")
    if raw == "hub":
        _need_revision(f"{key}.raw_data_revision", preset.get("raw_data_revision"),
                       RAW_HUB_DATASET)
    elif raw != "toy":
        if not raw.endswith((".jsonl", ".parquet")):
            raise ConfigError(f"invalid config key '{raw_key}' = {raw!r}: expected 'hub', 'toy' "
                              f"or a path to a .jsonl/.parquet file")
        _need_path(raw_key, raw, root)
    base = preset["base_model"]
    if base["source"] != "tiny":
        if hub_id(base["source"], root):
            _need_revision(f"{key}.base_model.revision", base.get("revision"), base["source"])
        else:
            _need_path(f"{key}.base_model.source", base["source"], root)
    _check_benchmark_sources(preset, key, root)
    for i, baseline in enumerate(preset["baselines"]):
        if hub_id(baseline["model"], root):
            _need_revision(f"{key}.baselines.{i}.revision", baseline.get("revision"),
                           baseline["model"])
        else:
            _need_path(f"{key}.baselines.{i}.model", baseline["model"], root)


def _check_benchmark_sources(preset: dict[str, Any], key: str, root: Path) -> None:
    folder = preset["benchmarks_dir"]
    if folder is None:  # the Hub copies
        for i, bench in enumerate(preset["benchmarks"]):
            if not bench.get("hub"):
                raise ConfigError(f"invalid config key '{key}.benchmarks.{i}.hub': missing "
                                  f"(benchmarks_dir is null: benchmarks come from the Hub)")
            _need_revision(f"{key}.benchmarks.{i}.revision", bench.get("revision"), bench["hub"])
        return
    _need_path(f"{key}.benchmarks_dir", folder, root)
    if os.path.normpath(folder) in PRODUCED_PATHS:
        return
    for i, bench in enumerate(preset["benchmarks"]):
        if not (root / folder / bench["file"]).is_file():
            raise ConfigError(f"invalid config key '{key}.benchmarks.{i}.file' = "
                              f"{bench['file']!r}: not in benchmarks_dir {folder!r}")


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


def raw_download_params(config: dict[str, Any]) -> dict[str, Any]:
    return {"repo_id": RAW_HUB_DATASET, "revision": preset(config)["raw_data_revision"]}


def baseline_download_params(config: dict[str, Any], name: str) -> dict[str, Any]:
    spec = next(b for b in preset(config)["baselines"] if b["name"] == name)
    return {"model": spec["model"], "revision": spec["revision"]}


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
