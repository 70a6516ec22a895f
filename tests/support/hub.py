"""A stand-in Hugging Face Hub on 127.0.0.1 for the Hub tests, and the paper preset's
Hub repositories in miniature.

The server answers the few HTTP routes that huggingface_hub's ``repo_info``,
``auth_check``, ``list_repo_refs``, ``list_repo_tree`` and file downloads use, serving
repositories held in memory (commits of files, refs, a gated flag); huggingface_hub
talks to it through ``HF_ENDPOINT``, and it listens on the loopback address only. The
repositories hold tiny files of the real schemas at the preset's pinned revisions,
written by the libraries' own writers (datasets' ``to_parquet``/``to_csv``/``to_json``,
transformers' ``save_pretrained``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

from tests.conftest import ROOT

ACCEPTED_TOKEN = "hf_accepted_terms"  # the token of a user who accepted the gated terms


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]]  # commit -> path -> content
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    gated: bool = False

    def commit_of(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


class StandInHub:
    """``with StandInHub(repos) as hub:`` serves ``repos`` ((type, id) -> Repo) at
    ``hub.url`` until the block ends."""

    def __init__(self, repos: dict[tuple[str, str], Repo]):
        self.repos = repos
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the tests read hub.requests
            pass

        def do_HEAD(self) -> None:
            self.route(body=False)

        def do_GET(self) -> None:
            self.route(body=True)

        def route(self, body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            parts = path.strip("/").split("/")
            if parts[0] == "api":
                self.api(parts[1:], body)
            else:
                self.resolve(parts, body)

        # --------------------------------------------------------------- API routes
        def api(self, parts: list[str], body: bool) -> None:
            kind, repo_id, rest = parts[0][:-1], "/".join(parts[1:3]), parts[3:]
            repo = hub.repos.get((kind, repo_id))
            if repo is None:
                return self.error(404, "RepoNotFound", f"{repo_id} not found")
            if rest and rest[0] == "auth-check":
                return self.access(repo) and self.json({}, body)
            if rest and rest[0] == "refs":
                branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                            for n, c in repo.refs.items()]
                return self.json({"branches": branches, "tags": [], "converts": []}, body)
            if len(rest) < 2 or rest[0] not in ("revision", "tree"):
                return self.error(404, None, "no such route")
            commit = repo.commit_of(rest[1])
            if commit is None:
                return self.error(404, "RevisionNotFound", f"revision {rest[1]} not found")
            files = repo.commits[commit]
            if rest[0] == "revision":
                return self.json({"id": repo_id, "sha": commit, "private": False,
                                  "gated": "manual" if repo.gated else False, "disabled": False,
                                  "siblings": [{"rfilename": p} for p in sorted(files)]}, body)
            prefix = "/".join(rest[2:])
            return self.json([{"type": "file", "path": p, "size": len(data),
                               "oid": hashlib.sha1(data).hexdigest()}
                              for p, data in sorted(files.items()) if p.startswith(prefix)], body)

        # --------------------------------------------------------------- file routes
        def resolve(self, parts: list[str], body: bool) -> None:
            kind = "dataset" if parts[0] == "datasets" else "model"
            parts = parts[1:] if kind == "dataset" else parts
            if len(parts) < 5 or parts[2] != "resolve":
                return self.error(404, None, "no such route")
            repo = hub.repos.get((kind, "/".join(parts[:2])))
            if repo is None:
                return self.error(404, "RepoNotFound", "repository not found")
            if not self.access(repo):
                return
            commit = repo.commit_of(parts[3])
            if commit is None:
                return self.error(404, "RevisionNotFound", f"revision {parts[3]} not found")
            data = repo.commits[commit].get("/".join(parts[4:]))
            if data is None:
                return self.error(404, "EntryNotFound", "file not found", commit)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if body:
                self.wfile.write(data)

        # --------------------------------------------------------------- helpers
        def access(self, repo: Repo) -> bool:
            """A gated repository answers 401 without a token, 403 with one that has not
            accepted its terms (the Hub's codes); True when access is granted."""
            auth = self.headers.get("Authorization", "")
            if not repo.gated or auth == f"Bearer {ACCEPTED_TOKEN}":
                return True
            self.error(401 if not auth else 403, "GatedRepo",
                       "Access to this repository is restricted: accept its terms")
            return False

        def json(self, obj, body: bool) -> bool:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return True

        def error(self, status: int, code: str | None, message: str,
                  commit: str | None = None) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


# ------------------------------------------------------------------ the paper's repositories


def commit(label: str) -> str:
    """A 40-hex commit for a revision the config leaves at a branch."""
    return hashlib.sha1(label.encode()).hexdigest()


def card(configs: list[dict] | None) -> bytes:
    """A dataset card (README.md) with the ``configs`` YAML header, as the Hub's."""
    header = yaml.safe_dump({"configs": configs}, sort_keys=False) if configs else "{}\n"
    return f"---\n{header}---\n# stand-in\n".encode()


def written(rows: list[dict], kind: str) -> bytes:
    """``rows`` as datasets writes them (parquet, csv or json lines)."""
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data.{kind}"
        ds = datasets.Dataset.from_list(rows)
        {"parquet": ds.to_parquet, "csv": ds.to_csv, "jsonl": ds.to_json}[kind](str(path))
        return path.read_bytes()


@functools.cache
def model_files(family: str) -> dict[str, bytes]:
    """A tiny model of ``family`` with its tokenizer, as save_pretrained writes them."""
    from redi.data import prompts
    from redi.model import base_model

    texts = ["1 + 2 = 3, so the answer is \\boxed{3}.", prompts.SYSTEM_PROMPT] * 20
    tokenizer = base_model.train_tokenizer(texts, 300, family)
    model = base_model.tiny_model(tokenizer, {
        "family": family, "seed": 0, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 128, "rope_theta": 10000.0})
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def raw_rows(tag: str) -> list[dict]:

    good, bad = "<think>\n1+2=3\n</think>\n\\boxed{3}", "<think>\n1+2=4\n</think>\n\\boxed{4}"
    return [openr1_row(f"{tag}: evaluate 1+2 (variant {i})", good, bad) for i in range(3)]


def gpqa_row(i: int) -> dict:
    return {"Record ID": f"rec{i}", "Question": f"Which is right ({i})?",
            "Correct Answer": "right", "Incorrect Answer 1": "w1",
            "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3", "Subdomain": "Physics"}


BENCH_ROWS = {  # the Hub's columns of each benchmark (redi.eval.benchmarks.HUB_SOURCES maps them)
    "HuggingFaceH4/MATH-500": [{"problem": "1+1?", "solution": "2", "answer": "2",
                                "subject": "Algebra", "level": 1, "unique_id": "test/a/1.json"}],
    "HuggingFaceH4/aime_2024": [{"id": 60, "problem": "AIME?", "solution": "...",
                                 "answer": "204", "url": "u", "year": "2024"}],
    "AI-MO/aimo-validation-amc": [{"id": 0, "problem": "AMC?", "answer": 142.0, "url": "u"}],
    "knoveleng/Minerva-Math": [{"problem": "M?", "solution": "so $\\boxed{9.6}$ nm"}],
    "Hothan/OlympiadBench": [{"id": 1606, "question": "O?", "final_answer": ["$\\frac{1}{2}$"],
                              "is_multiple_answer": False}],
}
BENCH_EXPECTED = {  # what the benchmarks job writes for those rows
    "math500": [{"id": "test/a/1.json", "problem": "1+1?", "answer": "2"}],
    "aime24": [{"id": "60", "problem": "AIME?", "answer": "204"}],
    "amc23": [{"id": "0", "problem": "AMC?", "answer": 142.0}],
    "minerva": [{"id": "minerva/0", "problem": "M?", "answer": ["9.6"]}],
    "olympiadbench": [{"id": "1606", "problem": "O?", "answer": ["$\\frac{1}{2}$"]}],
}


def paper_preset() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())["presets"]["paper"]


def pinned(revision: str, label: str) -> str:
    """The commit a pin names: itself, or a stand-in commit for a branch."""
    return revision if len(revision) == 40 else commit(label)


def _dataset(files: dict[str, bytes], revision: str, label: str, **kw) -> Repo:
    sha = pinned(revision, label)
    return Repo({sha: files}, refs={"main": sha} if revision == "main" else {}, **kw)


@functools.cache
def dataset_repos() -> dict[tuple[str, str], Repo]:
    """The paper preset's Hub datasets at their pinned revisions (a branch pin: ``main``
    pointing at a stand-in commit). The raw corpus has an older commit too, with other
    rows, so that a job taking the wrong commit shows."""
    preset = paper_preset()
    repos: dict[tuple[str, str], Repo] = {}
    default = [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}]}]
    raw = _dataset({"README.md": card(default),
                    "data/train-00000-of-00001.parquet": written(raw_rows("main"), "parquet")},
                   preset["raw_data_revision"], "raw")
    raw.commits[commit("raw-old")] = {"README.md": card(default),
                                      "data/train-00000-of-00001.parquet":
                                      written(raw_rows("old"), "parquet")}
    repos["dataset", "open-r1/OpenR1-Math-Raw"] = raw
    for bench in preset["benchmarks"]:
        rows, repo = BENCH_ROWS[bench["hub"]], bench["hub"]
        if repo == "HuggingFaceH4/MATH-500":  # no configs in the card: files inferred
            files = {"README.md": card(None), "test.jsonl": written(rows, "jsonl")}
        elif repo == "Hothan/OlympiadBench":  # several configs, one of them used
            files = {"README.md": card([
                {"config_name": name, "data_files": [
                    {"split": "train", "path": f"OlympiadBench/{name}/{name}.parquet"}]}
                for name in ("OE_TO_maths_en_COMP", "OE_TO_physics_en_COMP")])}
            for name in ("OE_TO_maths_en_COMP", "OE_TO_physics_en_COMP"):
                files[f"OlympiadBench/{name}/{name}.parquet"] = written(rows, "parquet")
        else:
            files = {"README.md": card(default),
                     "data/train-00000-of-00001.parquet": written(rows, "parquet")}
        repos["dataset", repo] = _dataset(files, bench["revision"], repo)
    gpqa = next(b for b in preset["ood"]["benchmarks"] if b.get("hub"))
    configs = [{"config_name": c, "data_files": [{"split": "train", "path": f"{c}.csv"}]}
               for c in ("gpqa_diamond", "gpqa_main")]
    repos["dataset", gpqa["hub"]] = _dataset(
        {"README.md": card(configs), "gpqa_diamond.csv": written(GPQA_DIAMOND, "csv"),
         "gpqa_main.csv": written([gpqa_row(i) for i in range(5)], "csv")},
        gpqa["revision"], "gpqa", gated=True)
    return repos


@functools.cache
def paper_repos() -> dict[tuple[str, str], Repo]:
    """Every Hub repository of the paper preset: the datasets and the models."""
    preset = paper_preset()
    repos = dict(dataset_repos())
    models = [(preset["base_model"], "qwen2")]
    models += [(b["model"], "llama" if "llama" in b["model"]["source"].lower() else "qwen2")
               for b in preset["base_models"].values()]
    models += [({"source": b["model"], "revision": b["revision"]}, "qwen2")
               for b in preset["baselines"]]
    for spec, family in models:
        gated = spec["source"].startswith("meta-llama/")  # as on the Hub
        repos["model", spec["source"]] = _dataset(model_files(family), spec["revision"],
                                                  spec["source"], gated=gated)
    return repos


GPQA_DIAMOND = [gpqa_row(i) for i in range(2)]


def openr1_row(problem: str, good: str, bad: str) -> dict:
    return {"problem": problem, "solution": "", "answer": "3", "problem_type": "Algebra",
            "question_type": "math-word-problem", "problem_is_valid": "Yes",
            "solution_is_valid": "Yes", "source": "olympiads", "synthetic": False,
            "generations": [good, bad], "generations_count": 2, "reparsed_answers": ["3", "4"],
            "correctness": {"llama_verification": [True, False],
                            "math_verify_answer": [True, False],
                            "math_verify_reparsed_answer": [True, False]}}
