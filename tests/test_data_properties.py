"""Property-based tests of the corpus filter (``hypothesis``): generated OpenR1-Math-Raw rows
with missing keys, wrong types, None, empty and huge strings, lone surrogates, and JSONL
files with non-UTF-8, invalid-JSON and non-object lines.

Properties: the filter never raises; the report accounts for every row read (kept + each
drop reason = rows read); a row an independent oracle calls bad never reaches the SFT set
or the pairs, and every output text is a non-empty trace of a good row, picked by the
authors' rule.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redi.data import filters, loading

# derandomized: the same examples on every run (CI never flakes on a new draw)
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FILES = settings(FAST, max_examples=60)

MISSING = object()  # the key is absent from the row
LABEL_KEYS = ("llama_verification", "math_verify_reparsed_answer")

huge = st.integers(100_000, 1_500_000).map(lambda n: "<think>\n" + "9" * n + "\n</think>")
surrogate = st.sampled_from(["\ud800", "a\udfffb", "\ud83d"])  # lone: not encodable
traces = st.sampled_from(["<think>\nx\n</think> \\boxed{2}", "<think>\ny\n</think> 3",
                          "Wait. \\boxed{2}"])


@st.composite
def texts(draw, plain: int = 6) -> str:
    """Mostly (``plain`` in ``plain`` + 5) plain traces; else empty, blank, any Unicode, a
    lone surrogate or ~1 MB."""
    kind = draw(st.sampled_from(["trace"] * plain + ["empty", "blank", "any", "surrogate",
                                                     "huge"]))
    return draw({"trace": traces, "empty": st.just(""), "blank": st.sampled_from([" ", "\n\t"]),
                 "any": st.text(max_size=30), "surrogate": surrogate, "huge": huge}[kind])


junk = st.one_of(st.just(MISSING), st.none(), st.integers(-2, 2), st.booleans(),
                 st.floats(allow_nan=False), st.lists(st.integers(0, 1), max_size=2),
                 st.lists(st.none(), max_size=2), st.just([]), st.dictionaries(st.text(max_size=3),
                                                                 st.integers(), max_size=2),
                 texts(), st.sampled_from(["yes", "[true, false]"]))
label = st.sampled_from([True, True, True, False, None])
FIELDS = ("problem_is_valid", "source", "problem", "generations", "generations[0]",
          "correctness", "correctness.llama_verification",
          "correctness.math_verify_reparsed_answer", "llama_verification[0]",
          "math_verify_reparsed_answer[0]", "answer", "uuid")


def corrupt(row: dict[str, Any], field: str, value: Any) -> None:
    """Put ``value`` (MISSING: delete) at ``field`` of a well-formed row."""
    c = row["correctness"]
    if field.endswith("[0]"):
        items = row["generations"] if field == "generations[0]" else c.get(field[:-3])
        if isinstance(items, list) and items:  # MISSING: the item is gone (lists shorten)
            items[0:1] = [] if value is MISSING else [value]
    elif field.startswith("correctness."):
        c[field.split(".")[1]] = value
    else:
        row[field] = value
    for d in (row, c):
        for key in [k for k, v in d.items() if v is MISSING]:
            del d[key]


@st.composite
def raw_rows(draw, clean: bool = False) -> dict[str, Any]:
    """A well-formed row, then (unless ``clean``) up to three fields made absent, None or of
    another type, or a label list of the wrong length."""
    n = draw(st.integers(1, 4))
    row = {
        "problem_is_valid": draw(st.sampled_from(["Yes"] * 6 + [" yes", "YES ", "No"])),
        "source": draw(st.sampled_from(["olympiads"] * 6 + ["amc_aime", "cn_k12"])),
        "problem": draw(texts(plain=30)),
        "generations": draw(st.lists(texts(), min_size=n, max_size=n)),
        "correctness": {key: draw(st.lists(label, min_size=n, max_size=n))
                        for key in (*LABEL_KEYS, "math_verify_answer")},
        "answer": draw(st.sampled_from(["2", "", None])),
        "uuid": "u",
    }
    if clean:
        return row
    if not draw(st.integers(0, 4)):  # a label list one too long or too short
        key = draw(st.sampled_from(LABEL_KEYS))
        row["correctness"][key] = row["correctness"][key][:-1] if draw(st.booleans()) else [
            *row["correctness"][key], True]
    for field, value in draw(st.lists(st.tuples(st.sampled_from(FIELDS), junk), max_size=3)):
        if field in ("problem", "generations[0]") and isinstance(value, str):
            continue  # a text there is a well-formed value
        if isinstance(row.get("correctness"), dict) and isinstance(row.get("generations"), list):
            corrupt(row, field, value)
    return row


# ------------------------------------------------------------------ the oracle


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_good(row: Any) -> bool:
    """An independent statement of what a usable OpenR1-Math-Raw row is."""
    if not isinstance(row, dict):
        return False
    valid, problem, gens = row.get("problem_is_valid"), row.get("problem"), row.get("generations")
    if not (isinstance(valid, str) and valid.strip().lower() == "yes"):
        return False
    if row.get("source") == "cn_k12" or not (isinstance(problem, str) and problem.strip()):
        return False
    if not (isinstance(gens, list) and gens and all(isinstance(g, str) for g in gens)):
        return False
    c = row.get("correctness")
    if not isinstance(c, dict):
        return False
    for key in LABEL_KEYS:
        lab = c.get(key)
        if not (isinstance(lab, list) and len(lab) == len(gens)
                and all(v is None or type(v) is bool for v in lab)):
            return False
    carried = [row.get(k) for k in ("answer", "source", "uuid")]
    if not all(v is None or isinstance(v, str) for v in carried):
        return False
    return all(encodable(t) for t in [problem, *gens, *(v for v in carried if v)])


def flags(row: dict[str, Any]) -> list[bool]:
    c = row["correctness"]
    return [a is True and b is True for a, b in zip(*(c[k] for k in LABEL_KEYS), strict=True)]


def check_sets(rows: list[Any], sft: list[dict], pairs: list[dict], report: dict) -> None:
    """The properties, for rows indexed by position (``original_index``)."""
    counts, dropped = report["counts"], report["dropped"]
    good = {i for i, r in enumerate(rows) if is_good(r)}
    assert counts["rows_in"] == len(rows) == counts["rows_kept"] + sum(dropped.values())
    assert counts["rows_kept"] == len(good)
    assert counts["rows_kept"] == (counts["problems_without_correct"]
                                   + counts["problems_all_correct"]
                                   + counts["problems_correct_and_incorrect"])
    assert set(dropped) == set(filters.DROP_REASONS)
    for s in sft:
        r = rows[s["original_index"]]
        assert s["original_index"] in good and s["problem"] == r["problem"]
        usable = [i for i, g in enumerate(r["generations"]) if g.strip()]
        assert s["chosen_gen_idx"] == next(i for i in usable if flags(r)[i])
        assert s["response"] == r["generations"][s["chosen_gen_idx"]] and s["response"].strip()
    for p in pairs:
        r = rows[p["original_index"]]
        assert p["original_index"] in good
        assert flags(r)[p["chosen_gen_idx"]] and not flags(r)[p["rejected_gen_idx"]]
        assert p["chosen"].strip() and p["rejected"].strip()
    assert len({s["original_index"] for s in sft}) == len(sft) == len(good) - counts[
        "problems_without_correct"]
    assert len(pairs) == counts["problems_correct_and_incorrect"]
    assert counts["pairs_identical"] == sum(p["chosen"] == p["rejected"] for p in pairs)


@FAST
@given(st.lists(raw_rows(), max_size=12))
def test_filter_never_raises_and_accounts_for_every_row(rows):
    indexed = [{**r, "original_index": i} for i, r in enumerate(rows)]
    sft, pairs, report = filters.build_sets(indexed)
    check_sets(indexed, sft, pairs, report)
    json.dumps(report, allow_nan=False)  # the report is writable as is


@FAST
@given(st.lists(st.one_of(raw_rows(), junk.filter(lambda v: v is not MISSING)), max_size=8))
def test_any_json_value_as_a_row_is_counted(rows):
    indexed = [{**r, "original_index": i} if isinstance(r, dict) else r
               for i, r in enumerate(rows)]
    sft, pairs, report = filters.build_sets(indexed)
    check_sets(indexed, sft, pairs, report)
    assert report["dropped"]["line_not_object"] == sum(not isinstance(r, dict) for r in rows)


# ------------------------------------------------------------------ JSONL files

bad_lines = st.one_of(
    st.binary(min_size=1, max_size=20).map(lambda b: b.replace(b"\n", b"")).filter(
        lambda b: b.strip()),                                    # random bytes
    st.just(json.dumps({"problem": "é"}, ensure_ascii=False).encode("latin-1")),  # not UTF-8
    st.sampled_from([b"{", b"{'problem': 1}", b"NaN NaN", b"[" * 5000]),          # not JSON
    st.sampled_from([b"[1, 2]", b"3", b'"row"', b"null", b"true"]),             # not objects
    st.just(b"   "),                                                            # blank
)
LINES = {"row": raw_rows().map(lambda r: json.dumps(r).encode()),
         "clean": raw_rows(clean=True).map(lambda r: json.dumps(r).encode()), "bad": bad_lines}
line = st.sampled_from(["row", "row", "clean", "clean", "bad"]).flatmap(LINES.__getitem__)


def parsed(raw: bytes) -> Any:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@FILES
@given(st.lists(line, min_size=1, max_size=10))
def test_any_jsonl_file_is_read_or_refused_naming_it(tmp_path_factory, lines):
    tmp = tmp_path_factory.mktemp("jsonl")
    raw = tmp / "raw.jsonl"
    raw.write_bytes(b"\n".join(lines) + b"\n")
    rows = [parsed(b) if parsed(b) is not None else b for b in lines if b.strip()]
    columns = {k for r in rows if isinstance(r, dict) for k in r}
    try:
        corpus = loading.load_raw(str(raw))
    except loading.RawDataError as e:  # only an unreadable file: no object, or a column nowhere
        assert repr(str(raw)) in str(e)
        assert not columns or not set(loading.REQUIRED_COLUMNS) <= columns
        return
    assert rows and set(loading.REQUIRED_COLUMNS) <= columns
    shuffled = list(loading.shuffled_rows(corpus, 42))
    assert len(shuffled) == len(rows)
    indexed = [{**r, "original_index": i} if isinstance(r, dict) else r
               for i, r in enumerate(rows)]
    sft, pairs, report = filters.build_sets(shuffled)
    check_sets(indexed, sft, pairs, report)
    n_lines = sum(report["dropped"][r] for r in loading.LINE_REASONS)
    assert n_lines == sum(not isinstance(r, dict) for r in rows)
    run_and_check(tmp, raw, report, sft, pairs)


def run_and_check(tmp, raw, report: dict, sft: list, pairs: list) -> None:
    """run_filter: the sets written as parquet, or a stop with the report written."""
    outs = [str(tmp / name) for name in ("sft.parquet", "pairs.parquet", "filter.json")]
    try:
        filters.run_filter(str(raw), {"shuffle_seed": 42}, *outs)
    except loading.UnusableCorpusError:
        assert not sft or not pairs
        written = json.loads((tmp / "report.json").read_text())
        assert written["status"] == "failed" and written["filter"]["counts"] == report["counts"]
        return
    assert sft and pairs
    written = pd.read_parquet(outs[0])
    assert written["original_index"].tolist() == [s["original_index"] for s in sft]
    assert pd.read_parquet(outs[1])["rejected"].tolist() == [p["rejected"] for p in pairs]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_good_row_among_bad_ones_is_kept_whatever_the_order(tmp_path, seed):
    good = {"problem_is_valid": "Yes", "source": "olympiads", "problem": "1+1?",
            "generations": ["a", "b"],
            "correctness": {"llama_verification": [True, False],
                            "math_verify_reparsed_answer": [True, True]}}
    lines = [json.dumps(good).encode(), b"\xff", b"{", b"[]", json.dumps({**good, "problem": 1})
             .encode()]
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(b"\n".join(lines))  # no final newline
    sft, pairs, report = filters.build_sets(loading.shuffled_rows(loading.load_raw(str(raw)), seed))
    assert [(s["original_index"], s["response"]) for s in sft] == [(0, "a")]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "b")]
    assert {k: v for k, v in report["dropped"].items() if v} == {
        "line_not_utf8": 1, "line_invalid_json": 1, "line_not_object": 1, "problem_not_str": 1}
