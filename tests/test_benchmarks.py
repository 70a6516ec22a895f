"""Benchmark loading: the five local files, the Hub loaders (offline, faked) and
the benchmark folder a preset reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from redi.eval import benchmarks
from redi.eval.benchmarks import HUB_SOURCES, download_benchmarks, load_benchmark, normalize_items
from redi.workflow import config as rc
from redi.workflow import names, paths, plan
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


def test_normalize_items_ids() -> None:
    assert normalize_items("b", [{"problem": "p", "answer": "1", "id": 7}])[0]["id"] == "7"
    rows = [{"problem": "p", "answer": "1"}, {"problem": "q", "answer": "2"}]
    assert [it["id"] for it in normalize_items("b", rows)] == ["b/0", "b/1"]


# ------------------------------------------------- the schema, broken on purpose

GOOD = {"id": "a", "problem": "What is 1+1?", "answer": "2"}

# (file name, content: bytes, or rows dumped as JSON) -> (item, rule) the error names
BAD_FILES = {
    "empty_list": ("b.json", [], "no items"),
    "empty_file": ("b.json", b"", "the file is empty"),
    "whitespace_file": ("b.jsonl", b"  \n\n", "the file is empty"),
    "truncated": ("b.json", b'[{"id": "a", "problem": "p", "ans', "line 1 column 30: not well-formed"),
    "truncated_jsonl": ("b.jsonl", b'{"id": "a", "problem": "p", "answer": "1"}\n{"id": "b", "pro',
                        "line 2: not well-formed JSON"),
    "latin1": ("b.json", '[{"problem": "caf\u00e9", "answer": "1"}]'.encode("latin-1"),
               "not UTF-8 (byte 17"),
    "object_not_array": ("b.json", {"problem": "p", "answer": "1"}, "expected a JSON array"),
    "string_item": ("b.json", [GOOD, "just a string"], "item 1: must be an object"),
    "bool_answer": ("b.json", [GOOD, {"id": "b", "problem": "p", "answer": True}],
                    "item 1 (id 'b'): answer must be a string, a number or a list of those, got bool"),
    "dict_answer": ("b.json", [{"id": "b", "problem": "p", "answer": {"x": 1}}],
                    "item 0 (id 'b'): answer must be a string, a number or a list of those, got dict"),
    "nan_answer": ("b.json", b'[{"id": "b", "problem": "p", "answer": NaN}]',
                   "NaN is not a JSON number"),
    "null_answer": ("b.json", [{"id": "b", "problem": "p", "answer": None}], "got NoneType"),
    "missing_answer": ("b.json", [{"id": "b", "problem": "p"}], "item 0 (id 'b'): answer is missing"),
    "empty_answer": ("b.json", [{"id": "b", "problem": "p", "answer": " $ $ "}], "answer is empty"),
    "empty_list_answer": ("b.json", [{"id": "b", "problem": "p", "answer": []}],
                          "answer is an empty list"),
    "bool_alternative": ("b.json", [{"id": "b", "problem": "p", "answer": ["1", False]}],
                         "answer alternative: answer must be a string"),
    "nested_list": ("b.json", [{"id": "b", "problem": "p", "answer": [["1"]]}], "not lists"),
    "no_problem": ("b.json", [{"id": "b", "answer": "1"}], "item 0 (id 'b'): problem must be a non-empty"),
    "blank_problem": ("b.json", [{"id": "b", "problem": "  ", "answer": "1"}], "problem must be"),
    "duplicate_ids": ("b.json", [GOOD, {**GOOD, "problem": "other"}],
                      "item 1 (id 'a'): ids must be unique, item 0 has the same id"),
    "dict_id": ("b.json", [{**GOOD, "id": {"k": 1}}], "item 0: id must be a string or an integer"),
}


def write(tmp_path, file: str, content) -> object:
    path = tmp_path / file
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_benchmark_files_are_refused_naming_file_item_and_rule(tmp_path, case) -> None:
    file, content, rule = BAD_FILES[case]
    path = write(tmp_path, file, content)
    with pytest.raises(benchmarks.BenchmarkFileError) as err:
        benchmarks.validate_benchmark_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and rule in message, message
    with pytest.raises(benchmarks.BenchmarkFileError):  # and the loader says the same
        load_benchmark({"name": "b", "file": file, "dir": str(tmp_path)})


def test_good_files_pass_in_both_formats(tmp_path) -> None:
    rows = [GOOD, {"problem": "p", "answer": 142.0}, {"idx": 3, "problem": "q", "answer": ["1", 2]}]
    assert benchmarks.validate_benchmark_file(write(tmp_path, "b.json", rows)) == 3
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    assert benchmarks.validate_benchmark_file(jsonl) == 3
    assert [it["id"] for it in load_benchmark({"name": "c", "file": "c.jsonl",
                                              "dir": str(tmp_path)})] == ["a", "c/1", "3"]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_the_paper_files_are_valid(name: str) -> None:
    file, count, _ = PAPER[name]
    assert benchmarks.validate_benchmark_file(BENCHMARKS_DIR / file, name) == count


# ------------------------------------------------------ out-of-domain files

CODE = {"task_id": "T/0", "prompt": "def f(x):\n", "entry_point": "f",
        "canonical_solution": "    return x\n", "test": "def check(c):\n    assert c(1) == 1\n"}
MC = {"Question": "1+1?", "Correct Answer": "2", "Incorrect Answer 1": "3",
      "Incorrect Answer 2": "4", "Incorrect Answer 3": "5", "Record ID": "r0"}

BAD_OOD = {
    "code_empty": ("code", "c.jsonl", b"", "no problems"),
    "code_truncated": ("code", "c.jsonl", json.dumps(CODE).encode()[:-5], "line 1: not well-formed"),
    "code_latin1": ("code", "c.jsonl", b'{"task_id": "caf\xe9"}', "not a readable UTF-8"),
    "code_string_line": ("code", "c.jsonl", b'"T/0"\n', "line 1: must be an object"),
    "code_no_test": ("code", "c.jsonl", json.dumps({**CODE, "test": ""}).encode(),
                     "line 1 (T/0): key 'test' must be a non-empty string"),
    "code_bad_entry": ("code", "c.jsonl", json.dumps({**CODE, "entry_point": "f; import os"}).encode(),
                       "key 'entry_point' must be a Python identifier"),
    "code_duplicate": ("code", "c.jsonl", (json.dumps(CODE) + "\n" + json.dumps(CODE)).encode(),
                       "line 2 (T/0): task ids must be unique, line 1"),
    "code_bad_gzip": ("code", "c.jsonl.gz", b"\x1f\x8b\x08\x00garbage", "not a readable"),
    "mc_empty_list": ("multiple_choice", "m.json", b"[]", "no questions"),
    "mc_truncated": ("multiple_choice", "m.json", b'[{"Question": ', "is not valid JSON"),
    "mc_latin1": ("multiple_choice", "m.csv", "Question\ncaf\u00e9\n".encode("latin-1"), "not UTF-8"),
    "mc_string_row": ("multiple_choice", "m.json", b'["q"]', "row 0: expected an object"),
    "mc_number_answer": ("multiple_choice", "m.json", json.dumps([{**MC, "Correct Answer": 2}]).encode(),
                         "row 0: column 'Correct Answer' must be a non-empty string"),
    "mc_duplicate": ("multiple_choice", "m.jsonl", (json.dumps(MC) + "\n" + json.dumps(MC)).encode(),
                     "row 1 (Record ID 'r0'): Record IDs must be unique"),
}


@pytest.mark.parametrize("case", sorted(BAD_OOD))
def test_bad_out_of_domain_files_are_refused_naming_file_and_rule(tmp_path, case) -> None:
    kind, file, content, rule = BAD_OOD[case]
    path = tmp_path / file
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        benchmarks.validate_ood_file(path, kind)
    assert str(path) in str(err.value) and rule in str(err.value), str(err.value)


def test_good_out_of_domain_files_and_the_packaged_humaneval(tmp_path) -> None:
    code = tmp_path / "c.jsonl"
    code.write_text(json.dumps(CODE) + "\n", encoding="utf-8")
    mc = tmp_path / "m.json"
    mc.write_text(json.dumps([MC, {**MC, "Record ID": "r1"}]), encoding="utf-8")
    assert benchmarks.validate_ood_file(code, "code") == 1
    assert benchmarks.validate_ood_file(mc, "multiple_choice") == 2
    assert benchmarks.validate_ood_file(None, "code") == 164
    with pytest.raises(ValueError, match="unknown out-of-domain kind"):
        benchmarks.validate_ood_file(code, "essay")


# -------------------------------------------------------- the data-stage job


def run_script(tmp_path, params: dict):
    out, log = tmp_path / "valid.json", tmp_path / "validate.log"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "validate_benchmarks.py"), "--params",
         json.dumps(params), "--out", str(out), "--log", str(log)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120)
    return proc, out, log


def test_validation_job_writes_its_record(tmp_path) -> None:
    (tmp_path / "ok.json").write_text(json.dumps([GOOD]), encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps(CODE) + "\n", encoding="utf-8")
    params = {"benchmarks": [{"name": "ok", "file": "ok.json", "dir": str(tmp_path)}],
              "ood": [{"name": "code", "kind": "code", "path": str(tmp_path / "c.jsonl")}]}
    proc, out, _ = run_script(tmp_path, params)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["benchmarks"]["ok"]["n_items"] == 1 and record["ood"]["code"]["n_items"] == 1
    assert len(record["benchmarks"]["ok"]["sha256"]) == 64


def test_validation_job_fails_naming_every_bad_file(tmp_path) -> None:
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    (tmp_path / "dup.json").write_text(json.dumps([GOOD, GOOD]), encoding="utf-8")
    params = {"benchmarks": [{"name": n, "file": f"{n}.json", "dir": str(tmp_path)}
                             for n in ("empty", "dup", "missing")], "ood": []}
    proc, out, log = run_script(tmp_path, params)
    assert proc.returncode == 1 and not out.exists()
    text = log.read_text()
    assert "3 invalid benchmark file(s)" in text
    assert f"benchmarks empty: {tmp_path}/empty.json: no items" in text
    assert f"benchmarks dup: {tmp_path}/dup.json: item 1 (id 'a'): ids must be unique" in text
    assert f"benchmarks missing: {tmp_path}/missing.json: cannot be read" in text


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
    """Each Hub schema mapped to ours (the real Hub loaders run on a real cache in
    tests/test_downloads.py; here only the rows are given)."""
    calls = []

    def load_dataset(repo, config, split, revision, instead):
        calls.append((repo, config, split))
        return HUB_ROWS[repo], "c0ffee"

    monkeypatch.setattr("redi.hub.load_dataset", load_dataset)
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


def test_unknown_hub_source(tmp_path) -> None:
    with pytest.raises(ValueError, match="no Hub loader"):
        download_benchmarks([{"name": "x", "file": "x.json", "hub": "someone/else"}], tmp_path / "b")


def test_preset_benchmark_folder() -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    assert names.benchmarks_dir(config) == "results/data/toy_benchmarks"
    config["preset"] = "paper"
    assert names.benchmarks_dir(config) == paths.BENCHMARKS_DOWNLOAD_DIR  # null: the Hub copies
    config["presets"]["paper"]["benchmarks_dir"] = "../shared/benchmarks"
    specs = plan.benchmark_specs(config)
    assert [s["name"] for s in specs] == list(PAPER)
    assert {s["dir"] for s in specs} == {"../shared/benchmarks"}
    assert benchmarks.benchmark_path(specs[0]).as_posix() == "../shared/benchmarks/math.json"
