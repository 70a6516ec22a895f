"""Benchmark metrics from a 0/1 score matrix [problems, samples].

pass@1 is the mean of the matrix; its SEM is the paper's (appendix C.5, rllm
``main_generation.py``): the population std (ddof 0) of the k per-sample-index
benchmark accuracies P_j, divided by sqrt(k). pass@k uses the unbiased
estimator of Chen et al. (2021), averaged over problems. The table's Avg SEM
is sqrt(sum SEM_b^2) / B (it reproduces every row of the paper's Tables 1-2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

# the reflection marker counted for Figure 8 (paper appendix E.1: "Wait")
WAIT_PATTERN = re.compile(r"\bWait\b")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    # the product form avoids huge binomials: prod_{i=n-c+1}^{n} (1 - k/i)
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def summarize(correct: Sequence | np.ndarray, ks: Iterable[int] = (1, 16)) -> dict[str, float]:
    """pass@1, its SEM and pass@k for a boolean matrix [problems, samples].

    Keys: ``"pass@1"``, ``"pass@1_sem"`` and ``"pass@{k}"`` for each k (fractions
    in [0, 1]); a k larger than the number of samples is an error.
    """
    s = np.asarray(correct, dtype=bool)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"expected a non-empty [problems, samples] matrix, got shape {s.shape}")
    n = s.shape[1]
    per_sample = s.mean(axis=0)  # P_j: benchmark accuracy using only sample j
    out = {
        "pass@1": float(s.mean()),
        "pass@1_sem": float(per_sample.std(ddof=0) / math.sqrt(n)),
    }
    counts = s.sum(axis=1)
    for k in ks:
        if k > n:
            raise ValueError(f"pass@{k} needs at least {k} samples per problem, have {n}")
        out[f"pass@{k}"] = float(np.mean([pass_at_k(n, int(c), k) for c in counts]))
    return out


def average_sem(sems: Sequence[float]) -> float:
    """SEM of the unweighted mean of independent benchmark scores: sqrt(sum sem^2) / B."""
    if len(sems) == 0:
        raise ValueError("no SEMs to average")
    return math.sqrt(sum(float(x) ** 2 for x in sems)) / len(sems)


def relative_improvement(value: float, reference: float) -> float:
    """``(value - reference) / reference`` in percent; NaN where the reference is 0."""
    if reference == 0:
        return math.nan
    return 100.0 * (value - reference) / reference


def wait_count(text: str) -> int:
    """Occurrences of the word "Wait" (case-sensitive, as the paper quotes it)."""
    return len(WAIT_PATTERN.findall(text))
