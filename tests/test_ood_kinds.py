"""Adding an out-of-domain benchmark kind is one ``redi.eval.ood_kinds.KINDS`` entry: a toy
exact-match kind registered here is accepted by the config check, planned, validated,
generated, evaluated by ``redi.eval.ood`` through its own functions and shown in Table 5; an
unregistered kind is refused everywhere with the known kinds named."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from redi.eval import benchmarks, ood, ood_kinds, toy_ood
from redi.eval.generation import Backend, Completion
from redi.io import BenchmarkFileError
from redi.report import table5
from redi.workflow import config as rc
from redi.workflow import ood_plan
from tests.conftest import ROOT

N = 2  # samples per item


def load(spec: Mapping[str, Any]) -> list[dict[str, str]]:
    return [json.loads(line) for line in Path(spec["path"]).read_text().splitlines()]


def ids(items: Sequence[Mapping[str, str]]) -> list[str]:
    return [item["id"] for item in items]


def prompts(items: Sequence[Mapping[str, str]], model: str, params: Mapping[str, Any]) -> list[str]:
    return [f"Q: {item['question']}\nA:" for item in items]


def grade(items: Sequence[Mapping[str, str]], item_ids: Sequence[str],
          completions: Sequence[Sequence[Completion]], params: Mapping[str, Any],
          threads: int) -> tuple[pd.DataFrame, np.ndarray, dict, dict]:
    """Correct iff the stripped response is the answer."""
    correct = np.array([[c.text.strip() == item["answer"] for c in row]
                        for item, row in zip(items, completions, strict=True)])
    flat = [c for row in completions for c in row]
    frame = pd.DataFrame({"problem_id": [i for i in item_ids for _ in range(N)],
                          "response": [c.text for c in flat],
                          "n_tokens": [c.n_tokens for c in flat],
                          "correct": correct.reshape(-1).tolist()})
    return frame, correct, {"frac_empty": 0.0}, {"matcher": {"strip": True}}


def validate(path: str | Path | None) -> int:
    if path is None:
        raise BenchmarkFileError("exact-match benchmark without a file")
    return len(load({"path": path}))


def toy(seed: int, n: int, corpus: Any = None, benchmarks_dir: Any = None) -> list[dict]:
    return [{"id": f"em/{i}", "question": f"{seed} + {i}", "answer": str(seed + i)}
            for i in range(n)]


EXACT_MATCH = ood_kinds.OodKind(
    description="question and answer; correct iff the response is the answer",
    suffixes=(".jsonl",), default_source="hub", default_source_text="the Hub", hub=True,
    paper=("SomeQA", 12.5), load=load, ids=ids, prompts=prompts, grade=grade,
    validate=validate, toy=toy,
)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(ood_kinds.KINDS, "exact_match", EXACT_MATCH)


@pytest.fixture
def em_file(tmp_path) -> Path:
    toy_ood.write_jsonl(tmp_path / "em.jsonl", toy(3, 2))
    return tmp_path / "em.jsonl"


def tiny_config(bench: dict) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["presets"]["tiny"]["ood"]["benchmarks"].append(bench)
    return config


class EchoBackend(Backend):
    """The answer to ``a + b`` for sample 0, a wrong one for the others."""

    def _generate(self, model, prompts, n, priority, seeds):
        self.prompts = list(prompts)
        right = [str(sum(int(x) for x in p[3:-3].split(" + "))) for p in prompts]
        return [[Completion(r if j == 0 else "no", n_tokens=1 + j, finished=True)
                 for j in range(n)] for r in right]

    def context(self, model):
        return {"max_model_len": None}

    def describe(self):
        return {"backend": "echo"}


def test_the_config_check_and_the_plan_accept_a_registered_kind(registered, em_file):
    config = tiny_config({"name": "em", "label": "EM", "kind": "exact_match",
                          "file": str(em_file)})
    rc.validate_config(config, root=ROOT)
    spec = next(b for b in ood_plan.ood_benchmarks(config) if b["name"] == "em")
    assert (spec["kind"], spec["source"], spec["path"]) == ("exact_match", "file", str(em_file))
    config = tiny_config({"name": "em", "label": "EM", "kind": "exact_match", "toy": 3})
    rc.validate_config(config, root=ROOT)
    assert ood_plan.toy_ood_inputs(config, "em") == {"corpus": [], "benchmarks": []}
    assert ood_plan.toy_ood_params(config, "em")["kind"] == "exact_match"
    # the kind's own file suffixes
    bad = tiny_config({"name": "em", "label": "EM", "kind": "exact_match", "file": "em.csv"})
    with pytest.raises(rc.ConfigError, match="expected a .jsonl file for kind exact_match"):
        rc.validate_config(bad, root=ROOT)


def test_ood_dispatches_to_a_registered_kind(registered, em_file, tmp_path):
    spec = {"name": "em", "label": "EM", "kind": "exact_match", "source": "file",
            "path": str(em_file), "max_new_tokens": 5}
    backends: list[EchoBackend] = []

    def make_backend(params: dict) -> EchoBackend:
        backends.append(EchoBackend())
        return backends[-1]

    params = {"seed": 1, "n_samples": N}
    frame, summary = ood.evaluate_benchmark(spec, "m", params, make_backend, threads=1)
    assert backends[0].prompts == ["Q: 3 + 0\nA:", "Q: 3 + 1\nA:"]
    assert frame["correct"].tolist() == [True, False, True, False]
    assert (summary["kind"], summary["pass@1"], summary[f"pass@{N}"]) == ("exact_match", 0.5, 1.0)
    assert summary["matcher"] == {"strip": True} and summary["frac_empty"] == 0.0
    assert summary["generation"] == {"backend": "echo", "max_model_len": None}
    # the file check and the toy generator are the kind's too
    assert benchmarks.validate_ood_file(em_file, "exact_match") == 2
    rows = toy_ood.run({"kind": "exact_match", "n": 3, "seed": 4}, tmp_path / "toy.jsonl")
    assert rows == toy(4, 3) and len((tmp_path / "toy.jsonl").read_text().splitlines()) == 3


def test_table5_shows_the_kinds_paper_figure(registered):
    spec = {"title": "Table 5", "preset": "tiny", "reference": "a", "paper_row": "b",
            "benchmarks": [{"name": "em", "label": "EM", "kind": "exact_match"}],
            "rows": [{"label": "a", "model": "A", "kind": "sft", "runs": []},
                     {"label": "b", "model": "B", "kind": "sft", "runs": []}]}
    summaries = {label: {"label": label, "model": {"kind": "sft", "run": label},
                         "benchmarks": {"em": {"pass@1": p, "pass@1_sem": 0.0}}}
                 for label, p in (("a", 0.2), ("b", 0.3))}
    frame = table5.table5_frame(spec, summaries)
    assert math.isnan(frame["em_rel_paper"][0]) and frame["em_rel_paper"][1] == 12.5
    assert "paper (SomeQA)" in table5.table5_markdown(frame, spec, "2")


def test_an_unknown_kind_is_refused_naming_the_known_ones(tmp_path):
    known = r"\['code', 'multiple_choice'\]"
    with pytest.raises(ValueError, match=f"unknown out-of-domain kind 'exact_match'.*{known}"):
        ood_kinds.get("exact_match")
    with pytest.raises(ValueError, match=known):
        ood.load_items({"kind": "exact_match", "path": None, "name": "em"})
    with pytest.raises(BenchmarkFileError, match=known):
        benchmarks.validate_ood_file(None, "exact_match")
    with pytest.raises(ValueError, match=known):
        toy_ood.run({"kind": "exact_match", "n": 1, "seed": 0}, tmp_path / "x.jsonl")
    config = tiny_config({"name": "em", "label": "EM", "kind": "exact_match", "toy": 3})
    with pytest.raises(rc.ConfigError, match=f"kind.*is not one of {known}"):
        rc.validate_config(copy.deepcopy(config), root=ROOT)
