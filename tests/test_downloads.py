"""Hub downloads at a pinned revision, each recording what it fetched (issue 14, item 6).

No network here: the Hub API, `datasets.load_dataset`, `snapshot_download` and the
transformers loaders are replaced by fakes that record how they were called.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
import types

import datasets
import huggingface_hub
import pandas as pd
import pytest
import yaml
from huggingface_hub.errors import RevisionNotFoundError

from redi import base_model, benchmarks, hub, plan
from redi import config as rc

from .conftest import ROOT, FakeQwenTokenizer
from .test_workflow import openr1_row


def commit_of(repo: str) -> str:
    """A distinct fake 40-hex commit per repository."""
    return hashlib.sha1(repo.encode()).hexdigest()


class FakeApi:
    """HfApi stand-in: resolves every revision to commit_of(repo); logs the calls."""

    calls: list[tuple] = []
    error: Exception | None = None

    def repo_info(self, repo_id, *, repo_type=None, revision=None, **_):
        FakeApi.calls.append((repo_id, repo_type, revision))
        if FakeApi.error is not None:
            raise FakeApi.error
        return types.SimpleNamespace(sha=commit_of(repo_id))


@pytest.fixture()
def fake_hub(monkeypatch):
    FakeApi.calls, FakeApi.error = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


@pytest.fixture()
def paper_cfg() -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["preset"] = "paper"
    rc.validate_config(cfg)
    return cfg


BENCH_ROWS = {
    "HuggingFaceH4/MATH-500": [{"unique_id": "m/1", "problem": "1+1?", "answer": "2"}],
    "HuggingFaceH4/aime_2024": [{"id": 60, "problem": "AIME?", "answer": "025"}],
    "AI-MO/aimo-validation-amc": [{"id": 0, "problem": "AMC?", "answer": 142.0}],
    "knoveleng/Minerva-Math": [{"idx": 3, "problem": "Minerva?", "solution": "\\boxed{7}"}],
    "Hothan/OlympiadBench": [{"id": 9, "question": "Oly?", "final_answer": ["$x$"]}],
}


def test_benchmarks_are_fetched_at_the_resolved_commit_and_recorded(
        fake_hub, paper_cfg, monkeypatch, tmp_path):
    loads = []

    def load_dataset(repo, config, split, revision):
        loads.append((repo, config, split, revision))
        return BENCH_ROWS[repo]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    specs = plan.benchmark_download_params(paper_cfg)["benchmarks"]
    benchmarks.download_benchmarks(specs, tmp_path / "bench")
    assert [c[2] for c in fake_hub.calls] == [s["revision"] for s in specs]
    assert loads == [(s["hub"], benchmarks.HUB_SOURCES[s["hub"]][0],
                      benchmarks.HUB_SOURCES[s["hub"]][1], commit_of(s["hub"])) for s in specs]
    record = json.loads((tmp_path / "bench" / "download.json").read_text())["benchmarks"]
    assert [(r["benchmark"], r["repo_id"], r["repo_type"], r["revision_requested"],
             r["resolved_commit"], r["n_problems"]) for r in record] == [
        (s["name"], s["hub"], "dataset", s["revision"], commit_of(s["hub"]), 1) for s in specs]
    assert record[3]["revision_requested"] == "main"  # Minerva: unpinned, but recorded
    amc = json.loads((tmp_path / "bench" / "amc.json").read_text())
    assert amc == [{"id": "0", "problem": "AMC?", "answer": 142.0}]


def test_offline_hub_api_falls_back_to_the_named_revision(fake_hub, monkeypatch, tmp_path):
    fake_hub.error = ConnectionError("Name or service not known")
    loads = []
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda repo, config, split, revision: loads.append(revision)
                        or BENCH_ROWS[repo])
    spec = {"name": "math500", "file": "math.json", "hub": "HuggingFaceH4/MATH-500",
            "revision": "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be"}
    (record,) = benchmarks.download_benchmarks([spec], tmp_path / "b")
    assert loads == [spec["revision"]]
    assert (record["revision_requested"], record["resolved_commit"]) == (spec["revision"], None)


def test_a_wrong_revision_stops_the_download(fake_hub):
    error = RevisionNotFoundError.__new__(RevisionNotFoundError)
    Exception.__init__(error, "404: revision nope not found")
    fake_hub.error = error
    with pytest.raises(RevisionNotFoundError):
        hub.resolve("Qwen/Qwen2.5-Math-1.5B", "model", "nope")


def run_script(monkeypatch, script: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")


def test_download_raw_pins_and_records_the_corpus(fake_hub, paper_cfg, monkeypatch, tmp_path):
    rows = [openr1_row(f"p{i}", "\\boxed{3}", "\\boxed{4}") for i in range(2)]
    loads = []

    def load_dataset(repo, split, revision):
        loads.append((repo, split, revision))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    params = plan.raw_download_params(paper_cfg)
    run_script(monkeypatch, "download_raw.py", "--params", json.dumps(params),
               "--out", str(tmp_path / "raw.parquet"), "--record", str(tmp_path / "raw.json"))
    commit = commit_of("open-r1/OpenR1-Math-Raw")
    assert loads == [("open-r1/OpenR1-Math-Raw", "train", commit)]
    assert len(pd.read_parquet(tmp_path / "raw.parquet")) == 2
    record = json.loads((tmp_path / "raw.json").read_text())
    assert {k: record[k] for k in ("repo_id", "repo_type", "revision_requested",
                                   "resolved_commit", "split", "rows")} == {
        "repo_id": "open-r1/OpenR1-Math-Raw", "repo_type": "dataset",
        "revision_requested": "main", "resolved_commit": commit, "split": "train", "rows": 2}


def test_download_ood_pins_and_records_gpqa(fake_hub, paper_cfg, monkeypatch, tmp_path):
    """Table 5's GPQA Diamond: fetched at the resolved commit, written in the Hub's columns
    (what the evaluation's local loader reads), recorded."""
    from redi import multiple_choice

    row = {"Record ID": "recA", "Question": "Which?", "Correct Answer": "right",
           "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3",
           "Subdomain": "Physics", "Writer's Difficulty Estimate": None}
    loads = []

    def load_dataset(repo, config, split, token, revision):
        loads.append((repo, config, split, revision))
        return datasets.Dataset.from_list([row])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    params = plan.ood_download_params(paper_cfg, "gpqa_diamond")
    run_script(monkeypatch, "download_ood.py", "--params", json.dumps(params),
               "--out", str(tmp_path / "gpqa.jsonl"), "--record", str(tmp_path / "gpqa.json"))
    commit = commit_of("Idavidrein/gpqa")
    assert fake_hub.calls == [("Idavidrein/gpqa", "dataset",
                               "633f5ee89ab8ad4522a9f850766b73f62147ffdd")]
    assert loads == [("Idavidrein/gpqa", "gpqa_diamond", "train", commit)]
    assert multiple_choice.load_local(tmp_path / "gpqa.jsonl") == [row]
    record = json.loads((tmp_path / "gpqa.json").read_text())
    assert {k: record[k] for k in ("repo_id", "revision_requested", "resolved_commit",
                                   "config", "n_questions")} == {
        "repo_id": "Idavidrein/gpqa", "revision_requested": params["revision"],
        "resolved_commit": commit, "config": "gpqa_diamond", "n_questions": 1}


def test_download_model_pins_and_records_a_baseline(fake_hub, paper_cfg, monkeypatch, tmp_path):
    snapshots = []

    def snapshot_download(repo, revision, local_dir, allow_patterns):
        snapshots.append((repo, revision))
        local_dir.mkdir()  # as the real one does
        (local_dir / "config.json").write_text("{}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    params = plan.baseline_download_params(paper_cfg, "qwen_math_instruct_1.5b")
    out = tmp_path / "results/models/hub/qwen_math_instruct_1.5b"
    run_script(monkeypatch, "download_model.py", "--params", json.dumps(params),
               "--out", str(out))
    repo = "Qwen/Qwen2.5-Math-1.5B-Instruct"
    assert snapshots == [(repo, commit_of(repo))]
    record = json.loads((out / "download.json").read_text())
    assert (record["repo_id"], record["revision_requested"], record["resolved_commit"]) == (
        repo, "aafeb0fc6f22cbf0eaeed126eff8be45b0360a35", commit_of(repo))
    assert (out / "config.json").exists()


class FakeModel:
    def __init__(self):
        self.generation_config = None

    def parameters(self):
        return []

    def save_pretrained(self, out, safe_serialization):
        (out / "model.safetensors").write_text("")


class FakeTokenizer(FakeQwenTokenizer):
    """Saves a stand-in tokenizer.json."""

    def save_pretrained(self, out):
        (out / "tokenizer.json").write_text("{}")


def test_the_paper_base_model_is_loaded_at_its_commit(fake_hub, paper_cfg, monkeypatch, tmp_path):
    import transformers

    loads = []

    def loader(kind, result):
        def from_pretrained(source, **kwargs):
            loads.append((kind, source, kwargs.get("revision")))
            return result()
        return types.SimpleNamespace(from_pretrained=from_pretrained)

    config = lambda: types.SimpleNamespace(rope_parameters={}, layer_types=None,  # noqa: E731
                                           num_hidden_layers=2)
    monkeypatch.setattr(transformers, "AutoConfig", loader("config", config))
    monkeypatch.setattr(transformers, "AutoTokenizer", loader("tokenizer", FakeTokenizer))
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", loader("model", FakeModel))
    out = tmp_path / "base"
    base_model.build(plan.base_model_params(paper_cfg), None, out)
    repo, commit = "Qwen/Qwen2.5-Math-1.5B", commit_of("Qwen/Qwen2.5-Math-1.5B")
    assert loads == [(k, repo, commit) for k in ("config", "tokenizer", "model")]
    record = json.loads((out / "download.json").read_text())
    assert (record["repo_id"], record["revision_requested"], record["resolved_commit"]) == (
        repo, "4a83ca6e4526a4f2da3aa259ec36c259f66b2ab2", commit)
