"""Benchmark loading: the five local files, the Hub loaders (offline, faked) and
the benchmark folder a preset reads."""

from __future__ import annotations

import json
import sys
import types

import pytest
import yaml

from redi import benchmarks, plan
from redi import config as rc
from redi.benchmarks import HUB_SOURCES, download_benchmarks, load_benchmark, normalize_items
from tests.conftest import BENCHMARKS_DIR, ROOT

PAPER = {  # name -> (file, problems, answer type)
    "math500": ("math.json", 500, str),
    "aime24": ("aime.json", 30, str),
    "amc23": ("amc.json", 83, float),
    "minerva": ("minerva.json", 272, list),
    "olympiadbench": ("olympiad_bench.json", 675, list),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_local_files(name: str) -> None:
    file, count, kind = PAPER[name]
    items = load_benchmark({"name": name, "file": file, "dir": str(BENCHMARKS_DIR)})
    assert len(items) == count
    assert len({it["id"] for it in items}) == count
    assert all(set(it) == {"id", "problem", "answer"} for it in items)
    assert all(isinstance(it["answer"], kind) for it in items)
    assert all(it["problem"].strip() for it in items)


def test_ids_and_answers() -> None:
    math = load_benchmark({"name": "math500", "file": "math.json", "dir": str(BENCHMARKS_DIR)})
    assert math[0]["id"].startswith("test/")  # MATH's unique_id
    amc = load_benchmark({"name": "amc23", "file": "amc.json", "dir": str(BENCHMARKS_DIR)})
    assert amc[0]["id"] == "amc23/0" and amc[0]["answer"] == 142.0
    aime = load_benchmark({"name": "aime24", "file": "aime.json", "dir": str(BENCHMARKS_DIR)})
    assert all(len(it["answer"]) == 3 for it in aime)  # zero-padded strings, kept as is


def test_normalize_items_rejects_broken_rows() -> None:
    assert normalize_items("b", [{"problem": "p", "answer": "1", "id": 7}])[0]["id"] == "7"
    # duplicate source ids fall back to positions
    rows = [{"problem": "p", "answer": "1", "id": 1}, {"problem": "q", "answer": "2", "id": 1}]
    assert [it["id"] for it in normalize_items("b", rows)] == ["b/0", "b/1"]
    with pytest.raises(ValueError, match="no answer"):
        normalize_items("b", [{"problem": "p", "answer": ""}])
    with pytest.raises(ValueError, match="no problem"):
        normalize_items("b", [{"problem": " ", "answer": "1"}])


HUB_ROWS = {
    "HuggingFaceH4/MATH-500": [{"problem": "1+1?", "solution": "...", "answer": "2",
                                "subject": "Algebra", "level": 1, "unique_id": "test/a/1.json"}],
    "HuggingFaceH4/aime_2024": [{"id": 60, "problem": "AIME?", "solution": "...", "answer": "204",
                                 "url": "u", "year": "2024"}],
    "AI-MO/aimo-validation-amc": [{"id": 0, "problem": "AMC?", "answer": 142.0, "url": "u"}],
    "knoveleng/Minerva-Math": [{"problem": "M?", "solution": "so $\\boxed{9.6}$ nm"}],
    "Hothan/OlympiadBench": [{"id": 1606, "question": "O?", "final_answer": ["$\\frac{1}{2}$"],
                              "is_multiple_answer": False}],
}


def test_hub_download_writes_the_local_format(tmp_path, monkeypatch) -> None:
    calls = []

    def load_dataset(hub, config=None, split=None, revision=None):
        calls.append((hub, config, split))
        return HUB_ROWS[hub]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    # offline: no Hub API (revisions and records: tests/test_downloads.py)
    monkeypatch.setattr("redi.hub.resolve", lambda repo, kind, revision: None)
    specs = yaml.safe_load((ROOT / "config.yaml").read_text())["presets"]["paper"]["benchmarks"]
    download_benchmarks(specs, tmp_path / "bench")
    assert {c[0] for c in calls} == set(HUB_SOURCES)
    assert ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train") in calls
    got = {s["name"]: json.loads((tmp_path / "bench" / s["file"]).read_text()) for s in specs}
    assert got["math500"] == [{"id": "test/a/1.json", "problem": "1+1?", "answer": "2"}]
    assert got["aime24"] == [{"id": "60", "problem": "AIME?", "answer": "204"}]
    assert got["amc23"] == [{"id": "0", "problem": "AMC?", "answer": 142.0}]
    assert got["minerva"] == [{"id": "minerva/0", "problem": "M?", "answer": ["9.6"]}]
    assert got["olympiadbench"] == [{"id": "1606", "problem": "O?", "answer": ["$\\frac{1}{2}$"]}]
    # and they load like the local copies
    assert load_benchmark({**specs[2], "dir": str(tmp_path / "bench")})[0]["answer"] == 142.0


def test_unknown_hub_source(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=None))
    with pytest.raises(ValueError, match="no Hub loader"):
        download_benchmarks([{"name": "x", "file": "x.json", "hub": "someone/else"}], tmp_path / "b")


def test_preset_benchmark_folder() -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    assert rc.benchmarks_dir(config) == "results/data/toy_benchmarks"
    config["preset"] = "paper"
    assert rc.benchmarks_dir(config) == rc.BENCHMARKS_DOWNLOAD_DIR  # null: the Hub copies
    config["presets"]["paper"]["benchmarks_dir"] = "../shared/benchmarks"
    specs = plan.benchmark_specs(config)
    assert [s["name"] for s in specs] == list(PAPER)
    assert {s["dir"] for s in specs} == {"../shared/benchmarks"}
    assert benchmarks.benchmark_path(specs[0]).as_posix() == "../shared/benchmarks/math.json"
