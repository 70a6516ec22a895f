"""The ``vllm`` generation backend: data-parallel vLLM engines, on GPUs or on CPUs.

One engine per GPU of the job (``CUDA_VISIBLE_DEVICES`` per engine), or, with no GPU
(the CPU build of vLLM), ``cpu_engines`` engines that split the job's cores
(``VLLM_CPU_OMP_THREADS_BIND`` per engine, the CPU counterpart). Every request of a
model goes to the engines in one call, longest-expected first and dealt round-robin,
so long stragglers of different benchmarks overlap. One engine runs in this process;
several run in spawned processes, one each, and return their results through files.

Each engine is shut down explicitly when its work is done or has failed: vLLM's
engine-core process is not a daemon and its own shutdown runs only at interpreter
exit, which never comes in a multiprocessing child (the job would hang). A failing
engine stops the others (their whole process groups) and its error is raised here,
so it lands in the job's log.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redi.eval.generation import Backend, Completion, model_context, stop_token_ids
from redi.model.models import load_tokenizer

log = logging.getLogger(__name__)

Request = tuple[list[int], int]  # (prompt token ids, seed)


@dataclass
class VLLMBackend(Backend):
    """vLLM engines; a single ``generate`` call per engine and model."""

    gpus: int = 1
    cpu_engines: int = 1  # engines when the job has no GPU (each on its share of threads)
    threads: int = 1  # the job's cores
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    dtype: str = "bfloat16"
    cpu_kvcache_gib: float = 1.0  # KV cache per CPU engine (vLLM's default: most of RAM)

    @property
    def engines(self) -> int:
        return self.gpus if self.gpus > 0 else max(1, self.cpu_engines)

    def describe(self) -> dict[str, Any]:
        return {"backend": "vllm", "engines": self.engines,
                "device": "cuda" if self.gpus > 0 else "cpu", **_vllm_version()}

    def context(self, model: str) -> dict[str, Any]:
        """The engine's ``max_model_len``: the configured one capped at the model's own
        context (vLLM refuses more, e.g. Qwen2.5-Math-1.5B-Instruct's 4,096)."""
        own = model_context(model)
        limits = [x for x in (self.max_model_len, own) if x]
        capped = min(limits) if limits else None
        return {"model_max_position_embeddings": own, "max_model_len_requested": self.max_model_len,
                "max_model_len": capped}

    def _generate(self, model, prompts, n, priority, seeds):
        tokenizer = load_tokenizer(model)
        from transformers import AutoConfig

        stops = stop_token_ids(tokenizer, AutoConfig.from_pretrained(model),
                               self.sampling.stop_tokens)
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        prio = list(priority) if priority is not None else [0.0] * len(prompts)
        # longest expected first (then longest prompt): stragglers start early
        order = sorted(range(len(prompts)), key=lambda i: (-prio[i], -len(encoded[i])))
        world = self.engines
        # round-robin keeps every engine's mix of long and short requests alike
        shards = [order[r::world] for r in range(world)]
        job = self._job(model, n, stops)
        placements = engine_placements(self.gpus, world, self.threads)
        log.info("vllm generation: %d prompts x %d samples on %d engine(s) (%s)", len(prompts),
                 n, world, "; ".join(" ".join(f"{k}={v}" for k, v in p.items())
                                     for p in placements))
        requests = [[(encoded[i], seeds[i]) for i in shard] for shard in shards]
        if world == 1:
            with _environment(placements[0]):
                shard_out = [_vllm_shard(job, requests[0])]
        else:
            shard_out = _run_shards(job, requests, placements)
        for rank, (_, timing) in enumerate(shard_out):
            log.info("engine %d: started in %.1f s, %d tokens generated in %.1f s (%.0f tokens/s)",
                     rank, timing["start_s"], timing["tokens"], timing["generate_s"],
                     timing["tokens"] / max(timing["generate_s"], 1e-9))
        results: list[list[Completion] | None] = [None] * len(prompts)
        for shard, (outs, _) in zip(shards, shard_out, strict=True):
            for i, comps in zip(shard, outs, strict=True):
                results[i] = [Completion(*c) for c in comps]
        return results  # type: ignore[return-value]

    def _job(self, model: str, n: int, stops: list[int]) -> dict[str, Any]:
        context = self.context(model)
        if context["max_model_len"] != self.max_model_len:
            log.info("%s: max_model_len %s capped at the model's context %s", model,
                     self.max_model_len, context["max_model_len"])
        return {
            "model": model, "n": n, "stops": stops, "sampling": asdict(self.sampling),
            "max_model_len": context["max_model_len"], "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            # on CPU: no torch.compile at start-up (~27 s); the same kernels run
            "enforce_eager": self.gpus == 0,
            # on CPU: a prompt whose prefill is split over steps makes vLLM 0.32 rewind
            # the request's seeded generator, which a CPU generator cannot do (the engine
            # dies: "CPU Generator does not use offset"); whole prefills avoid it
            "chunked_prefill": self.gpus > 0,
            "cpu_kvcache_gib": self.cpu_kvcache_gib if self.gpus == 0 else None,
        }


def _vllm_version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return {"vllm_version": version(dist)}
        except PackageNotFoundError:
            continue
    return {}


# ------------------------------------------------------------------ placement


def engine_placements(gpus: int, engines: int, threads: int) -> list[dict[str, str]]:
    """Each engine's environment: its GPU, or on CPU its cores and thread count.

    GPUs: those the scheduler made visible (e.g. SLURM), else 0..N-1. CPUs: when the
    process may run on exactly the job's ``threads`` cores (a scheduler's allocation,
    or a whole machine given to the job), each engine is bound to its own slice of
    them; otherwise the cores are shared with other jobs and unknown, so engines are
    left unbound with ``threads // engines`` OpenMP threads each (vLLM's default
    binds every engine to the same first core).
    """
    if gpus > 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(r) for r in range(engines)]
        if len(devices) < engines:
            raise RuntimeError(f"{engines} vLLM engines but only GPUs {devices} are visible")
        return [{"CUDA_VISIBLE_DEVICES": devices[r]} for r in range(engines)]
    cores = sorted(os.sched_getaffinity(0))
    per_engine = max(1, threads // engines)
    if len(cores) == threads and threads >= engines:
        return [{"VLLM_CPU_OMP_THREADS_BIND": _core_list(cores[r * per_engine:(r + 1) * per_engine])}
                for r in range(engines)]
    return [{"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(per_engine)}
            for _ in range(engines)]


def _core_list(cores: Sequence[int]) -> str:
    return ",".join(str(c) for c in cores)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the duration (vLLM reads them at start-up)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------- engine


def _engine_env(job: dict[str, Any]) -> dict[str, str]:
    """The job's log kept open; on CPU a bounded KV cache (vLLM's default takes most of
    the RAM) and a compile cache out of the home folder; unless the user set them."""
    env: dict[str, str] = {}
    if logging.getLogger().handlers and "VLLM_CONFIGURE_LOGGING" not in os.environ:
        # vLLM's logging set-up (dictConfig, at import) closes the handlers already
        # there: the job's log file would end when its engine starts. Its messages go
        # to the job's handlers instead.
        env["VLLM_CONFIGURE_LOGGING"] = "0"
    if job["cpu_kvcache_gib"] is not None and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{job['cpu_kvcache_gib']:g}"
    if job["enforce_eager"] and "VLLM_CACHE_ROOT" not in os.environ:
        env["VLLM_CACHE_ROOT"] = str(Path(tempfile.gettempdir()) / "redi-vllm-cache")
    return env


def _vllm_shard(job: dict, requests: list[Request]) -> tuple[list[list[tuple]], dict]:
    """Generate on one engine: [(text, n_tokens, finished)] * n per (prompt ids, seed),
    and the engine's timing (start-up, generation, tokens); the engine is shut down before returning, also on error, and an error carries the
    engine's own messages (its engine-core process prints them, it raises only
    "EngineDeadError ... see stack trace above")."""
    with _OutputTail() as tail:
        try:
            return _generate_on_engine(job, requests)
        except Exception as err:
            raise RuntimeError(f"vLLM engine failed on {job['model']}: {err}\n"
                               f"engine output:\n{tail.errors()}") from err


def _generate_on_engine(job: dict, requests: list[Request]) -> tuple[list[list[tuple]], dict]:
    started = time.monotonic()
    with _environment(_engine_env(job)):
        import vllm

        s = job["sampling"]
        engine_args: dict[str, Any] = {
            "model": job["model"], "tokenizer": job["model"], "seed": s["seed"],
            "dtype": job["dtype"], "gpu_memory_utilization": job["gpu_memory_utilization"],
        }
        if job["max_model_len"]:
            engine_args["max_model_len"] = job["max_model_len"]
        if job["enforce_eager"]:
            engine_args["enforce_eager"] = True
        if not job["chunked_prefill"]:
            engine_args["enable_chunked_prefill"] = False
        llm = vllm.LLM(**engine_args)
    timing = {"start_s": time.monotonic() - started}
    try:
        # one SamplingParams per request: its seed, not the engine's, decides the samples
        params = [vllm.SamplingParams(
            n=job["n"], temperature=s["temperature"], top_p=s["top_p"],
            max_tokens=_max_tokens(len(ids), s["max_new_tokens"], job["max_model_len"]),
            stop_token_ids=job["stops"], skip_special_tokens=True, seed=seed,
        ) for ids, seed in requests]
        prompts = [{"prompt_token_ids": ids} for ids, _ in requests]
        started = time.monotonic()
        outputs = llm.generate(prompts, params, use_tqdm=True)
        timing["generate_s"] = time.monotonic() - started
        timing["tokens"] = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return [[(c.text, len(c.token_ids), c.finish_reason == "stop") for c in o.outputs]
                for o in outputs], timing
    finally:
        llm.llm_engine.engine_core.shutdown()


class _OutputTail:
    """This process's console output (fds 1 and 2, inherited by the engine processes
    it starts) passed through unchanged, its last lines kept for an error message."""

    ERROR_WORDS = ("Error", "ERROR", "Exception", "error:")

    def __init__(self, keep: int = 400) -> None:
        self.lines: deque[str] = deque(maxlen=keep)

    def __enter__(self) -> _OutputTail:
        # multiprocessing's resource tracker outlives the engines: started after the
        # redirect it would hold the pipe open and __exit__ would wait its full timeout
        import multiprocessing.resource_tracker

        multiprocessing.resource_tracker.ensure_running()
        sys.stdout.flush()
        sys.stderr.flush()
        self._console = (os.dup(1), os.dup(2))
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        self._pump = threading.Thread(target=self._copy, args=(read,), daemon=True)
        self._pump.start()
        return self

    def _copy(self, read: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                os.write(self._console[1], line)
                self.lines.append(line.decode(errors="replace").rstrip())

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._console[0], 1)
        os.dup2(self._console[1], 2)
        self._pump.join(timeout=10)  # EOF once every engine process is gone
        for fd in self._console:
            os.close(fd)

    def errors(self, limit: int = 40) -> str:
        """The lines that report an error (else the last ones), at most ``limit``."""
        found = [line for line in self.lines if any(w in line for w in self.ERROR_WORDS)]
        return "\n".join((found or list(self.lines))[-limit:])


def _max_tokens(prompt_len: int, max_new_tokens: int, max_model_len: int | None) -> int:
    """A response may use what the context leaves after the prompt (prompt + response
    <= max_model_len), at most ``max_new_tokens``."""
    if not max_model_len:
        return max_new_tokens
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(f"a prompt of {prompt_len} tokens leaves no room in max_model_len "
                         f"{max_model_len}")
    return min(max_new_tokens, room)


# ------------------------------------------------------------- engine processes


def _shard_main(job: dict, requests: list[Request], env: dict[str, str], out: str) -> None:
    """One engine process: its own process group (so a failure elsewhere stops its
    engine-core too), its placement set before vLLM is imported; the error, if any,
    is written beside the result for the parent to report."""
    os.setsid()
    os.environ.update(env)
    try:
        result = _vllm_shard(job, requests)
    except BaseException:
        Path(out + ".error").write_text(traceback.format_exc())
        raise
    finally:
        _stop_children()
    with open(out + ".tmp", "wb") as fh:
        pickle.dump(result, fh)
    os.replace(out + ".tmp", out)


def _stop_children() -> None:
    """Whatever the engine left behind: multiprocessing joins non-daemonic children
    at exit, and one that never ends would hang this process."""
    import multiprocessing as mp

    for child in mp.active_children():
        child.terminate()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()


def _run_shards(job: dict, shards: list[list[Request]],
                placements: list[dict[str, str]]) -> list[tuple[list[list[tuple]], dict]]:
    """One spawned process per engine; results come back through files (they are large).

    The entry script must be import-safe (``if __name__ == "__main__":``): spawn
    re-imports the parent's main module in every child.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    with tempfile.TemporaryDirectory(prefix="redi-vllm-") as tmp:
        outs = [str(Path(tmp) / f"shard{r}.pkl") for r in range(len(shards))]
        procs = [ctx.Process(target=_shard_main, args=(job, s, placements[r], o))
                 for r, (s, o) in enumerate(zip(shards, outs, strict=True))]
        try:
            for p in procs:
                p.start()
            _join_or_stop(procs, outs)
        finally:
            for p in procs:
                _kill_group(p)
        result = []
        for o in outs:
            with open(o, "rb") as fh:
                result.append(pickle.load(fh))
    return result


def _kill_group(proc: Any) -> None:
    """SIGKILL an engine process's group (itself, its engine core and workers)."""
    if proc.pid is None:
        return
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.is_alive():  # not yet its own group leader
        proc.kill()
    proc.join(timeout=10)


def _join_or_stop(procs: list, outs: Sequence[str] | None = None) -> None:
    """Wait for every engine; the first failure stops the others (no idle GPUs
    finishing work that is lost anyway) and raises with the engines' own errors."""
    from multiprocessing.connection import wait

    running = list(procs)
    while running:
        wait([p.sentinel for p in running])
        for p in [p for p in running if not p.is_alive()]:
            p.join()
            running.remove(p)
            if p.exitcode != 0:
                message = _failure_message(procs, outs, len(running))
                for other in running:
                    _kill_group(other)
                raise RuntimeError(message)


def _failure_message(procs: list, outs: Sequence[str] | None, stopped: int) -> str:
    failed = {r: q.exitcode for r, q in enumerate(procs) if q.exitcode not in (None, 0)}
    lines = [f"vLLM engine(s) failed (rank: exit code) {failed}; {stopped} other engine(s) "
             f"stopped"]
    for rank in failed:
        error = Path(outs[rank] + ".error") if outs else None
        if error is not None and error.exists():
            lines.append(f"engine {rank}: {error.read_text().strip()}")
    return "\n".join(lines)
