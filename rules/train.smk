# Training: SFT (stage 1), DPO reference log-probs, stage 2 (DPO/SimPO/REDI).
# One engine (redi/train/training.py); run folders results/train/<run>/ (docs/ARCHITECTURE.md).
# Only manifest.json and log.csv are declared outputs: Snakemake deletes a
# job's outputs before rerunning it, and checkpoints/ must survive a killed
# job so that the rerun resumes from its last checkpoint.


rule sft:
    """Stage 1: completion-only SFT on D_SFT for {epochs} epochs from the base model."""
    input:
        code=code("scripts/train_sft.py"),
        data=rules.sft_length.output.sft,
        base=plan.BASE_MODEL_DIR,
    output:
        manifest="results/train/sft_{epochs}ep/manifest.json",
        log_csv="results/train/sft_{epochs}ep/log.csv",
    params:
        hp=lambda wc: hp(plan.sft_params(config, int(wc.epochs))),
    threads: TRAIN_THREADS
    resources:
        **job_resources("sft", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),
    log:
        f"{LOGS}/sft/sft_{{epochs}}ep.log",
    benchmark:
        f"results/benchmarks/sft/sft_{{epochs}}ep.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "scripts/launch.sh {resources.gpu} scripts/train_sft.py --params {params.hp:q}"
        " --data {input.data:q} --init {input.base:q} --manifest {output.manifest:q}"
        " --log-csv {output.log_csv:q} --threads {threads} --log {log:q}"


use rule sft as base_sft with:
    input:
        code=code("scripts/train_sft.py"),
        data=get_base_sft_data,
        base=get_base_model,
    output:
        manifest="results/train/{base}_sft_{epochs}ep/manifest.json",
        log_csv="results/train/{base}_sft_{epochs}ep/log.csv",
    params:
        hp=lambda wc: hp(plan.sft_params(config, int(wc.epochs), wc.base)),
    log:
        f"{LOGS}/sft/{{base}}_sft_{{epochs}}ep.log",
    benchmark:
        "results/benchmarks/sft/{base}_sft_{epochs}ep.tsv"
    resources:
        **job_resources("base_sft", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),


rule ref_logps:
    """DPO reference log-probs of every pair under the SFT run {sft}: once, shared by all DPO runs."""
    input:
        code=code("scripts/ref_logps.py"),
        pairs=get_ref_pairs,
        init="results/train/{sft}/manifest.json",
    output:
        "results/train/ref_logps/{sft}.parquet",
    params:
        hp=lambda wc: hp(plan.ref_logps_params(config, wc.sft)),
    threads: TRAIN_THREADS
    resources:
        **job_resources("ref_logps", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),
    log:
        f"{LOGS}/ref_logps/{{sft}}.log",
    benchmark:
        f"results/benchmarks/ref_logps/{{sft}}.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "scripts/launch.sh {resources.gpu} scripts/ref_logps.py --params {params.hp:q}"
        " --pairs {input.pairs:q} --init-manifest {input.init:q} --out {output:q}"
        " --threads {threads} --log {log:q}"


rule stage2:
    """Stage 2: one run of config `runs` (objective, init SFT run, LR, alpha/beta/gamma)."""
    input:
        # the init SFT run's manifest, its pairs; reference log-probs if the objective needs them
        unpack(get_stage2_inputs),
        code=code("scripts/train_stage2.py"),
    output:
        manifest="results/train/{run}/manifest.json",
        log_csv="results/train/{run}/log.csv",
    params:
        hp=lambda wc: hp(plan.stage2_params(config, wc.run)),
        ref=lambda wc, input: shell_args("--ref-logps", input.ref),
    threads: TRAIN_THREADS
    resources:
        **job_resources("stage2", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),
    log:
        f"{LOGS}/stage2/{{run}}.log",
    benchmark:
        f"results/benchmarks/stage2/{{run}}.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "scripts/launch.sh {resources.gpu} scripts/train_stage2.py --params {params.hp:q}"
        " --pairs {input.pairs:q} --init-manifest {input.init:q} {params.ref}"
        " --manifest {output.manifest:q} --log-csv {output.log_csv:q} --threads {threads}"
        " --log {log:q}"

