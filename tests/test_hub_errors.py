"""What a failing Hub download says, each cause in its own words, from the download jobs
as their rules run them: gated (against the stand-in Hub on 127.0.0.1), unreachable
(nothing listening at the endpoint), not cached (HF_HUB_OFFLINE=1: nothing, or only
another config), and a pin the Hub does not have."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.downloads import hub_env, run
from tests.support.hub import ACCEPTED_TOKEN, StandInHub, dataset_repos, paper_preset

GPQA = next(b for b in paper_preset()["ood"]["benchmarks"] if b.get("hub"))
PAGE_PATH = "/datasets/Idavidrein/gpqa"


@pytest.fixture(scope="module")
def standin():
    with StandInHub(dataset_repos()) as hub:  # datasets: no model needs building
        yield hub


def download_gpqa(tmp_path: Path, env: dict[str, str]) -> str:
    """The GPQA job's command; its log (it must fail and write nothing)."""
    params = {"name": "gpqa_diamond", "hub": GPQA["hub"], "hub_config": GPQA["hub_config"],
              "revision": GPQA["revision"]}
    out, log = tmp_path / "gpqa.jsonl", tmp_path / "gpqa.log"
    proc = run([sys.executable, "scripts/download_ood.py", "--params", json.dumps(params),
                "--out", str(out), "--record", str(tmp_path / "gpqa.json"), "--log", str(log)],
               env, timeout=60)
    assert proc.returncode != 0 and not out.exists(), proc.stderr[-2000:]
    return log.read_text()


def test_gated_without_a_token(standin, tmp_path) -> None:
    log = download_gpqa(tmp_path, hub_env(tmp_path / "hf", standin.url, offline=False))
    assert "GatedError: Idavidrein/gpqa is gated on the Hugging Face Hub and no token is set" in log
    assert f"log in at {standin.url}{PAGE_PATH} and accept its terms" in log
    assert "`export HF_TOKEN=hf_...`" in log and "set the benchmark's `file`" in log
    assert "cannot reach" not in log and "HF_HUB_OFFLINE" not in log


def test_gated_with_a_token_that_has_no_access(standin, tmp_path) -> None:
    log = download_gpqa(tmp_path, hub_env(tmp_path / "hf", standin.url, offline=False,
                                          token="hf_not_accepted"))
    assert "is gated on the Hugging Face Hub and the token in use has no access to it" in log
    assert not any("gpqa" in r and "/resolve/" in r for r in standin.requests)  # checked first


def test_unreachable_and_not_cached(tmp_path) -> None:
    log = download_gpqa(tmp_path, hub_env(tmp_path / "hf", offline=False))
    assert "UnreachableError: cannot reach the Hugging Face Hub at http://127.0.0.1:9" in log
    assert (f"the cache does not hold dataset Idavidrein/gpqa at revision '{GPQA['revision']}'"
            ", config gpqa_diamond") in log
    assert "found nothing of Idavidrein/gpqa" in log
    assert "scripts/fill_hf_cache.py" in log and "HF_HUB_OFFLINE=1" in log
    assert "set the benchmark's `file`" in log and "gated" not in log


def test_offline_and_not_cached(tmp_path) -> None:
    log = download_gpqa(tmp_path, hub_env(tmp_path / "hf"))
    assert ("NotCachedError: HF_HUB_OFFLINE is set and the Hugging Face cache does not hold "
            f"dataset Idavidrein/gpqa at revision '{GPQA['revision']}', config gpqa_diamond") in log
    assert "found nothing of Idavidrein/gpqa" in log and "fill_hf_cache.py" in log
    assert "gated" not in log and "cannot reach" not in log


def test_offline_with_only_another_config_cached(standin, tmp_path) -> None:
    """The cache holds the pinned commit, but gpqa_main's file, not gpqa_diamond's."""
    hf_home = tmp_path / "hf"
    fill = ("from redi import hub; hub.dataset_snapshot('Idavidrein/gpqa', 'gpqa_main', "
            f"'{GPQA['revision']}')")
    proc = run([sys.executable, "-c", fill],
               hub_env(hf_home, standin.url, offline=False, token=ACCEPTED_TOKEN))
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = download_gpqa(tmp_path, hub_env(hf_home))
    assert "does not hold dataset Idavidrein/gpqa at revision" in log
    assert f"config gpqa_diamond: snapshot {GPQA['revision']} holds only " \
           "['README.md', 'gpqa_main.csv'], not every file matching ['README.md', " \
           "'gpqa_diamond.csv']" in log
    assert f"snapshots of commits {GPQA['revision']}" in log and "gated" not in log


def test_a_pin_the_hub_does_not_have(standin, tmp_path) -> None:
    params = json.dumps({"repo_id": "open-r1/OpenR1-Math-Raw", "revision": "v9"})
    proc = run([sys.executable, "scripts/download_raw.py", "--params", params,
                "--out", str(tmp_path / "raw.parquet"), "--record", str(tmp_path / "r.json"),
                "--log", str(tmp_path / "raw.log")],
               hub_env(tmp_path / "hf", standin.url, offline=False))
    assert proc.returncode != 0 and not (tmp_path / "raw.parquet").exists()
    log = (tmp_path / "raw.log").read_text()
    assert ("RevisionError: open-r1/OpenR1-Math-Raw (dataset) has no revision 'v9' on the "
            "Hugging Face Hub (its branches and tags: main)") in log
