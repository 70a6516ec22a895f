"""GPQA multiple choice: LightEval's prompt, per-question seeded option order, answer-letter
extraction, and the local-file loader."""

from __future__ import annotations

import csv
import json

import pytest

from redi.eval import multiple_choice as mc

ROW = {"Record ID": "rec1", "Question": "Which gas do plants absorb for photosynthesis?",
       "Correct Answer": "Carbon dioxide", "Incorrect Answer 1": "Oxygen",
       "Incorrect Answer 2": "Nitrogen", "Incorrect Answer 3": "Helium"}


def rows(n: int) -> list[dict[str, str]]:
    return [{**ROW, "Record ID": f"rec{i}", "Question": f"Question number {i}?"}
            for i in range(n)]


# (response, letter with Open-R1's anchored patterns, letter with LightEval's anchorless ones)
CASES = [
    ("Let me think... so the answer is C", "C", "C"),  # answer at the end
    ("Reasoning first.\nAnswer: C", "C", "C"),
    ("**Answer:** D", "D", "D"),
    ("Answer: (B)", "B", "B"),
    ("The final answer is A. I hope it is correct.", "A", "A"),
    ("B", "B", "B"),  # the response is just the letter
    ("Hmm.\nC. Because of entropy.", "C", "C"),  # a line starting with the letter
    ("Answer: \\boxed{C}", None, "C"),  # a boxed letter is not a word: anchorless only
    ("\\boxed{D}", None, "D"),
    ("Answer:C", None, "C"),  # no space after the colon
    ("Answer: A. Wait, that is wrong. Answer: D", "D", "D"),  # several: the last one
    ("Answer: A, B", "A", "A"),  # one match consumes "A,": the lazy gap stops at A
    ("It is A or B, I cannot decide.", None, "B"),  # no anchor: the last letter-word
    ("I am not sure.", None, None),  # none
    ("The answer is E", None, None),  # not an option
]


@pytest.mark.parametrize(("response", "anchored", "anchorless"), CASES)
def test_answer_letter_extraction(response, anchored, anchorless):
    assert mc.extract_letter(response) == anchored
    assert mc.extract_letter(response, anchorless=True) == anchorless


def test_fewer_choices_limit_the_letters():
    assert mc.extract_letter("Answer: D", n_choices=3) is None
    assert mc.extract_letter("Answer: C", n_choices=3) == "C"


def test_prompt_text_for_a_toy_question():
    prompt = mc.format_prompt("What is 2+2?", ["3", "4", "5", "22"])
    assert prompt == (
        "Answer the following multiple choice question. The last line of your response should "
        "be of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of "
        "ABCD. Think step by step before answering.\n\nWhat is 2+2?\n\nA) 3\nB) 4\nC) 5\nD) 22")
    with pytest.raises(ValueError, match="4 options, got 3"):
        mc.format_prompt("q", ["a", "b", "c"])


def test_shuffle_is_seeded_per_question():
    choices, gold = mc.shuffle_choices(ROW)
    assert (choices, gold) == mc.shuffle_choices(dict(ROW))  # same question, same order
    assert choices[gold] == "Carbon dioxide"
    # LightEval's rule: the incorrect answers keep their order around the inserted gold
    assert [c for i, c in enumerate(choices) if i != gold] == ["Oxygen", "Nitrogen", "Helium"]
    golds = [mc.shuffle_choices(r)[1] for r in rows(40)]
    assert set(golds) == {0, 1, 2, 3}  # the gold position varies across questions
    assert golds != [mc.shuffle_choices(r, seed=7)[1] for r in rows(40)]  # and with the seed


def test_items_do_not_depend_on_row_order():
    forward = {item.id: item for item in mc.build_items(rows(12), "f.jsonl")}
    backward = {item.id: item for item in mc.build_items(rows(12)[::-1], "f.jsonl")}
    assert forward == backward
    item = forward["rec3"]
    assert item.choices[item.gold_index] == "Carbon dioxide"
    assert item.gold_letter == "ABCD"[item.gold_index]
    assert item.prompt == mc.format_prompt("Question number 3?", item.choices)


def test_grade_matrix():
    item = mc.build_items([ROW])[0]
    wrong = "ABCD"[(item.gold_index + 1) % 4]
    responses = [[f"Answer: {item.gold_letter}", f"Answer: {wrong}", "no idea"]]
    assert mc.grade([item], responses).tolist() == [[True, False, False]]
    with pytest.raises(ValueError, match="same number"):
        mc.grade([item, item], [["a"], []])


def write(path, data, kind):
    if kind == "json":
        path.write_text(json.dumps(data))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv"])
def test_local_files_in_the_hub_schema(tmp_path, kind):
    path = tmp_path / f"gpqa.{kind}"
    write(path, rows(5), kind)
    loaded = mc.load_rows(path)
    assert [r["Question"] for r in loaded] == [r["Question"] for r in rows(5)]
    assert mc.build_items(loaded, str(path)) == mc.build_items(rows(5), str(path))


def test_bad_local_files_are_named(tmp_path):
    csv_path = tmp_path / "bad.csv"
    write(csv_path, [{k: v for k, v in ROW.items() if k != "Incorrect Answer 2"}], "csv")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['Incorrect Answer 2'\]"):
        mc.load_local(csv_path)
    jsonl = tmp_path / "bad.jsonl"
    write(jsonl, [ROW, {k: v for k, v in ROW.items() if k != "Correct Answer"}], "jsonl")
    with pytest.raises(ValueError, match=r"bad\.jsonl: row 1: missing column 'Correct Answer'"):
        mc.load_local(jsonl)
    empty = tmp_path / "empty_value.json"
    write(empty, [{**ROW, "Question": "  "}], "json")
    with pytest.raises(ValueError, match=r"empty_value\.json: row 0: column 'Question' must be"):
        mc.load_local(empty)
    number = tmp_path / "number.json"
    write(number, [{**ROW, "Correct Answer": 5}], "json")
    with pytest.raises(ValueError, match="column 'Correct Answer' must be a non-empty string"):
        mc.load_local(number)
    not_array = tmp_path / "object.json"
    not_array.write_text(json.dumps(ROW))
    with pytest.raises(ValueError, match="expected a JSON array of objects, got dict"):
        mc.load_local(not_array)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(ROW) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        mc.load_local(broken)
    with pytest.raises(ValueError, match="unsupported extension '.txt'"):
        (tmp_path / "q.txt").write_text("x")
        mc.load_local(tmp_path / "q.txt")
    with pytest.raises(FileNotFoundError, match="multiple-choice file not found"):
        mc.load_rows(tmp_path / "missing.json")
