"""The authors' filters, the dual-verifier rule, pairing and the length filter."""

from __future__ import annotations

import json

import pytest

from redi.data import filters, length_filter, loading, stage_report
from redi.data.prompts import QWEN_MATH_CHAT_TEMPLATE, authors_token_lengths


def row(**over):
    base = {
        "problem": "1 + 1?",
        "answer": "2",
        "problem_is_valid": "Yes",
        "source": "olympiads",
        "generations": ["<think>\na\n</think> \\boxed{2}", "<think>\nb\n</think> \\boxed{3}"],
        "correctness": {
            "llama_verification": [True, False],
            "math_verify_answer": [True, False],
            "math_verify_reparsed_answer": [True, False],
        },
    }
    base.update(over)
    return base


def labels(llama, mv):
    return {"llama_verification": llama, "math_verify_answer": mv,
            "math_verify_reparsed_answer": mv}


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({}, None),
        ({"problem_is_valid": "No"}, "problem_is_valid_not_yes"),
        ({"problem_is_valid": " yes "}, None),
        ({"problem_is_valid": "YES"}, None),
        ({"problem_is_valid": None}, "problem_is_valid_missing"),
        ({"problem_is_valid": True}, "problem_is_valid_not_str"),
        ({"problem_is_valid": "No", "source": "cn_k12"}, "problem_is_valid_not_yes"),
        ({"source": "cn_k12"}, "source_cn_k12"),
        ({"problem": ""}, "empty_problem"),
        ({"problem": "   "}, "empty_problem"),
        ({"problem": None}, "problem_missing"),
        ({"problem": 12}, "problem_not_str"),
        ({"generations": [], "correctness": labels([], [])}, "no_generations"),
        ({"generations": None}, "generations_missing"),
        # a string whose length equals the label count used to abort the filter
        ({"generations": "ab"}, "generations_not_list"),
        ({"generations": {"0": "a"}}, "generations_not_list"),
        ({"generations": [None, None]}, "generations_not_list_of_str"),
        ({"generations": ["a", 3]}, "generations_not_list_of_str"),
        ({"correctness": None}, "correctness_missing"),
        ({"correctness": "[true, false]"}, "correctness_not_dict"),
        ({"correctness": {"math_verify_reparsed_answer": [True, False]}},
         "labels_missing_llama_verification"),
        ({"correctness": labels([True, False], None)},
         "labels_missing_math_verify_reparsed_answer"),
        ({"correctness": labels("TF", [True, False])}, "labels_not_list_llama_verification"),
        ({"correctness": labels([1, 1], [True, False])}, "labels_not_bool_llama_verification"),
        ({"correctness": labels([True, False], ["yes", "no"])},
         "labels_not_bool_math_verify_reparsed_answer"),
        ({"correctness": labels([True], [True, False])}, "length_mismatch_llama_verification"),
        ({"correctness": labels([True, False], [True])},
         "length_mismatch_math_verify_reparsed_answer"),
        # math_verify_answer is not used by the rule: its length does not matter
        ({"correctness": {**labels([True, False], [True, False]), "math_verify_answer": [1]}},
         None),
        ({"answer": 2}, "answer_not_str"),
        ({"answer": None}, None),
        ({"source": ["olympiads"]}, "source_not_str"),
        ({"uuid": 7}, "uuid_not_str"),
        ({"problem": "1 + 1 \ud800?"}, "text_not_utf8"),
        ({"generations": ["ok", "\udfff"]}, "text_not_utf8"),
        ({"problem": "1 + 1 \x00 é?"}, None),  # a null byte and accents are text
    ],
)
def test_drop_reason(over, reason):
    assert filters.drop_reason(row(**over)) == reason


def test_drop_reasons_are_the_declared_ones():
    assert filters.DROP_REASONS[:3] == loading.LINE_REASONS
    assert len(set(filters.DROP_REASONS)) == len(filters.DROP_REASONS) == 28
    assert filters.drop_reason([1, 2]) == "line_not_object"
    assert filters.drop_reason(loading.BadLine("line_invalid_json", 3, "x")) == "line_invalid_json"


def test_dual_verifier_rule_none_is_false():
    r = row(generations=["a", "b", "c", "d", "e"],
            correctness=labels([True, True, False, None, True], [True, False, True, True, None]))
    assert filters.correct_flags(r) == [True, False, False, False, False]


def _index(rows):
    return [{**r, "original_index": i} for i, r in enumerate(rows)]


def test_pairing_first_correct_and_first_incorrect():
    rows = _index([
        # wrong, right, wrong, right -> chosen = gen 1, rejected = gen 0
        row(generations=["w0", "r1", "w2", "r3"],
            correctness=labels([False, True, True, True], [True, True, False, True])),
        # all correct -> SFT only
        row(problem="p2", generations=["r0", "r1"], correctness=labels([True, True], [True, True])),
        # none correct -> neither
        row(problem="p3", generations=["w0"], correctness=labels([None], [True])),
    ])
    sft, pairs, report = filters.build_sets(rows)
    assert [(s["original_index"], s["response"], s["chosen_gen_idx"]) for s in sft] == [
        (0, "r1", 1), (1, "r0", 0)]
    assert len(pairs) == 1
    p = pairs[0]
    assert (p["chosen"], p["rejected"], p["chosen_gen_idx"], p["rejected_gen_idx"]) == (
        "r1", "w0", 1, 0)
    assert p["problem"] == "1 + 1?" and p["answer"] == "2"
    c = report["counts"]
    assert (c["rows_in"], c["rows_kept"], c["problems_correct_and_incorrect"],
            c["problems_all_correct"], c["problems_without_correct"]) == (3, 3, 1, 1, 1)
    assert c["generations_correct"] == 4 and c["kept_rows_with_null_labels"] == 1
    assert report["sft_examples"] == 2 and report["pairs_before_length_filter"] == 1


def test_wrong_types_are_counted_under_their_reason_and_never_reach_the_sets():
    rows = _index([
        row(),                                                   # kept: SFT and pair
        row(generations="ab"),                                   # as long as the label lists
        row(correctness=labels([1, 1], [True, False])),
        row(generations=[None, None]),
        row(problem=5),
        row(correctness=labels(["yes", True], [True, False])),
    ])
    sft, pairs, report = filters.build_sets(rows)
    assert {k: v for k, v in report["dropped"].items() if v} == {
        "problem_not_str": 1, "generations_not_list": 1, "generations_not_list_of_str": 1,
        "labels_not_bool_llama_verification": 2}
    assert [s["original_index"] for s in sft] == [0] and [p["original_index"] for p in pairs] == [0]
    assert report["drop_examples"]["labels_not_bool_llama_verification"] == [
        {"original_index": 2}, {"original_index": 5}]
    c = report["counts"]
    assert (c["rows_in"], c["rows_kept"], c["rows_dropped"]) == (6, 1, 5)


def test_empty_generations_are_never_a_target_or_a_side():
    rows = _index([
        row(generations=["", "r1"], correctness=labels([True, True], [True, True])),
        row(generations=["r0", "  \n"], correctness=labels([True, False], [True, False])),
        row(generations=["", ""], correctness=labels([True, False], [True, False])),
        row(generations=["w0", "", "r2"], correctness=labels([False, True, True], [False, True, True])),
    ])
    sft, pairs, report = filters.build_sets(rows)
    assert [(s["original_index"], s["response"], s["chosen_gen_idx"]) for s in sft] == [
        (0, "r1", 1), (1, "r0", 0), (3, "r2", 2)]
    assert [(p["original_index"], p["chosen"], p["rejected"]) for p in pairs] == [(3, "r2", "w0")]
    c = report["counts"]
    assert (c["generations_empty"], c["rows_with_empty_generations"]) == (5, 4)
    assert (c["problems_without_correct"], c["problems_all_correct"],
            c["problems_correct_and_incorrect"]) == (1, 2, 1)


def test_identical_pairs_and_duplicate_problems_are_counted_and_kept():
    same = "<think>\n2\n</think> \\boxed{2}"
    rows = _index([
        row(generations=[same, same]),  # one text, judged right and wrong: identical pair
        row(problem=" 1 + 1? "),        # the same problem (stripped)
        row(problem="2 + 2?", correctness=labels([True, True], [True, True])),
        row(problem="2 + 2?", generations=["w"], correctness=labels([False], [False])),
    ])
    sft, pairs, report = filters.build_sets(rows)
    assert (len(sft), len(pairs)) == (3, 2)
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == (same, same)
    c = report["counts"]
    assert (c["pairs_identical"], c["kept_rows_duplicate_problem"], c["sft_duplicate_problems"],
            c["pairs_duplicate_problems"]) == (1, 2, 1, 1)


def write_jsonl(path, rows, extra: bytes = b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + extra)
    return str(path)


def test_bad_jsonl_lines_are_counted_naming_the_line(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [row()],
                      b"\n{not json\n\xff\xfeoops\n[1, 2]\n" + json.dumps(row()).encode() + b"\n\n")
    corpus = loading.load_raw(raw)
    assert len(corpus) == 5 and corpus.line_numbers.tolist() == [1, 3, 4, 5, 6]
    sft, pairs, report = filters.build_sets(loading.shuffled_rows(corpus, 42))
    assert {k: v for k, v in report["dropped"].items() if v} == {
        "line_not_utf8": 1, "line_invalid_json": 1, "line_not_object": 1}
    ex = report["drop_examples"]
    assert ex["line_not_utf8"] == [{"line": 4, "error": "byte 0xff at column 1 is not UTF-8"}]
    assert ex["line_not_object"] == [{"line": 5, "error": "a JSON array, not an object"}]
    assert ex["line_invalid_json"][0]["line"] == 3
    assert ex["line_invalid_json"][0]["error"].startswith("invalid JSON: Expecting property name")
    assert sorted(s["original_index"] for s in sft) == [0, 4] and len(pairs) == 2


def test_dropped_jsonl_rows_are_named_by_line(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [row(), row(problem=3)])
    report = filters.run_filter(raw, {"shuffle_seed": 42}, str(tmp_path / "sft.parquet"),
                             str(tmp_path / "pairs.parquet"), str(tmp_path / "filter.json"))
    assert report["drop_examples"] == {"problem_not_str": [{"original_index": 1, "line": 2}]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty: no JSON lines"),
        (b"\n  \n\n", "is empty: no JSON lines"),
        (b"{oops\n[]\n", "none of its 2 lines is a JSON object (line 1: invalid JSON"),
        (json.dumps(row()).encode("utf-16"), "none of its 1 lines is a JSON object (line 1: "
                                             "byte 0xff at column 1 is not UTF-8)"),
        (b"\xe9t\xe9\n", "(line 1: byte 0xe9 at column 1 is not UTF-8)"),
    ],
)
def test_unreadable_jsonl_is_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "my raw.jsonl"
    path.write_bytes(content)
    with pytest.raises(loading.RawDataError) as err:
        loading.load_raw(str(path))
    assert repr(str(path)) in str(err.value) and message in str(err.value)


def test_utf8_bom_and_crlf_are_read(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row()).encode() + b"\r\n")
    sft, _, report = filters.build_sets(loading.shuffled_rows(loading.load_raw(str(path)), 42))
    assert report["counts"]["rows_kept"] == 1 and len(sft) == 1


def test_unreadable_parquet_is_an_error_naming_the_file(tmp_path):
    import pandas as pd

    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(loading.RawDataError, match=r"empty\.parquet' is not a readable parquet file"):
        loading.load_raw(str(empty))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really")
    with pytest.raises(loading.RawDataError, match=r"garbage\.parquet' is not a readable parquet"):
        loading.load_raw(str(garbage))
    no_rows = tmp_path / "no_rows.parquet"
    pd.DataFrame({c: pd.Series([], dtype=str) for c in loading.REQUIRED_COLUMNS}).to_parquet(no_rows)
    with pytest.raises(loading.RawDataError, match=r"no_rows\.parquet' has no rows"):
        loading.load_raw(str(no_rows))
    csv = tmp_path / "raw.csv"
    csv.write_text("a,b\n")
    with pytest.raises(loading.RawDataError, match=r"raw\.csv': expected a .jsonl or .parquet file"):
        loading.load_raw(str(csv))
    with pytest.raises(loading.RawDataError, match="is not a file"):
        loading.load_raw(str(tmp_path))


def test_wrongly_typed_parquet_columns_are_counted(tmp_path):
    import pandas as pd

    rows = [row(correctness=labels([1, 0], [1, 0]), problem=p) for p in ("a", "b", "c", None)]
    pd.DataFrame(rows).to_parquet(tmp_path / "raw.parquet")  # labels: list<int64>
    sft, pairs, report = filters.build_sets(
        loading.shuffled_rows(loading.load_raw(str(tmp_path / "raw.parquet")), 42))
    assert {k: v for k, v in report["dropped"].items() if v} == {
        "problem_missing": 1, "labels_not_bool_llama_verification": 3}
    assert (sft, pairs) == ([], [])


def test_jsonl_order_is_the_authors_datasets_shuffle(tmp_path):
    import datasets

    rows = [row(problem=f"p{i}") for i in range(40)]
    raw = write_jsonl(tmp_path / "raw.jsonl", rows)
    ours = [r["original_index"] for r in loading.shuffled_rows(loading.load_raw(raw), 42)]
    ds = datasets.load_dataset("json", data_files=raw, split="train")
    ds = ds.add_column("original_index", list(range(len(ds)))).shuffle(seed=42)
    assert ours == ds["original_index"] and sorted(ours) == list(range(40))


def _run_filter(tmp_path, raw):
    return filters.run_filter(raw, {"shuffle_seed": 42}, str(tmp_path / "sft.parquet"),
                           str(tmp_path / "pairs.parquet"), str(tmp_path / "filter_report.json"))


def test_a_corpus_without_sft_examples_stops_with_the_report_written(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [
        row(problem_is_valid="No"), row(source="cn_k12"),
        row(correctness=labels([False, True], [True, False]))])
    with pytest.raises(loading.UnusableCorpusError) as err:
        _run_filter(tmp_path, raw)
    expected = (f"the corpus gives no SFT example: of the 3 rows read from {raw!r}, 2 were "
                "dropped (problem_is_valid_not_yes: 1, source_cn_k12: 1) and 1 kept; none of "
                "the kept rows has a correct (Llama judge AND Math-Verify) non-empty generation")
    assert str(err.value) == f"{expected} (counts in {tmp_path / 'report.json'})"
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["status"], report["error"]) == ("failed", expected)
    assert report["filter"]["counts"]["rows_in"] == 3 and report["sizes"]["sft_examples"] == 0
    assert not (tmp_path / "sft.parquet").exists()
    assert not (tmp_path / "filter_report.json").exists()


def test_a_corpus_without_pairs_stops_with_the_report_written(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [
        row(correctness=labels([True, True], [True, True])), row(generations=[None, "x"])])
    with pytest.raises(loading.UnusableCorpusError, match=(
            "the corpus gives no preference pair: of the 2 rows read from .*, 1 were dropped "
            r"\(generations_not_list_of_str: 1\) and 1 kept; each of the 1 problems with a "
            "correct generation has no incorrect non-empty one")):
        _run_filter(tmp_path, raw)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["sizes"]["sft_examples"] == 1


class CharTokenizer:
    """One token per character; the chat template as the tiny preset's."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        import jinja2

        text = jinja2.Template(QWEN_MATH_CHAT_TEMPLATE).render(
            messages=messages, add_generation_prompt=add_generation_prompt)
        return list(text) if tokenize else text

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(ch) for ch in t] for t in texts]}


def test_sft_length_rule_truncates_as_the_authors_and_drops_only_untrainable_rows():
    keep, report = length_filter.sft_length_rule([(10, 5), (10, 6), (16, 1), (15, 100)], 16, [7, 8, 9, 10])
    assert keep.tolist() == [True, True, False, True]
    assert {k: report[k] for k in ("sft_in", "sft_out", "truncated", "dropped_prompt_too_long",
                                   "truncated_examples", "dropped_examples")} == {
        "sft_in": 4, "sft_out": 3, "truncated": 1, "dropped_prompt_too_long": 1,
        "truncated_examples": [10], "dropped_examples": [9]}


def test_sft_lengths_are_what_the_sft_job_trains_on(tmp_path):
    import pandas as pd

    from redi.train.train_data import sft_items

    tok = CharTokenizer()
    rows = [{"problem": "1+1", "response": "r" * 30}, {"problem": "2+2" * 20, "response": "ok"}]
    pd.DataFrame(rows).to_parquet(tmp_path / "sft.parquet")
    lengths = length_filter.sft_sequence_lengths(tok, rows, chunk=1)
    items = sft_items(tok, tmp_path / "sft.parquet", max_length=10_000)
    assert [(s.n_prompt, s.n_completion) for item in items for s in item.seqs] == lengths
    assert lengths[0][1] == 30 + len("<|im_end|>\n")


@pytest.fixture
def char_tokenizer(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        staticmethod(lambda path: CharTokenizer()))


def _data_stage(tmp_path, rows, limits):
    """filter_data, sft_length, length_filter and data_report on ``rows``."""
    raw, d = write_jsonl(tmp_path / "raw.jsonl", rows), tmp_path
    _run_filter(tmp_path, raw)
    filt = str(d / "filter_report.json")
    length_filter.run_sft_length("tok", {"max_length": limits["sft_max_length"]}, str(d / "sft.parquet"),
                        str(d / "sft_out.parquet"), str(d / "sft_length.json"), filt)
    pair_limits = {k: limits[k] for k in ("max_prompt_tokens", "max_response_tokens")}
    length_filter.run_length_filter("tok", pair_limits, str(d / "pairs.parquet"),
                           str(d / "pairs_out.parquet"), str(d / "length_report.json"), filt)
    return stage_report.run_report(filt, str(d / "length_report.json"), str(d / "sft_length.json"), None,
                           str(d / "report.json"))


LIMITS = {"max_prompt_tokens": 10_000, "max_response_tokens": 10_000, "sft_max_length": 2_000}


def test_a_5mb_generation_is_counted_as_truncated(tmp_path, char_tokenizer):
    import pandas as pd

    huge = "<think>\n" + "7" * 5_000_000 + "\n</think> \\boxed{2}"
    rows = [row(), row(generations=[huge, "w"]), row(problem="q" * 3000)]
    report = _data_stage(tmp_path, rows, LIMITS)
    rule = report["sft_length_rule"]
    assert {k: rule[k] for k in ("sft_in", "sft_out", "truncated", "dropped_prompt_too_long",
                                 "truncated_examples", "dropped_examples")} == {
        "sft_in": 3, "sft_out": 2, "truncated": 1, "dropped_prompt_too_long": 1,
        "truncated_examples": [1], "dropped_examples": [2]}
    assert report["status"] == "ok" and report["sizes"]["sft_examples"] == 2
    assert report["token_lengths"]["sft_sequence"]["max"] > 5_000_000
    kept = pd.read_parquet(tmp_path / "sft_out.parquet")
    assert sorted(kept["original_index"]) == [0, 1]
    assert report["length_filter"]["dropped"]["chosen_too_long"] == 1


def test_a_length_filter_leaving_no_pair_stops_with_the_report_written(tmp_path, char_tokenizer):
    with pytest.raises(loading.UnusableCorpusError, match=(
            r"the length filter dropped all 1 pairs \(prompt > 10 tokens: 1, chosen > 10000: 0, "
            r"rejected > 10000: 0\)")):
        _data_stage(tmp_path, [row()], {**LIMITS, "max_prompt_tokens": 10})
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["sizes"]["pairs_after_length_filter"] == 0
    assert report["filter"]["counts"]["rows_kept"] == 1
    assert not (tmp_path / "pairs_out.parquet").exists()


def test_an_sft_length_rule_leaving_no_example_stops_with_the_report_written(
        tmp_path, char_tokenizer):
    with pytest.raises(loading.UnusableCorpusError, match=(
            "the SFT length rule dropped all 1 SFT examples: each prompt alone has >= "
            "sft.max_length 20 tokens")):
        _data_stage(tmp_path, [row()], {**LIMITS, "sft_max_length": 20})
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["sizes"]["sft_examples"] == 0
    assert report["sft_length_rule"]["dropped_examples"] == [0]
    assert not (tmp_path / "sft_out.parquet").exists()


def test_a_failing_data_job_logs_its_traceback(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    raw = write_jsonl(tmp_path / "raw.jsonl", [row(problem_is_valid="No")])
    log = tmp_path / "filter_data.log"
    proc = subprocess.run(
        [sys.executable, "scripts/filter_data.py", "--params", '{"shuffle_seed": 42}',
         "--raw", raw, "--sft", str(tmp_path / "sft.parquet"), "--pairs",
         str(tmp_path / "pairs.parquet"), "--report", str(tmp_path / "filter_report.json"),
         "--log", str(log)],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 1
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "redi.data.loading.UnusableCorpusError: the corpus gives no SFT example" in text
    assert "problem_is_valid_not_yes: 1" in text
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "failed"


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"problem": "x", "generations": ["a"]}) + "\n")
    with pytest.raises(loading.RawDataError, match="correctness"):
        loading.load_raw(str(path))


def test_keep_by_length_boundaries():
    assert length_filter.keep_by_length((800, 19000, 19000), 800, 19000)
    assert not length_filter.keep_by_length((801, 10, 10), 800, 19000)
    assert not length_filter.keep_by_length((10, 19001, 10), 800, 19000)
    assert not length_filter.keep_by_length((10, 10, 19001), 800, 19000)


def test_authors_lengths_render_separately_with_system_prompt_and_eos():
    tok = CharTokenizer()
    system = ("<|im_start|>system\nPlease reason step by step, and put your final answer "
              "within \\boxed{}.<|im_end|>\n")
    lengths = authors_token_lengths(tok, "abc", ["xy"])
    assert lengths[0] == len(system + "<|im_start|>user\nabc<|im_end|>\n") + 1
    # the assistant-only render carries the default system prompt too (authors' quirk)
    assert lengths[1] == len(system + "<|im_start|>assistant\nxy<|im_end|>\n") + 1


def test_percentiles():
    p = length_filter.percentiles(range(1, 101))
    assert (p["n"], p["mean"], p["p50"], p["max"]) == (100, 50.5, 50.5, 100.0)
    assert length_filter.percentiles([]) == {"n": 0}
