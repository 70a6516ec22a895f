"""Re-grading the corpus' Math-Verify labels with our grader (the label-check job)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from redi.data.filters import generations_reason
from redi.data.loading import load_raw, shuffled_rows


def verify_agreement(rows: list[dict[str, Any]], grades_reparsed, grades_strict) -> dict[str, Any]:
    """Confusion counts of our Math-Verify re-run vs the corpus labels."""
    label_keys = ("math_verify_reparsed_answer",)
    out: dict[str, Any] = {}
    for name, grades in (("reparsed_answer", grades_reparsed), ("strict_generation", grades_strict)):
        table: Counter[str] = Counter()
        k = 0
        for row in rows:
            labels = row["correctness"][label_keys[0]]
            for i in range(len(row["generations"])):
                label = labels[i] if i < len(labels) else None
                table[f"label_{label}_ours_{grades[k].correct}"] += 1
                table["timed_out"] += grades[k].timed_out
                k += 1
        known = sum(v for key, v in table.items() if key.startswith("label_T")
                    or key.startswith("label_F"))
        agree = table["label_True_ours_True"] + table["label_False_ours_False"]
        out[name] = {"counts": dict(sorted(table.items())),
                     "agreement": round(agree / known, 4) if known else None}
    return out


def _verifiable(row: Any) -> bool:
    """Rows whose generations and Math-Verify labels can be re-graded."""
    if not isinstance(row, dict) or generations_reason(row) is not None:
        return False
    correctness = row.get("correctness")
    return isinstance(correctness, dict) and isinstance(
        correctness.get("math_verify_reparsed_answer"), list)


def run_verify(raw_source: str, params: dict[str, Any], out: str, workers: int) -> dict[str, Any]:
    """Re-grade every generation of the structurally valid rows with Math-Verify."""
    from redi.grading import Grader
    from redi.io import write_json

    corpus = load_raw(raw_source)
    rows = [r for r in shuffled_rows(corpus, 0) if _verifiable(r)]
    golds, reparsed, generations, skipped = [], [], [], 0
    usable = []
    for row in rows:
        if not isinstance(row.get("answer"), str) or not row["answer"]:
            skipped += 1
            continue
        usable.append(row)
        answers = row.get("reparsed_answers")
        answers = answers if isinstance(answers, list) else []
        for i, gen in enumerate(row["generations"]):
            golds.append(row["answer"])
            ans = answers[i] if i < len(answers) and isinstance(answers[i], str) else ""
            reparsed.append(f"$\\boxed{{{ans}}}$" if ans else "")
            generations.append(gen)
    with Grader(workers=workers, timeout_s=params["timeout_s"]) as grader:
        g_reparsed = grader.grade_many(reparsed, golds, "math_verify")
        g_strict = grader.grade_many(generations, golds, "strict")
    report = {
        "params": params,
        "rows_checked": len(usable),
        "rows_without_gold_answer": skipped,
        "generations_checked": len(generations),
        **verify_agreement(usable, g_reparsed, g_strict),
        "note": "reparsed_answer = Math-Verify(gold, reparsed_answers[i]) -- the definition of "
                "the corpus label; strict_generation = our strict grader on the generation",
    }
    write_json(out, report)
    return report
