"""The real vLLM engine (CPU build) against the HF backend, on a finished tiny run.

Runs the evaluation entry points as the rules launch them (``scripts/final_eval.py``,
``scripts/eval_curve.py``; vLLM from the venv of ``scripts/setup_vllm_cpu.sh``) on the
run's SFT-3ep model and toy benchmarks, and reads the jobs' own logs:

* generation throughput: the final protocol (16 samples per problem) by the HF backend
  and by 1 and 2 vLLM engines -- tokens/s of the backend call (vLLM: engine start-up
  included) and of the engines' own ``generate`` (start-up excluded), ratios to HF;
* the project's overhead around the engine: an ``eval_curve`` job on 2 engines (every
  checkpoint of SFT-3ep) -- its wall time against the engines' generate time and their
  start-up time.

    python bench/tiny_e2e.py --keep /tmp/tiny       # a finished tiny run, if none
    python bench/vllm_generation.py --run /tmp/tiny
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import yaml

sys.path.insert(0, str(benchlib.ROOT))
from redi.workflow import config as rc  # noqa: E402
from redi.workflow import plan  # noqa: E402

VLLM_PYTHON = Path(os.environ.get("REDI_VLLM_PYTHON",
                                  benchlib.ROOT / ".venv-vllm" / "bin" / "python"))
MODEL_LINE = re.compile(r"(\d+) responses, (\d+) tokens in ([\d.]+) s")
ENGINE_LINE = re.compile(r"engine (\d+): started in ([\d.]+) s, (\d+) tokens generated in "
                         r"([\d.]+) s")


def run_config(run: Path, backend: str, engines: int) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    ev = config["presets"]["tiny"]["eval"]
    if backend == "vllm":
        ev.update(backend="vllm", python=str(VLLM_PYTHON), cpu_engines=engines, dtype="float32")
    rc.validate_config(config, run)
    return config


def job(run: Path, script: str, params: dict, python: Path, out: Path, *args: str) -> dict:
    """One job as its rule runs it (2 threads, no GPU); its wall time and log lines."""
    out.mkdir(parents=True, exist_ok=True)
    # this checkout's code on the run's files
    cmd = [str(python), str(benchlib.ROOT / "scripts" / f"{script}.py"), "--params",
           rc.canonical_json(params), *args, "--gpus", "0", "--threads", "2",
           "--log", str(out / "job.log")]
    env = {**os.environ, "PYTHONPATH": str(benchlib.ROOT)}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-4000:]}")
    text = (out / "job.log").read_text()
    models = [tuple(map(float, m)) for m in MODEL_LINE.findall(text)]
    engines = [tuple(map(float, m)) for m in ENGINE_LINE.findall(text)]
    return {"wall_s": wall, "models": models, "engines": engines}


def _per_call(engine_lines: list[tuple], engines: int) -> list[list[tuple]]:
    """The engine lines of a job, grouped by backend call (one line per engine each)."""
    return [engine_lines[i:i + engines] for i in range(0, len(engine_lines), engines)]


def final_eval(run: Path, backend: str, engines: int, out: Path) -> dict:
    config = run_config(run, backend, engines)
    params = plan.final_model_params(config, plan.final_models(config)["sft_3ep"])
    python = VLLM_PYTHON if backend == "vllm" else Path(sys.executable)
    return job(run, "final_eval", params, python, out, "--label", "sft_3ep", "--manifests",
               "results/train/sft_3ep/manifest.json", "--out-dir", str(out))


def throughput_rows(run: Path, tmp: Path) -> list[dict]:
    rows = []
    for backend, engines in (("hf", 1), ("vllm", 1), ("vllm", 2)):
        result = final_eval(run, backend, engines, tmp / f"{backend}{engines}")
        # one backend call per benchmark; engines run side by side: a call's generation
        # time is its slowest engine's
        tokens = sum(m[1] for m in result["models"])
        call_s = sum(m[2] for m in result["models"])
        engine_s = sum(max(e[3] for e in per_call)
                       for per_call in _per_call(result["engines"], engines)) or call_s
        rows.append({"backend": backend, "engines": engines, "tokens": int(tokens),
                     "call_s": call_s, "engine_generate_s": engine_s,
                     "tokens_per_s_call": tokens / call_s, "tokens_per_s_engine": tokens / engine_s,
                     "job_wall_s": result["wall_s"]})
    return rows


def overhead_row(run: Path, tmp: Path) -> dict:
    config = run_config(run, "vllm", 2)
    result = job(run, "eval_curve", plan.intermediate_eval_params(config), VLLM_PYTHON,
                 tmp / "curve", "--manifest", "results/train/sft_3ep/manifest.json",
                 "--log-csv", "results/train/sft_3ep/log.csv", "--out",
                 str(tmp / "curve" / "curve.csv"), "--best", str(tmp / "curve" / "best.json"))
    per_model = _per_call(result["engines"], 2)
    generate = sum(max(e[3] for e in pair) for pair in per_model)
    start = sum(max(e[1] for e in pair) for pair in per_model)
    return {"checkpoints": len(per_model), "job_wall_s": result["wall_s"],
            "engine_generate_s": generate, "engine_start_s": start,
            "wall_over_generate": result["wall_s"] / generate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished tiny run")
    args = parser.parse_args()
    if not VLLM_PYTHON.is_file():
        raise SystemExit(f"no vLLM venv at {VLLM_PYTHON}: bash scripts/setup_vllm_cpu.sh")
    benchlib.print_machine(benchlib.machine(), "machine (load average at the start)")
    with tempfile.TemporaryDirectory(prefix="redi-vllm-bench-") as tmp:
        rows = throughput_rows(args.run.resolve(), Path(tmp))
        over = overhead_row(args.run.resolve(), Path(tmp))
    hf = rows[0]
    print("\n== final protocol on SFT-3ep (16 samples per problem, toy benchmarks)")
    print("| backend | engines | tokens | call s | engine generate s | tokens/s (call) | "
          "tokens/s (engine) | x HF (call) | x HF (engine) | job wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['engines']} | {r['tokens']} | {r['call_s']:.1f} | "
              f"{r['engine_generate_s']:.1f} | {r['tokens_per_s_call']:.0f} | "
              f"{r['tokens_per_s_engine']:.0f} | "
              f"{r['tokens_per_s_call'] / hf['tokens_per_s_call']:.2f} | "
              f"{r['tokens_per_s_engine'] / hf['tokens_per_s_engine']:.2f} | "
              f"{r['job_wall_s']:.1f} |")
    print("\n== eval_curve job on 2 vLLM engines (every checkpoint of SFT-3ep)")
    print("| checkpoints | job wall s | engine start-up s | engine generate s | "
          "wall / generate |")
    print("|---|---|---|---|---|")
    print(f"| {over['checkpoints']} | {over['job_wall_s']:.1f} | {over['engine_start_s']:.1f} | "
          f"{over['engine_generate_s']:.1f} | {over['wall_over_generate']:.1f} |")


if __name__ == "__main__":
    main()
