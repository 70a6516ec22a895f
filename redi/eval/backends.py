"""The generation backends by name: ``hf`` (``redi.eval.generation``, transformers) and
``vllm`` (``redi.eval.vllm_engine``). Apart from both, so that neither imports the other."""

from __future__ import annotations

from typing import Any

from redi.eval.generation import Backend, HFBackend, Sampling
from redi.eval.vllm_engine import VLLMBackend

BACKENDS: dict[str, type[Backend]] = {"hf": HFBackend, "vllm": VLLMBackend}


def make_backend(name: str, sampling: Sampling, **options: Any) -> Backend:
    """``hf`` (options: batch_size, threads, fast) or ``vllm`` (gpus, cpu_engines, threads,
    max_model_len, ...)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[name](sampling=sampling, **options)
