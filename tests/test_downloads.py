"""The paper preset's Hub downloads, executed: a cache filled by ``scripts/fill_hf_cache.py``
(huggingface_hub's own download into its own layout) from a stand-in Hub on 127.0.0.1
holding tiny files of the real schemas at the pinned revisions; then every download job,
with the command line its rule runs (from ``snakemake -n -p``), with HF_HUB_OFFLINE=1
and the stand-in stopped. Nothing of datasets, huggingface_hub or transformers is faked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from tests.support.downloads import hub_env, run
from tests.support.hub import (
    ACCEPTED_TOKEN,
    BENCH_EXPECTED,
    GPQA_DIAMOND,
    StandInHub,
    commit,
    paper_preset,
    paper_repos,
    pinned,
    raw_rows,
)

from .conftest import copy_workflow, snakemake

PRESET = paper_preset()
RAW_COMMIT = pinned(PRESET["raw_data_revision"], "raw")
BASE = PRESET["base_model"]
TARGETS = ("results/data/raw_hub.parquet", "results/data/benchmarks",
           "results/data/ood/gpqa_diamond.jsonl",
           *(f"results/models/hub/{b['name']}" for b in PRESET["baselines"]),
           "results/models/base", *(f"results/models/base_{b}" for b in PRESET["base_models"]))
MODEL_RULES = ("base_model", "other_base_model")  # they read a tokenizer job's output


def fill(hf_home: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "scripts/fill_hf_cache.py", "--config", "preset=paper", *args],
               hub_env(hf_home, url, offline=False, token=ACCEPTED_TOKEN))


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[Path, str]:
    """A cache filled from the stand-in Hub; then the stand-in is gone."""
    hf_home = tmp_path_factory.mktemp("hf")
    with StandInHub(paper_repos()) as hub:
        proc = fill(hf_home, hub.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return hf_home, proc.stdout


def rule_commands(work: Path) -> list[tuple[str, str]]:
    """(rule, shell command) of every job the targets need, as Snakemake would run them."""
    out = snakemake(work, "-n", "-p", "--config", "preset=paper", "--", *TARGETS).stdout
    rules = re.findall(r"^rule (\w+):", out, re.M)
    commands = re.findall(r"^Shell command: (.+)$", out, re.M)
    assert len(rules) == len(commands) > 0, out[-3000:]
    return list(zip(rules, commands, strict=True))


@pytest.fixture(scope="module")
def offline_jobs(filled, tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """Every download job of the paper preset, run offline from the filled cache."""
    hf_home, _ = filled
    work = copy_workflow(tmp_path_factory.mktemp("wf"))
    env = hub_env(hf_home, work=work)
    jobs = rule_commands(work)
    first = [j for j in jobs if j[0] not in MODEL_RULES]
    runs: dict[str, subprocess.CompletedProcess] = {}
    with ThreadPoolExecutor(2) as pool:  # the download rules are local: side by side
        for batch in (first, [j for j in jobs if j[0] in MODEL_RULES]):
            results = pool.map(lambda job: run(job[1], env, cwd=work), batch)
            runs.update({f"{rule}: {cmd}": proc for (rule, cmd), proc in zip(batch, results, strict=True)})
    return work, runs


def test_fill_lists_what_it_downloads_and_fills_the_cache(filled) -> None:
    hf_home, out = filled
    names = ["raw", "base_model", *(f"base_model:{b}" for b in PRESET["base_models"]),
             *(f"benchmark:{b['name']}" for b in PRESET["benchmarks"]), "ood:gpqa_diamond",
             *(f"baseline:{b['name']}" for b in PRESET["baselines"])]
    listed = [line.split()[0] for line in out.splitlines() if re.search(r"\d+ files, ", line)]
    assert listed == names
    assert "Idavidrein/gpqa (gpqa_diamond) @ 633f5ee89ab8ad4522a9f850766b73f62147ffdd: " \
           "2 files" in out  # the card and the diamond config's file: not gpqa_main
    assert re.search(r"^total: [\d.]+ (KB|MB) into .*hub$", out, re.M)
    hub_dir = hf_home / "hub"
    raw = hub_dir / "datasets--open-r1--OpenR1-Math-Raw"
    assert (raw / "refs" / "main").read_text() == RAW_COMMIT  # the branch pin's ref
    assert [p.name for p in (raw / "snapshots").iterdir()] == [RAW_COMMIT]  # not raw-old
    olympiad = next((hub_dir / "datasets--Hothan--OlympiadBench" / "snapshots").iterdir())
    assert sorted(str(p.relative_to(olympiad)) for p in olympiad.rglob("*.parquet")) == [
        "OlympiadBench/OE_TO_maths_en_COMP/OE_TO_maths_en_COMP.parquet"]


def test_every_download_job_runs_offline_from_the_cache(offline_jobs) -> None:
    work, runs = offline_jobs
    failed = {cmd[:80]: proc.stderr[-1500:] for cmd, proc in runs.items() if proc.returncode}
    assert not failed
    assert sorted(job.split(":")[0] for job in runs) == sorted([
        "download_raw", "download_benchmarks", "download_ood", "tokenizer", "base_model",
        "base_tokenizer", *["download_baseline"] * len(PRESET["baselines"]),
        *["other_base_model"] * len(PRESET["base_models"])])  # llama3b: its own tokenizer
    # the raw corpus: main's rows (not the other cached commit's), main's commit recorded
    raw = pd.read_parquet(work / "results/data/raw_hub.parquet")
    assert list(raw["problem"]) == [r["problem"] for r in raw_rows("main")]
    record = json.loads((work / "results/data/raw_hub.download.json").read_text())
    assert {k: record[k] for k in ("repo_id", "revision_requested", "resolved_commit",
                                   "offline", "rows")} == {
        "repo_id": "open-r1/OpenR1-Math-Raw", "revision_requested": "main",
        "resolved_commit": RAW_COMMIT, "offline": True, "rows": 3}


def test_benchmarks_and_gpqa_are_written_at_their_pins(offline_jobs) -> None:
    work, _ = offline_jobs
    bench = work / "results/data/benchmarks"
    for spec in PRESET["benchmarks"]:
        assert json.loads((bench / spec["file"]).read_text()) == BENCH_EXPECTED[spec["name"]]
    records = json.loads((bench / "download.json").read_text())["benchmarks"]
    assert [(r["benchmark"], r["revision_requested"], r["resolved_commit"]) for r in records] == [
        (b["name"], b["revision"], pinned(b["revision"], b["hub"])) for b in PRESET["benchmarks"]]
    rows = [json.loads(line) for line in
            (work / "results/data/ood/gpqa_diamond.jsonl").read_text().splitlines()]
    assert [r["Record ID"] for r in rows] == [r["Record ID"] for r in GPQA_DIAMOND]
    record = json.loads((work / "results/data/ood/gpqa_diamond.download.json").read_text())
    assert (record["config"], record["resolved_commit"], record["n_questions"]) == (
        "gpqa_diamond", "633f5ee89ab8ad4522a9f850766b73f62147ffdd", 2)


def test_models_and_tokenizers_are_loaded_at_their_pins(offline_jobs) -> None:
    work, _ = offline_jobs
    for spec in PRESET["baselines"]:
        out = work / "results/models/hub" / spec["name"]
        record = json.loads((out / "download.json").read_text())
        assert (record["repo_id"], record["resolved_commit"]) == (spec["model"], spec["revision"])
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(record["files"])
        assert not any(p.is_symlink() for p in out.iterdir())  # copies, not cache links
    for folder, spec in [("base", BASE), ("tokenizer", BASE),
                         *((f"base_{b}", m["model"]) for b, m in PRESET["base_models"].items()),
                         ("tokenizer_llama3b", PRESET["base_models"]["llama3b"]["model"])]:
        record = json.loads((work / "results/models" / folder / "download.json").read_text())
        assert (record["repo_id"], record["revision_requested"], record["resolved_commit"]) == (
            spec["source"], spec["revision"], pinned(spec["revision"], spec["source"])), folder
    config = json.loads((work / "results/models/base/config.json").read_text())
    assert config["max_position_embeddings"] == 32768  # the authors' edit was applied


def test_a_pin_the_cache_lacks_fails_naming_repo_pin_and_what_was_found(filled,
                                                                         tmp_path) -> None:
    hf_home, _ = filled
    env = hub_env(hf_home)
    wrong = commit("never-published")
    for revision in (wrong, "v9"):
        params = json.dumps({"repo_id": "open-r1/OpenR1-Math-Raw", "revision": revision})
        proc = run([sys.executable, "scripts/download_raw.py", "--params", params,
                    "--out", str(tmp_path / "raw.parquet"), "--record", str(tmp_path / "r.json"),
                    "--log", str(tmp_path / "raw.log")], env)
        assert proc.returncode != 0
        log = (tmp_path / "raw.log").read_text()
        assert f"does not hold dataset open-r1/OpenR1-Math-Raw at revision '{revision}'" in log
        assert f"snapshots of commits {RAW_COMMIT}" in log and f"main -> {RAW_COMMIT}" in log
        assert "fill_hf_cache.py" in log and "`raw_data`" in log
        assert not (tmp_path / "raw.parquet").exists() and not (tmp_path / "r.json").exists()


def test_an_unreachable_hub_falls_back_to_the_cache_at_once(filled, tmp_path) -> None:
    """HF_HUB_OFFLINE unset, nothing listening at the endpoint: the job reads the cache,
    records the commit, and does not wait on retries."""
    hf_home, _ = filled
    spec = PRESET["baselines"][0]
    start = time.time()
    proc = run([sys.executable, "scripts/download_model.py", "--params",
                json.dumps({"model": spec["model"], "revision": spec["revision"]}),
                "--out", str(tmp_path / "m")], hub_env(hf_home, offline=False))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.time() - start < 20
    assert "unreachable" in proc.stderr
    record = json.loads((tmp_path / "m" / "download.json").read_text())
    assert (record["resolved_commit"], record["offline"]) == (spec["revision"], True)
