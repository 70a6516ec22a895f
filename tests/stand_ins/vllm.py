"""Test stand-in for ``vllm`` (0.33) on GPUs: the classes the project uses, with the
real signatures and the checks the real engine makes, and no GPU. It tests what a CPU
machine cannot run on the real engine: several GPU engines' device assignment
(tests/test_vllm_engine.py runs the real CPU engine).

Put this folder on ``PYTHONPATH`` (spawned engine processes import it too).
What vLLM 0.33 does and this stand-in mirrors (shared/notes/cluster-on-cpu.md):

* unknown keyword arguments to ``LLM`` / ``SamplingParams`` raise ``TypeError``;
* ``max_model_len`` above the model's ``max_position_embeddings`` raises ``ValueError``;
* ``SamplingParams(temperature=0, n>1)`` raises "n must be 1 when using greedy sampling";
* ``generate`` takes one SamplingParams or a list (one per prompt) and returns
  outputs in request order; with ``n > 1`` and ``seed=s`` the i-th sample uses ``s + i``.

Instead of a model, a completion is drawn from ``random.Random(seed + i)`` and the
prompt ids: the same (prompt, seed) always gives the same text, whatever the
engine, batch or GPU, which is exactly what the project relies on. Texts look
like a reasoning trace with a boxed integer answer, so grading runs for real.
When ``VLLM_STAND_IN_LOG`` names a file, every engine appends one JSON line
(engine arguments, visible GPU, number of requests) to it.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop_token_ids: list[int] = field(default_factory=list)
    skip_special_tokens: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 1e-5 and self.n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got n={self.n}")


def _max_positions(model: str) -> int | None:
    config = Path(model) / "config.json"
    if not config.exists():
        return None
    return json.loads(config.read_text()).get("max_position_embeddings")


class LLM:
    def __init__(self, model: str, tokenizer: str | None = None, seed: int = 0,
                 dtype: str = "auto", gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, enforce_eager: bool = False) -> None:
        own = _max_positions(model)
        if max_model_len is not None and own is not None and max_model_len > own:
            raise ValueError(f"User-specified max_model_len ({max_model_len}) is greater than "
                             f"the derived max_model_len (max_position_embeddings={own})")
        self.args = {"model": model, "tokenizer": tokenizer, "seed": seed, "dtype": dtype,
                     "gpu_memory_utilization": gpu_memory_utilization,
                     "max_model_len": max_model_len, "enforce_eager": enforce_eager}
        self.seed = seed
        # what the job must call: the engine-core process ends only on shutdown()
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self._shutdown))
        self.shut_down = False

    def _shutdown(self, timeout: float | None = None) -> None:
        self.shut_down = True
        self._log_event("shutdown")

    def generate(self, prompts, sampling_params=None, use_tqdm: bool = True):
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = (sampling_params if isinstance(sampling_params, list)
                  else [sampling_params] * len(prompts))
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        limit = self.args["max_model_len"] or _max_positions(self.args["model"])
        for p, sp in zip(prompts, params, strict=True):  # what the engine can hold
            if limit and len(p["prompt_token_ids"]) + (sp.max_tokens or 0) > limit:
                raise ValueError(f"prompt + max_tokens exceeds max_model_len {limit}")
        self._log(len(prompts))
        return [SimpleNamespace(outputs=[self._sample(p["prompt_token_ids"], sp, i)
                                         for i in range(sp.n)])
                for p, sp in zip(prompts, params, strict=True)]

    def _sample(self, ids: list[int], sp: SamplingParams, i: int) -> SimpleNamespace:
        seed = (sp.seed if sp.seed is not None else self.seed) + i
        rng = random.Random(f"{seed}/{','.join(map(str, ids))}")
        if sp.temperature < 1e-5:  # greedy: one answer per prompt
            rng = random.Random(",".join(map(str, ids)))
        answer = rng.randint(0, 12)
        text = f"<think>\nstep {rng.randint(0, 99)}\n</think>\nThe answer is $\\boxed{{{answer}}}$."
        n_tokens = min(rng.randint(3, 40), sp.max_tokens or 40)
        stop = sp.stop_token_ids[:1] or [0]
        return SimpleNamespace(text=text, token_ids=[5] * (n_tokens - 1) + stop,
                               finish_reason="stop" if n_tokens < 40 else "length")

    def _log(self, n_requests: int) -> None:
        path = os.environ.get("VLLM_STAND_IN_LOG")
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({**self.args, "n_requests": n_requests,
                                     "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")

    def _log_event(self, event: str) -> None:
        path = os.environ.get("VLLM_STAND_IN_LOG")
        if path:
            with open(Path(path).with_suffix(".events"), "a") as fh:
                fh.write(f"{event} {self.args['model']} {os.getpid()}\n")
