# Data stages: raw corpus -> filters and pairing -> length filter -> report;
# plus the base model (and, for the tiny preset, its tokenizer).


localrules:
    download_raw,
    base_model,  # paper: a Hub download (compute nodes may be offline), tiny: seconds of CPU
    data_report,


rule toy_corpus:
    """Generate the toy corpus (OpenR1-Math-Raw schema) and the toy benchmarks."""
    input:
        code=code("scripts/toy_corpus.py"),
    output:
        corpus="results/data/raw_toy.parquet",
        benchmarks=directory("results/data/toy_benchmarks"),
    params:
        hp=lambda wc: hp(rc.toy_params(config)),
    threads: 2
    resources:
        **slurm_placement(),
    log:
        f"{LOGS}/toy_corpus.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/toy_corpus.py --params {params.hp:q} --corpus {output.corpus:q}"
        " --benchmarks {output.benchmarks:q} --threads {threads} --log {log:q}"


rule download_raw:
    """open-r1/OpenR1-Math-Raw from the Hub at the preset's raw_data_revision, as one
    parquet file; raw_hub.download.json records the commit it resolved to."""
    input:
        code=code("scripts/download_raw.py"),
    output:
        corpus="results/data/raw_hub.parquet",
        record="results/data/raw_hub.download.json",
    params:
        hp=lambda wc: hp(rc.raw_download_params(config)),
    log:
        f"{LOGS}/download_raw.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/download_raw.py --params {params.hp:q} --out {output.corpus:q}"
        " --record {output.record:q} --log {log:q}"


rule base_model:
    """Paper: Qwen2.5-Math-1.5B with the authors' config edits. Tiny: tokenizer + Qwen2 init."""
    input:
        code=code("scripts/base_model.py"),
        corpus=lambda wc: (
            ["results/data/raw_toy.parquet"] if PRESET["base_model"]["source"] == "tiny" else []
        ),
    output:
        directory("results/models/base"),
    params:
        hp=lambda wc: hp(rc.base_model_params(config)),
        corpus=lambda wc, input: shell_args("--corpus", input.corpus),
    threads: 2
    log:
        f"{LOGS}/base_model.log",
    benchmark:
        "results/benchmarks/base_model.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/base_model.py --params {params.hp:q} {params.corpus} --out {output:q}"
        " --threads {threads} --log {log:q}"


rule filter_data:
    """The authors' filters, the dual-verifier rule, D_SFT and D_Pref (before the length filter)."""
    priority: 50  # cheap, and on the critical path to every stage-2 run
    input:
        code=code("scripts/filter_data.py"),
        raw=raw_corpus_path(),
    output:
        sft="results/data/sft.parquet",
        pairs="results/data/pairs_unfiltered.parquet",
        report="results/data/filter_report.json",
    params:
        hp=lambda wc: hp(rc.filter_params(config)),
    resources:
        **slurm_placement(),
    log:
        f"{LOGS}/filter_data.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/filter_data.py --params {params.hp:q} --raw {input.raw:q}"
        " --sft {output.sft:q} --pairs {output.pairs:q} --report {output.report:q} --log {log:q}"


rule length_filter:
    """Prompt/response token limits on the pairs; token-length statistics."""
    priority: 50
    input:
        code=code("scripts/length_filter.py"),
        tokenizer="results/models/base",
        sft=rules.filter_data.output.sft,
        pairs=rules.filter_data.output.pairs,
    output:
        pairs="results/data/pairs.parquet",
        report="results/data/length_report.json",
    params:
        hp=lambda wc: hp(rc.length_filter_params(config)),
    resources:
        **slurm_placement(),
    log:
        f"{LOGS}/length_filter.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/length_filter.py --params {params.hp:q} --tokenizer {input.tokenizer:q}"
        " --sft {input.sft:q} --pairs-in {input.pairs:q} --pairs-out {output.pairs:q}"
        " --report {output.report:q} --log {log:q}"


rule verify_labels:
    """Optional: re-run Math-Verify on every generation; agreement with the corpus labels."""
    input:
        code=code("scripts/verify_labels.py"),
        raw=raw_corpus_path(),
    output:
        "results/data/verify_report.json",
    params:
        hp=lambda wc: hp(rc.verify_params(config)),
    threads: 2
    resources:
        **slurm_placement(),
    log:
        f"{LOGS}/verify_labels.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/verify_labels.py --params {params.hp:q} --raw {input.raw:q}"
        " --out {output:q} --threads {threads} --log {log:q}"


rule data_report:
    """results/data/report.json: counts at every step, sizes, token-length percentiles."""
    input:
        code=code("scripts/data_report.py"),
        filter=rules.filter_data.output.report,
        length=rules.length_filter.output.report,
        verify=rules.verify_labels.output if config["verify_labels"] else [],
    output:
        "results/data/report.json",
    params:
        verify=lambda wc, input: shell_args("--verify", input.verify),
    log:
        f"{LOGS}/data_report.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/data_report.py --filter {input.filter:q} --length {input.length:q}"
        " {params.verify} --out {output:q} --log {log:q}"
