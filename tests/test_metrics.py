"""pass@1, SEM, pass@k and the Avg SEM: hand-computed values and the paper's tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from redi.eval.metrics import average_sem, pass_at_k, summarize, wait_count

# 3 problems x 4 samples; per-sample accuracies P_j = [2/3, 1/3, 0, 0]
MATRIX = [[1, 1, 0, 0],
          [1, 0, 0, 0],
          [0, 0, 0, 0]]


def test_summarize_hand_computed() -> None:
    out = summarize(MATRIX, ks=(1, 2, 4))
    assert out["pass@1"] == pytest.approx(3 / 12)
    # P_j - mean = [5/12, 1/12, -3/12, -3/12]; var = (25+1+9+9)/144/4 = 44/576
    assert out["pass@1_sem"] == pytest.approx(math.sqrt(44 / 576) / 2)
    assert out["pass@1_sem"] == pytest.approx(0.1381927, abs=1e-7)
    # pass@2: 1 - C(2,2)/C(4,2) = 5/6, 1 - C(3,2)/C(4,2) = 1/2, 0
    assert out["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 0) / 3)
    assert out["pass@4"] == pytest.approx(2 / 3)  # at least one of 4 correct
    assert set(out) == {"pass@1", "pass@1_sem", "pass@2", "pass@4"}


def test_pass_at_k_matches_enumeration() -> None:
    """The estimator equals the share of k-subsets holding a correct sample."""
    for n, c, k in [(16, 0, 1), (16, 3, 4), (16, 15, 2), (10, 4, 10), (8, 8, 3), (16, 1, 16)]:
        samples = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(samples, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass1_is_mean_and_pass16_any_correct() -> None:
    rng = np.random.default_rng(0)
    s = rng.random((83, 16)) < rng.random((83, 1))  # per-problem difficulty
    out = summarize(s)
    assert out["pass@1"] == pytest.approx(s.mean())
    assert out["pass@16"] == pytest.approx(s.any(axis=1).mean())
    per_sample = s.mean(axis=0)
    assert out["pass@1_sem"] == pytest.approx(per_sample.std(ddof=0) / 4)
    assert out["pass@1_sem"] != pytest.approx(per_sample.std(ddof=1) / 4)  # ddof 0, as rllm
    assert 0.0 <= out["pass@1"] <= 1.0 and 0.0 <= out["pass@16"] <= 1.0


def test_summarize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        summarize([[1, 0]], ks=(1, 4))  # k > samples
    with pytest.raises(ValueError):
        summarize([1, 0, 1])  # not [problems, samples]
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


# Table 1 and Table 2 rows: per-benchmark SEMs (percent) -> the printed Avg SEM
PAPER_SEMS = {
    "T2 REDI a0.8": ([0.2, 1.4, 0.8, 0.5, 0.3], 0.3),
    "T2 SFT-3ep": ([0.3, 1.1, 0.6, 0.5, 0.3], 0.3),
    "T2 DPO": ([0.2, 1.7, 0.6, 0.4, 0.3], 0.4),
    "T2 SimPO": ([0.3, 1.9, 0.6, 0.2, 0.3], 0.4),
    "T2 Sym. REDI": ([0.2, 1.3, 1.1, 0.4, 0.2], 0.4),
    "T1 R1-Distill": ([0.2, 1.0, 0.8, 0.4, 0.3], 0.3),
    "T1 SFT-5ep": ([0.3, 1.1, 0.6, 0.4, 0.3], 0.3),
    "T1 REDI": ([0.3, 1.1, 0.6, 0.3, 0.2], 0.3),
}


@pytest.mark.parametrize("row", sorted(PAPER_SEMS))
def test_average_sem_reproduces_the_paper(row: str) -> None:
    sems, printed = PAPER_SEMS[row]
    assert round(average_sem(sems), 1) == printed


def test_average_sem_hand_computed() -> None:
    assert average_sem([0.2, 1.4, 0.8, 0.5, 0.3]) == pytest.approx(math.sqrt(2.98) / 5)
    assert average_sem([3.0, 4.0]) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        average_sem([])


def test_wait_count_is_the_capitalised_word() -> None:
    text = "Wait, let me check. wait no. Waiting... Wait. (Wait)"
    assert wait_count(text) == 3
