"""Table 3's arithmetic (redi.report.table3): device-hours, tokens/s per device, MFU, shares."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from redi.report import flops, table3

QWEN_1_5B = {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
             "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2}


def test_non_embedding_params_of_qwen_1_5b():
    # per layer: q 1536^2+1536, k/v 2 x (1536*256+256), o 1536^2, MLP 3*1536*8960, 2 norms
    per_layer = (1536 * 1536 + 1536) + 2 * (1536 * 256 + 256) + 1536 * 1536 \
        + 3 * 1536 * 8960 + 2 * 1536
    assert flops.non_embedding_params(QWEN_1_5B) == 28 * per_layer + 1536 == 1_310_340_608


def write_run(tmp_path, name, tokens, tokens_sq, seconds, world=8, device="NVIDIA A100-SXM4-80GB"):
    run = tmp_path / name
    ckpt = run / "checkpoints" / "step-000002"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps(QWEN_1_5B))
    pd.DataFrame({"step": [1, 2], "tokens": tokens, "tokens_sq": tokens_sq}).to_csv(
        run / "log.csv", index=False)
    (run / "manifest.json").write_text(json.dumps({
        "log": str(run / "log.csv"), "final_checkpoint": str(ckpt), "world_size": world,
        "provenance": {"device": {"type": "cuda", "name": device}}}))
    bench = tmp_path / f"{name}.tsv"
    bench.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t1.0\n")
    return {"manifest": str(run / "manifest.json"), "benchmark": str(bench)}


def test_stage_rows_by_hand(tmp_path):
    """Two DPO runs of 3,600 s and 5,400 s on 8 A100s sharing one 1,800 s reference job."""
    runs = [write_run(tmp_path, "dpo_a", [1e6, 1e6], [1e9, 1e9], 3600),
            write_run(tmp_path, "dpo_b", [2e6, 2e6], [2e9, 2e9], 5400)]
    ref = tmp_path / "ref.tsv"
    ref.write_text("s\th:m:s\n1800\t0:30:00\n")
    for run in runs:
        run["ref"] = str(ref)
    spec = {"stages": [{"label": "DPO", "paper": "dpo_1ep", "runs": runs,
                        "shared": {str(ref): 2}}]}
    paper = pd.DataFrame([{"stage": "dpo_1ep", "duration_hours": 5.17, "gpu_hours": 41.3,
                           "hardware": "8xA100-80GB"}])
    (row,) = table3.cost_table(spec, paper).to_dict("records")
    seconds = (3600 + 900 + 5400 + 900) / 2  # each run + half the reference job
    assert row["wall_h"] == pytest.approx(seconds / 3600) == pytest.approx(1.5)
    assert row["devices"] == 8 and row["device"] == "NVIDIA A100-SXM4-80GB"
    assert row["device_hours"] == pytest.approx(12.0)
    assert row["tokens"] == pytest.approx(3e6)
    assert row["tokens_per_s_per_device"] == pytest.approx(3e6 / 5400 / 8)
    n = 1_310_340_608
    flops = (6 * n * 2e6 + 6 * 28 * 1536 * 2e9 + 6 * n * 4e6 + 6 * 28 * 1536 * 4e9) / 2
    assert row["mfu"] == pytest.approx(flops / (5400 * 8 * 312e12))
    assert (row["paper_hours"], row["paper_gpu_hours"]) == (5.17, 41.3)


def test_cpu_runs_have_no_mfu(tmp_path):
    run = write_run(tmp_path, "sft", [100, 100], [5000, 5000], 60, world=1)
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    manifest["provenance"]["device"] = {"type": "cpu", "name": "x86_64"}
    (tmp_path / "sft" / "manifest.json").write_text(json.dumps(manifest))
    spec = {"stages": [{"label": "SFT 3 ep", "paper": "sft_3ep", "runs": [run]}]}
    (row,) = table3.cost_table(spec, pd.DataFrame(columns=["stage"])).to_dict("records")
    assert row["device"] == "CPU" and row["mfu"] is None and row["paper_hours"] is None
    assert row["device_hours"] == pytest.approx(60 / 3600)


def test_device_peaks():
    assert flops.device_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.device_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert flops.device_peak("Tesla T4") is None and flops.device_peak(None) is None
