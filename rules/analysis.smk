# Token-level analysis of a REDI run (paper appendix E): Figure 9's entropy of
# every checkpoint and Figure 10's per-token log-probs, one job per run, whose two
# outputs both figures reuse (redi/eval/token_analysis.py). The generated sample type
# reuses the run's gen_stats responses (Figure 8's generations): nothing is
# generated again. Which pairs and generations: the preset's analysis.selection
# (`paper`: the prompts listed in redi/report/paper/paper_sample.csv, an input so that an
# edit of the list reruns the job). A forward-only pass over each checkpoint: GPUs
# on the cluster, sharded over the job's processes (scripts/launch.sh).


rule token_analysis:
    """Entropy per sample type of every checkpoint of {run}, and its chosen responses'
    per-token log-probs before and after REDI."""
    input:
        code=code("scripts/token_analysis.py"),
        paper_sample=paths.PAPER_SAMPLE,
        manifest=paths.manifest(),
        pairs=rules.length_filter.output.pairs,
        responses=paths.genstats_responses(),
        bench=names.benchmarks_dir(config),
    output:
        entropy=paths.entropy(),
        tokens=paths.token_logps(),
    params:
        hp=lambda wc: hp(plan.analysis_params(config)),
    threads: TRAIN_THREADS
    resources:
        **job_resources("token_analysis", gpu=TRAIN_GPUS, threads=TRAIN_THREADS),
    log:
        f"{LOGS}/token_analysis/{{run}}.log",
    benchmark:
        paths.benchmark_tsv("token_analysis", "{run}")
    conda:
        "../envs/train.yaml"
    shell:
        "scripts/launch.sh {resources.gpu} scripts/token_analysis.py --params {params.hp:q}"
        " --manifest {input.manifest:q} --pairs {input.pairs:q}"
        " --responses {input.responses:q} --entropy {output.entropy:q}"
        " --tokens {output.tokens:q} --threads {threads} --log {log:q}"
