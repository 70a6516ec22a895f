"""docs/DEVIATIONS.md names only config keys that exist, and its options default to the
paper (the response budget, SimPO's NLL weight)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from redi.train.losses import OBJECTIVES
from redi.workflow import config as rc
from redi.workflow import plan

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "DEVIATIONS.md"
SCHEMA = yaml.safe_load((ROOT / "redi" / "workflow" / "config.schema.yaml").read_text())


def config_key_cells(text: str) -> list[str]:
    """The cells of every table's "config key" column."""
    cells, column = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if column is None:
            column = row.index("config key") if "config key" in row else -1
        elif column >= 0 and not set(line) <= set("|-: "):
            cells.append(row[column])
    return cells


def named_keys(cell: str) -> list[str]:
    """The keys a cell names: its `code` spans outside parentheses (those hold values)."""
    return re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cell))


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = {**SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]],
                **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_has(key: str) -> bool:
    """Whether a dotted key (``<name>`` = any entry) exists in the schema; a run's
    hyper-parameters are delegated by the schema to the objective registry."""
    node, parts = SCHEMA, key.split(".")
    for i, part in enumerate(parts):
        node = _resolve(node)
        if part.startswith("<") and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif parts[:1] == ["runs"] and i == 2:
            return any(part in o.hyper_names for o in OBJECTIVES.values())
        else:
            return False
    return True


def test_the_column_parser() -> None:
    text = ("| what | config key | effect |\n|---|---|---|\n"
            "| a | `runs.<run>.cpo_alpha` (`0` = Eq. 3) | b |\n| c | — | d |\n\nprose `x.y`\n")
    assert config_key_cells(text) == ["`runs.<run>.cpo_alpha` (`0` = Eq. 3)", "—"]
    assert named_keys(config_key_cells(text)[0]) == ["runs.<run>.cpo_alpha"]


@pytest.mark.parametrize(("key", "exists"), [
    ("presets.<preset>.eval.response_budget", True), ("runs.<run>.cpo_alpha", True),
    ("runs.<run>.lr", True), ("evaluation.intermediate.grader", True),
    ("runs.<run>.nonsense", False), ("presets.<preset>.eval.nonsense", False),
    ("nonsense", False)])
def test_schema_lookup(key: str, exists: bool) -> None:
    assert schema_has(key) is exists


def test_every_key_named_in_deviations_exists_in_the_schema() -> None:
    keys = [k for cell in config_key_cells(DOC.read_text()) for k in named_keys(cell)]
    assert "presets.<preset>.eval.response_budget" in keys and "runs.<run>.cpo_alpha" in keys
    assert "presets.<preset>.sft.loss_normalisation" in keys
    assert [k for k in keys if not schema_has(k)] == []


def _config(preset: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = preset
    rc.validate_config(config, ROOT)
    return config


def test_response_budget_paper_by_default_authors_one_key_away() -> None:
    config = _config("paper")
    final = plan.final_eval_params(config)
    assert (final["response_budget"], final["max_new_tokens"], final["max_model_len"]) == (
        "paper", 32768, 32768)
    # the intermediate protocol keeps LightEval's 32,768 and no budget key
    inter = plan.intermediate_eval_params(config)
    assert inter["max_new_tokens"] == 32768 and "response_budget" not in inter
    config["presets"]["paper"]["eval"]["response_budget"] = "authors"
    final = plan.final_eval_params(config)
    assert (final["max_new_tokens"], final["max_model_len"]) == (30720, 32768)


def test_tiny_keeps_its_own_budget_and_simpo_defaults_to_eq3() -> None:
    config = _config("tiny")
    assert "response_budget" not in config["presets"]["tiny"]["eval"]
    final = plan.final_eval_params(config)
    assert final["max_new_tokens"] == config["presets"]["tiny"]["eval"]["max_new_tokens"]
    assert "response_budget" not in final
    simpo = [r for r, s in config["runs"].items() if s["objective"] == "simpo"]
    assert simpo and all("cpo_alpha" not in config["runs"][r] for r in simpo)
