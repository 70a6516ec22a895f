"""Training FLOPs and devices' peaks: the MFU of Table 3, the cost plan's model sizes and
the GPU check's, one formula (no pandas: the Snakefile and the GPU check import it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# dense bf16 peak FLOP/s per device (NVIDIA data sheets, SXM); CPUs: unknown
PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}


def non_embedding_params(config: Mapping[str, Any]) -> int:
    """Parameters of a Llama/Qwen2-style decoder without the (tied) embedding: q/k/v
    (with bias for Qwen2), o, the SwiGLU MLP, two norms per layer, the final norm."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    bias = config.get("model_type") == "qwen2"
    attn = (h * heads * head_dim + (heads * head_dim if bias else 0)) \
        + 2 * (h * kv + (kv if bias else 0)) + heads * head_dim * h
    per_layer = attn + 3 * h * config["intermediate_size"] + 2 * h
    return layers * per_layer + h


def training_flops(n_params: int, tokens: float, tokens_sq: float, layers: int,
                   hidden: int) -> float:
    """Model FLOPs of training (the MFU numerator): ``6 N T`` plus causal attention,
    ``6 * 2 * L * s^2 * H / 2`` per sequence of length s (fwd + bwd, QK^T and AV)."""
    return 6.0 * n_params * tokens + 6.0 * layers * hidden * tokens_sq


def device_peak(name: str | None) -> float | None:
    """The bf16 peak of a device named like torch reports it (e.g. 'NVIDIA H100 80GB')."""
    for key, peak in PEAK_FLOPS.items():
        if name and key in name:
            return peak
    return None
