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
        base=paths.BASE_MODEL_DIR,
    output:
        manifest=paths.manifest("sft_{epochs}ep"),
        log_csv=paths.train_log("sft_{epochs}ep"),
    params:
        hp=lambda wc: hp(plan.sft_params(config, int(wc.epochs))),
    threads: TRAIN_THREADS
    resources:
        **job_resources("sft", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),
    log:
        f"{LOGS}/sft/sft_{{epochs}}ep.log",
    benchmark:
        paths.benchmark_tsv("sft", "sft_{epochs}ep")
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
        manifest=paths.manifest("{base}_sft_{epochs}ep"),
        log_csv=paths.train_log("{base}_sft_{epochs}ep"),
    params:
        hp=lambda wc: hp(plan.sft_params(config, int(wc.epochs), wc.base)),
    log:
        f"{LOGS}/sft/{{base}}_sft_{{epochs}}ep.log",
    benchmark:
        paths.benchmark_tsv("sft", "{base}_sft_{epochs}ep")
    resources:
        **job_resources("base_sft", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),


rule ref_logps:
    """DPO reference log-probs of every pair under the SFT run {sft}: once, shared by all DPO runs."""
    input:
        code=code("scripts/ref_logps.py"),
        pairs=get_ref_pairs,
        init=paths.manifest("{sft}"),
    output:
        paths.ref_logps(),
    params:
        hp=lambda wc: hp(plan.ref_logps_params(config, wc.sft)),
    threads: TRAIN_THREADS
    resources:
        **job_resources("ref_logps", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),
    log:
        f"{LOGS}/ref_logps/{{sft}}.log",
    benchmark:
        paths.benchmark_tsv("ref_logps", "{sft}")
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
        manifest=paths.manifest(),
        log_csv=paths.train_log(),
    params:
        hp=lambda wc: hp(plan.stage2_params(config, wc.run)),
        ref=lambda wc, input: shell_args("--ref-logps", input.ref),
    threads: TRAIN_THREADS
    resources:
        **job_resources("stage2", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),
    log:
        f"{LOGS}/stage2/{{run}}.log",
    benchmark:
        paths.benchmark_tsv("stage2", "{run}")
    conda:
        "../envs/train.yaml"
    shell:
        "scripts/launch.sh {resources.gpu} scripts/train_stage2.py --params {params.hp:q}"
        " --pairs {input.pairs:q} --init-manifest {input.init:q} {params.ref}"
        " --manifest {output.manifest:q} --log-csv {output.log_csv:q} --threads {threads}"
        " --log {log:q}"

