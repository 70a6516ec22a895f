"""Smoke test of benchmarks 1-2 (``bench/``) at their ``--quick`` sizes: the printed
tables parse, our first-step losses agree with TRL's, the chunked log-probs match the
naive ones. About 40 s on 2 cores (every configuration is a fresh process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def run_bench(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of ``text`` as a list of {header: cell} rows."""
    out, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2:
            header, rows = block[0], block[2:]
            out.append([dict(zip(header, row, strict=True)) for row in rows])
        block = []
    return out


def find_table(text: str, column: str) -> list[dict[str, str]]:
    found = [t for t in tables(text) if t and column in t[0]]
    assert found, f"no table with column {column!r} in:\n{text}"
    return found[0]


def test_train_vs_trl_quick():
    out = run_bench("train_vs_trl.py", "--only", "sft_ours,sft_trl,dpo_ours,dpo_trl")
    configs = {r["config"]: r for r in find_table(out, "tokens/s all steps")}
    assert {"sft_ours", "sft_trl", "ref_ours", "dpo_ours", "dpo_trl"} <= set(configs)
    for row in configs.values():
        assert float(row["tokens/s"]) > 0
        assert float(row["peak RSS GiB"]) > 0
    comparisons = {r["comparison"].split(" (")[0]: r for r in find_table(out, "ratio tok/s")}
    for name in ("SFT", "DPO step"):
        row = comparisons[name]
        assert float(row["ratio tok/s"]) > 0 and float(row["ratio RSS"]) > 0
        ours, trl = float(row["ours loss 1"]), float(row["TRL loss 1"])
        assert ours == pytest.approx(trl, rel=1e-4), row
        assert row["loss agrees"] == "yes"
    assert float(comparisons["DPO step"]["ours loss 1"]) == pytest.approx(0.693147, abs=1e-5)
    assert "reference log-prob sums, ours vs TRL precompute" in out


@pytest.mark.parametrize("what", ["logps", "weighted"])
def test_logprob_memory_quick(what):
    out = run_bench("logprob_memory.py", "--what", what, "--tokens", "1024")
    (row,) = find_table(out, "chunked peak MiB")
    assert row["quantity"] == what and row["T"] == "1024"
    assert 0 < float(row["chunked peak MiB"]) < float(row["naive peak MiB"])
    assert float(row["ratio beyond the weight gradient"]) < float(row["ratio peak"])
    for key in ("max abs diff values", "max abs diff grad hidden", "max abs diff grad weight"):
        assert float(row[key]) <= 1e-4


def test_profile_step_quick():
    """The profile of step 2 of each objective: the LM head's matrix multiplies are found
    (the vocabulary as a dimension) and are a share of all matrix multiplies."""
    out = run_bench("profile_step.py")
    shares = [t for t in tables(out) if t and "share of self CPU time" in t[0]]
    assert len(shares) == 3  # sft, dpo, redi
    for table in shares:
        cells = {row["share of self CPU time"]: row for row in table}
        head = float(cells["LM-head matrix multiplies (vocabulary as a dimension)"]["%"])
        assert 0 < head <= float(cells["all matrix multiplies"]["%"]) < 100
    assert "== redi: step 2" in out and "== dpo: step 2" in out
