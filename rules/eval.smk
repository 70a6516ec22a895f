# Evaluation (paper section 3.3, appendix C.5): intermediate curves of every
# checkpoint (best-checkpoint selection), final evaluations of the table models
# (16 samples, forced <think>, the paper's rllm grader), Figure 8's generation
# statistics and Table 5's out-of-domain evaluations (appendix D.2). Logic:
# redi/eval/evaluation.py, redi/eval/ood.py; formats: docs/ARCHITECTURE.md.
#
# The backend is the preset's (`eval.backend`): hf (tiny, CPU) or vllm (one
# engine per GPU of the job, or CPU engines); the conda env follows it, and
# `eval.python` names another interpreter where there is no conda (the CPU vLLM venv).

localrules:
    download_benchmarks,
    download_baseline,
    download_ood,


EVAL_ENV = plan.eval_env(config)
# the interpreter of the generation jobs: the env's `python`, or eval.python (the CPU
# vLLM venv of configs/tiny_vllm.yaml); the same rules and scripts either way
EVAL_PYTHON = plan.eval_python(config)
BENCH_NAMES = plan.benchmark_names(config)
# Hub baselines (validated names: one safe path component each) -> their downloads
HUB_BASELINES = plan.hub_baselines(config)
# Table 5's out-of-domain benchmarks, and those downloaded from the Hub (GPQA)
OOD_NAMES = ood_plan.ood_names(config)
HUB_OOD = ood_plan.ood_names(config, source="hub")


rule download_benchmarks:
    """The preset's benchmarks from the Hub, as {id, problem, answer} JSON files (benchmarks_dir: null)."""
    input:
        code=code("scripts/download_benchmarks.py"),
    output:
        directory(paths.BENCHMARKS_DOWNLOAD_DIR),
    params:
        hp=lambda wc: hp(plan.benchmark_download_params(config)),
    resources:
        **job_resources("download_benchmarks"),
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
        directory(paths.hub_model()),
    wildcard_constraints:
        baseline=snakemake_helpers.one_of(HUB_BASELINES),
    params:
        hp=lambda wc: hp(plan.baseline_download_params(config, wc.baseline)),
    resources:
        **job_resources("download_baseline"),
    log:
        f"{LOGS}/download_baseline/{{baseline}}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/download_model.py --params {params.hp:q} --out {output:q} --log {log:q}"


rule download_ood:
    """A gated multiple-choice set (GPQA Diamond) from the Hub at its revision, as JSONL
    in the Hub's columns, and the commit it resolved to (needs an accepted licence and
    HF_TOKEN; a local `file` in the config needs no download)."""
    input:
        code=code("scripts/download_ood.py"),
    output:
        data=f"{paths.OOD_DOWNLOAD_DIR}/{{ood_hub}}.jsonl",
        record=f"{paths.OOD_DOWNLOAD_DIR}/{{ood_hub}}.download.json",
    wildcard_constraints:
        ood_hub=snakemake_helpers.one_of(HUB_OOD),
    params:
        hp=lambda wc: hp(ood_plan.ood_download_params(config, wc.ood_hub)),
    resources:
        **job_resources("download_ood"),
    log:
        f"{LOGS}/download_ood/{{ood_hub}}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/download_ood.py --params {params.hp:q} --out {output.data:q}"
        " --record {output.record:q} --log {log:q}"


rule eval_curve:
    """Intermediate evaluation (n=4, math_verify) of every checkpoint of {curve_run}; best checkpoint."""
    input:
        unpack(get_curve_inputs),
        code=code("scripts/eval_curve.py"),
    output:
        curve=paths.curve(),
        best=paths.best(),
    wildcard_constraints:
        curve_run=snakemake_helpers.one_of(SFT_RUNS + BASE_SFT_RUNS + STAGE2_RUNS),
    params:
        hp=lambda wc: hp(plan.intermediate_eval_params(config)),
        python=EVAL_PYTHON,
        init=lambda wc, input: shell_args(
            "--init-curve", input.init_curve if "init_curve" in input.keys() else []),
    threads: EVAL_THREADS
    resources:
        **job_resources("eval_curve", gpu=EVAL_GPUS, threads=EVAL_THREADS),
    log:
        f"{LOGS}/eval_curve/{{curve_run}}.log",
    benchmark:
        paths.benchmark_tsv("eval_curve", "{curve_run}")
    conda:
        EVAL_ENV
    shell:
        "{params.python:q} scripts/eval_curve.py --params {params.hp:q} --manifest {input.manifest:q}"
        " --log-csv {input.log_csv:q} {params.init} --gpus {resources.gpu}"
        " --out {output.curve:q} --best {output.best:q} --threads {threads} --log {log:q}"


rule final_eval:
    """Final protocol (n=16, forced <think>; rllm, strict and math_verify graders) of table model {label}."""
    input:
        unpack(get_final_inputs),
        code=code("scripts/final_eval.py"),
    output:
        summary=paths.final_summary(),
        samples=[paths.final_samples(bench=b) for b in BENCH_NAMES],
    wildcard_constraints:
        label=snakemake_helpers.one_of(FINAL_MODELS),
    params:
        hp=lambda wc: hp(plan.final_model_params(config, FINAL_MODELS[wc.label])),
        python=EVAL_PYTHON,
        args=final_args,
        out_dir=lambda wc: paths.final_dir(wc.label),
    threads: EVAL_THREADS
    resources:
        **job_resources("final_eval", gpu=EVAL_GPUS, threads=EVAL_THREADS),
    log:
        f"{LOGS}/final_eval/{{label}}.log",
    benchmark:
        paths.benchmark_tsv("final_eval", "{label}")
    conda:
        EVAL_ENV
    shell:
        "{params.python:q} scripts/final_eval.py --params {params.hp:q} --label {wildcards.label:q}"
        " {params.args} --gpus {resources.gpu} --out-dir {params.out_dir:q}"
        " --threads {threads} --log {log:q}"


rule gen_stats:
    """Figure 8: tokens and "Wait" per response of every checkpoint of {run} (final protocol)."""
    input:
        code=code("scripts/gen_stats.py"),
        manifest=paths.manifest(),
        init=get_init_manifest,
        bench=names.benchmarks_dir(config),
        valid=paths.BENCHMARKS_VALID,
    output:
        stats=paths.genstats(),
        responses=paths.genstats_responses(),
    params:
        hp=lambda wc: hp(plan.genstats_params(config)),
        python=EVAL_PYTHON,
    threads: EVAL_THREADS
    resources:
        **job_resources("gen_stats", gpu=EVAL_GPUS, threads=EVAL_THREADS),
    log:
        f"{LOGS}/gen_stats/{{run}}.log",
    benchmark:
        paths.benchmark_tsv("gen_stats", "{run}")
    conda:
        EVAL_ENV
    shell:
        "{params.python:q} scripts/gen_stats.py --params {params.hp:q} --manifest {input.manifest:q}"
        " --gpus {resources.gpu} --out {output.stats:q} --responses {output.responses:q}"
        " --threads {threads} --log {log:q}"


rule ood_eval:
    """Table 5: the out-of-domain benchmarks of model {label} under the final protocol's
    sampling (code: continuation prompt, graded in the sandbox; multiple choice: LightEval's
    prompt in the chat template, letter extraction)."""
    input:
        unpack(get_ood_inputs),
        code=code("scripts/ood_eval.py"),
    output:
        summary=paths.ood_summary(),
        samples=[paths.ood_samples(bench=b) for b in OOD_NAMES],
    wildcard_constraints:
        label=snakemake_helpers.one_of(FINAL_MODELS),
    params:
        hp=lambda wc: hp(ood_plan.ood_eval_params(config, wc.label)),
        python=EVAL_PYTHON,
        args=final_args,
        out_dir=lambda wc: paths.ood_dir(wc.label),
    threads: EVAL_THREADS
    resources:
        **job_resources("ood_eval", gpu=EVAL_GPUS, threads=EVAL_THREADS),
    log:
        f"{LOGS}/ood_eval/{{label}}.log",
    benchmark:
        paths.benchmark_tsv("ood_eval", "{label}")
    conda:
        EVAL_ENV
    shell:
        "{params.python:q} scripts/ood_eval.py --params {params.hp:q} --label {wildcards.label:q}"
        " {params.args} --gpus {resources.gpu} --out-dir {params.out_dir:q}"
        " --threads {threads} --log {log:q}"
