"""A final-evaluation summary as the tables read it."""

from __future__ import annotations


def summary(label: str, model: dict, scores: dict[str, tuple[float, float, float]],
            grader: str = "strict", n_samples: int = 16) -> dict:
    """A final-evaluation summary.json; scores: name -> (pass@1, SEM, pass@16), fractions."""
    return {
        "label": label,
        "model": model,
        "grader": grader,
        "benchmarks": {
            name: {"label": name, "n_problems": 40, "n_samples": n_samples, "pass@1": p1,
                   "pass@1_sem": sem, "pass@16": p16}
            for name, (p1, sem, p16) in scores.items()
        },
    }
