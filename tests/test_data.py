"""The authors' filters, the dual-verifier rule, pairing and the length filter."""

from __future__ import annotations

import json

import pytest

from redi import data
from redi.prompts import QWEN_MATH_CHAT_TEMPLATE, authors_token_lengths


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
        ({"problem_is_valid": None}, "problem_is_valid_not_yes"),
        ({"problem_is_valid": "No", "source": "cn_k12"}, "problem_is_valid_not_yes"),
        ({"source": "cn_k12"}, "source_cn_k12"),
        ({"problem": ""}, "empty_problem"),
        ({"problem": "   "}, "empty_problem"),
        ({"generations": [], "correctness": labels([], [])}, "no_generations"),
        ({"generations": None}, "no_generations"),
        ({"correctness": None}, "correctness_missing"),
        ({"correctness": labels([True], [True, False])}, "length_mismatch_llama_verification"),
        ({"correctness": labels([True, False], [True])},
         "length_mismatch_math_verify_reparsed_answer"),
        # math_verify_answer is not used by the rule: its length does not matter
        ({"correctness": {**labels([True, False], [True, False]), "math_verify_answer": [1]}},
         None),
    ],
)
def test_drop_reason(over, reason):
    assert data.drop_reason(row(**over)) == reason


def test_dual_verifier_rule_none_is_false():
    r = row(generations=["a", "b", "c", "d", "e"],
            correctness=labels([True, True, False, None, True], [True, False, True, True, None]))
    assert data.correct_flags(r) == [True, False, False, False, False]


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
    sft, pairs, report = data.build_sets(rows)
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


def test_bad_label_type_is_an_error_naming_the_row():
    rows = _index([row(correctness=labels(["yes", True], [True, False]))])
    with pytest.raises(data.RawDataError, match="original_index=0.*llama_verification"):
        data.build_sets(rows)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"problem": "x", "generations": ["a"]}) + "\n")
    with pytest.raises(data.RawDataError, match="correctness"):
        data.load_raw(str(path))


def test_keep_by_length_boundaries():
    assert data.keep_by_length((800, 19000, 19000), 800, 19000)
    assert not data.keep_by_length((801, 10, 10), 800, 19000)
    assert not data.keep_by_length((10, 19001, 10), 800, 19000)
    assert not data.keep_by_length((10, 10, 19001), 800, 19000)


class CharTokenizer:
    """One token per character; the chat template as the tiny preset's."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        import jinja2

        text = jinja2.Template(QWEN_MATH_CHAT_TEMPLATE).render(
            messages=messages, add_generation_prompt=add_generation_prompt)
        return list(text) if tokenize else text


def test_authors_lengths_render_separately_with_system_prompt_and_eos():
    tok = CharTokenizer()
    system = ("<|im_start|>system\nPlease reason step by step, and put your final answer "
              "within \\boxed{}.<|im_end|>\n")
    lengths = authors_token_lengths(tok, "abc", ["xy"])
    assert lengths[0] == len(system + "<|im_start|>user\nabc<|im_end|>\n") + 1
    # the assistant-only render carries the default system prompt too (authors' quirk)
    assert lengths[1] == len(system + "<|im_start|>assistant\nxy<|im_end|>\n") + 1


def test_percentiles():
    p = data.percentiles(range(1, 101))
    assert (p["n"], p["mean"], p["p50"], p["max"]) == (100, 50.5, 50.5, 100.0)
    assert data.percentiles([]) == {"n": 0}
