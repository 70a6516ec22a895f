"""What the config's names mean: SFT run names, a run's base model, the active preset
(with a base model's overrides), where the raw data and benchmarks come from, Table 2's
folder slugs. Shared by validation (``config``) and planning (``plan``), and knowing
neither."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redi.workflow.paths import BENCHMARKS_DOWNLOAD_DIR

Config = Mapping[str, Any]  # the workflow's config, as Snakemake hands it over

# sft_<N>ep (the primary base model) or <base>_sft_<N>ep (a Table 4 base model)
SFT_RUN = re.compile(r"(?:(?P<base>[a-z0-9][a-z0-9.+-]*)_)?sft_(?P<epochs>\d+)ep")


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def table2_slug(label: str) -> str:
    """The folder-name form of a Table 2 label: results/eval/final/table2-<slug>."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def base_preset(preset: dict[str, Any], base: str | None) -> dict[str, Any]:
    """The preset's sft/stage2 sections for runs from ``base`` (its overrides applied)."""
    if base is None:
        return preset
    overrides = preset["base_models"][base]
    return {**preset, **{stage: {**preset[stage], **overrides.get(stage, {})}
                         for stage in ("sft", "stage2")}}


def hub_id(value: str, root: str | os.PathLike = ".") -> str | None:
    """``value`` as a Hub repository id, or None when it names a local folder (an
    existing one, or anything written as a path: ``results/...``, ``/``, ``.``, ``~``)."""
    if value.startswith(("results/", "/", ".", "~")) or (Path(root) / value).exists():
        return None
    return value if HUB_ID.fullmatch(value) else None


def sft_name(epochs: int, base: str | None = None) -> str:
    """sft_<N>ep for the primary base model, <base>_sft_<N>ep for another."""
    return f"{base}_sft_{int(epochs)}ep" if base else f"sft_{int(epochs)}ep"


def all_sft_runs(config: dict[str, Any]) -> list[str]:
    """Every SFT run: the primary base model's, then each other base model's."""
    return [sft_name(e) for e in config["sft_epochs"]] + [
        sft_name(e, base) for base, spec in config.get("base_models", {}).items()
        for e in spec["sft_epochs"]]


def run_base(config: dict[str, Any], run: str) -> str | None:
    """The base model a run starts from: None for the primary one, else its name
    (an SFT run's own; a stage-2 run's init's)."""
    if run in config["runs"]:
        run = config["runs"][run]["init"]
    match = SFT_RUN.fullmatch(run)
    if match is None:
        raise ValueError(f"{run!r} is not an SFT run")
    return match["base"]


def preset(config: dict[str, Any]) -> dict[str, Any]:
    """The active preset's settings (a copy)."""
    return copy.deepcopy(config["presets"][config["preset"]])


def raw_data_source(config: dict[str, Any]) -> str:
    """`hub`, `toy` or a file path: the top-level key wins over the preset's default."""
    return config.get("raw_data") or config["presets"][config["preset"]]["raw_data"]


def benchmarks_dir(config: dict[str, Any]) -> str:
    """The folder the benchmark JSON files are read from (null: the Hub download)."""
    return preset(config)["benchmarks_dir"] or BENCHMARKS_DOWNLOAD_DIR
