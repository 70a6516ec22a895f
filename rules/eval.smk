# Evaluation (paper section 3.3, appendix C.5): intermediate curves of every
# checkpoint (best-checkpoint selection), final evaluations of the table models
# (16 samples, forced <think>, the paper's rllm grader) and Figure 8's generation
# statistics. Logic: redi/evaluation.py; formats: docs/ARCHITECTURE.md.
#
# The backend is the preset's (`eval.backend`): hf (tiny, CPU) or vllm (one
# engine per GPU of the job); the conda env follows it.

from redi.benchmarks import HUB_SOURCES


localrules:
    download_benchmarks,
    download_baseline,


EVAL_ENV = "../envs/vllm.yaml" if PRESET["eval"]["backend"] == "vllm" else "../envs/train.yaml"
BENCH_DIR = rc.benchmarks_dir(config)  # a folder of JSON files; null -> Hub download
BENCH_NAMES = [b["name"] for b in PRESET["benchmarks"]]
CURVE_RUNS = SFT_RUNS + STAGE2_RUNS
FIG8_RUN = config["figures"]["fig8"]


if PRESET["benchmarks_dir"] is None:  # before any job: the download needs a loader
    for _i, _b in enumerate(PRESET["benchmarks"]):
        if _b["hub"] not in HUB_SOURCES:
            raise WorkflowError(
                f"Invalid configuration: invalid config key 'presets.{config['preset']}."
                f"benchmarks.{_i}.hub' = {_b['hub']!r}: no Hub loader (known: "
                f"{sorted(HUB_SOURCES)}); or set benchmarks_dir")

# Hub baselines (validated names: one safe path component each) -> their downloads
HUB_BASELINES = {b["name"]: b["model"] for b in PRESET["baselines"] if rc.hub_id(b["model"])}


def baseline_dir(spec):
    return f"results/models/hub/{spec['name']}" if spec["name"] in HUB_BASELINES else spec["model"]


# ------------------------------------------------------------------ inputs


def curve_inputs(wildcards):
    run = wildcards.curve_run
    inputs = {
        "manifest": f"results/train/{run}/manifest.json",
        "log_csv": f"results/train/{run}/log.csv",
        "bench": BENCH_DIR,
    }
    if run in STAGE2_RUNS:  # step 0 = the init SFT model, from its curve
        inputs["init_curve"] = f"results/eval/curves/{config['runs'][run]['init']}.csv"
    return inputs


def final_inputs(wildcards):
    spec = FINAL_MODELS[wildcards.label]
    inputs = {"bench": BENCH_DIR, "manifests": [], "bests": [], "model_dir": []}
    if spec["kind"] == "sft" or (spec["kind"] == "run" and spec["checkpoint"] == "last"):
        inputs["manifests"] = [f"results/train/{spec['run']}/manifest.json"]
    elif spec["kind"] == "run":
        inputs["bests"] = [f"results/eval/curves/{spec['run']}.best.json"]
    elif spec["kind"] == "group":
        inputs["bests"] = [f"results/eval/curves/{r}.best.json" for r in spec["runs"]]
    else:
        inputs["model_dir"] = baseline_dir(spec)
    return inputs


def final_args(wildcards, input):
    """The model's inputs as shell-quoted options (config paths may hold any character)."""
    args = [shell_args("--manifests", input.manifests), shell_args("--bests", input.bests),
            shell_args("--model-dir", input.model_dir)]
    return " ".join(a for a in args if a)


# ------------------------------------------------------------------- rules


rule download_benchmarks:
    """The preset's benchmarks from the Hub, as {id, problem, answer} JSON files (benchmarks_dir: null)."""
    input:
        code=code("scripts/download_benchmarks.py"),
    output:
        directory(rc.BENCHMARKS_DOWNLOAD_DIR),
    params:
        hp=lambda wc: hp(rc.benchmark_download_params(config)),
    log:
        f"{LOGS}/download_benchmarks.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/download_benchmarks.py --params {params.hp:q} --out {output:q} --log {log:q}"


rule download_baseline:
    """Snapshot of a Hub baseline model at its revision (evaluation nodes may be offline);
    the output is results/models/hub/<name> only (names are single path components), so
    a failed download never makes Snakemake delete anything else."""
    input:
        code=code("scripts/download_model.py"),
    output:
        directory("results/models/hub/{baseline}"),
    wildcard_constraints:
        baseline="|".join(re.escape(b) for b in HUB_BASELINES) or "(?!)",
    params:
        hp=lambda wc: hp(rc.baseline_download_params(config, wc.baseline)),
    log:
        f"{LOGS}/download_baseline/{{baseline}}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/download_model.py --params {params.hp:q} --out {output:q} --log {log:q}"


rule eval_curve:
    """Intermediate evaluation (n=4, math_verify) of every checkpoint of {curve_run}; best checkpoint."""
    input:
        unpack(curve_inputs),
        code=code("scripts/eval_curve.py"),
    output:
        curve="results/eval/curves/{curve_run}.csv",
        best="results/eval/curves/{curve_run}.best.json",
    wildcard_constraints:
        curve_run="|".join(re.escape(r) for r in CURVE_RUNS),
    params:
        hp=lambda wc: hp(rc.intermediate_eval_params(config)),
        init=lambda wc, input: shell_args(
            "--init-curve", input.init_curve if "init_curve" in input.keys() else []),
    threads: EVAL_THREADS
    resources:
        gpu=EVAL_GPUS,
        **slurm_placement(gpu=True),
    log:
        f"{LOGS}/eval_curve/{{curve_run}}.log",
    benchmark:
        f"results/benchmarks/eval_curve/{{curve_run}}.tsv"
    conda:
        EVAL_ENV
    shell:
        "python scripts/eval_curve.py --params {params.hp:q} --manifest {input.manifest:q}"
        " --log-csv {input.log_csv:q} {params.init} --gpus {resources.gpu}"
        " --out {output.curve:q} --best {output.best:q} --threads {threads} --log {log:q}"


rule final_eval:
    """Final protocol (n=16, forced <think>; rllm, strict and math_verify graders) of table model {label}."""
    input:
        unpack(final_inputs),
        code=code("scripts/final_eval.py"),
    output:
        summary="results/eval/final/{label}/summary.json",
        samples=expand("results/eval/final/{{label}}/{bench}.parquet", bench=BENCH_NAMES),
    wildcard_constraints:
        label="|".join(re.escape(label) for label in FINAL_MODELS),
    params:
        hp=lambda wc: hp(rc.final_model_params(config, FINAL_MODELS[wc.label])),
        args=final_args,
        out_dir=lambda wc: f"results/eval/final/{wc.label}",
    threads: EVAL_THREADS
    resources:
        gpu=EVAL_GPUS,
        **slurm_placement(gpu=True),
    log:
        f"{LOGS}/final_eval/{{label}}.log",
    benchmark:
        f"results/benchmarks/final_eval/{{label}}.tsv"
    conda:
        EVAL_ENV
    shell:
        "python scripts/final_eval.py --params {params.hp:q} --label {wildcards.label:q}"
        " {params.args} --gpus {resources.gpu} --out-dir {params.out_dir:q}"
        " --threads {threads} --log {log:q}"


rule gen_stats:
    """Figure 8: tokens and "Wait" per response of every checkpoint of {run} (final protocol)."""
    input:
        code=code("scripts/gen_stats.py"),
        manifest="results/train/{run}/manifest.json",
        init=lambda wc: f"results/train/{config['runs'][wc.run]['init']}/manifest.json",
        bench=BENCH_DIR,
    output:
        "results/eval/genstats/{run}.csv",
    params:
        hp=lambda wc: hp(rc.genstats_params(config)),
    threads: EVAL_THREADS
    resources:
        gpu=EVAL_GPUS,
        **slurm_placement(gpu=True),
    log:
        f"{LOGS}/gen_stats/{{run}}.log",
    benchmark:
        f"results/benchmarks/gen_stats/{{run}}.tsv"
    conda:
        EVAL_ENV
    shell:
        "python scripts/gen_stats.py --params {params.hp:q} --manifest {input.manifest:q}"
        " --gpus {resources.gpu} --out {output:q} --threads {threads} --log {log:q}"


ALL_TARGETS.extend(
    [f"results/eval/curves/{r}.{ext}" for r in CURVE_RUNS for ext in ("csv", "best.json")]
    + [f"results/eval/final/{label}/summary.json" for label in FINAL_MODELS]
    + [f"results/eval/genstats/{FIG8_RUN}.csv"]
)
