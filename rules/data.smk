# Data stages: raw corpus -> filters and pairing -> length filter -> report; the
# tokenizer (all the data stages need) and the base model (which training needs).


localrules:
    download_raw,
    data_report,
    toy_ood,
    validate_benchmarks,
    validate_ood,


# The base models and their tokenizers: Hub downloads run where snakemake runs (compute
# nodes may be offline); generated ones (tiny: pretraining, minutes of CPU) are submitted
# like any job. A cluster run does not limit its local jobs to the local cores.
if plan.downloads_base_models(config):

    localrules:
        tokenizer,
        base_model,


if plan.downloads_base_models(config, others=True):

    localrules:
        base_tokenizer,
        other_base_model,


# Table 5's generated out-of-domain sets (tiny preset)
TOY_OOD = ood_plan.ood_names(config, source="toy")


rule toy_corpus:
    """Generate the toy corpus (OpenR1-Math-Raw schema) and the toy benchmarks."""
    input:
        code=code("scripts/toy_corpus.py"),
    output:
        corpus=paths.RAW_PATHS["toy"],
        benchmarks=directory(paths.TOY_BENCHMARKS_DIR),
    params:
        hp=lambda wc: hp(plan.toy_params(config)),
    threads: 2
    resources:
        **job_resources("toy_corpus", threads=2),
    log:
        f"{LOGS}/toy_corpus.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/toy_corpus.py --params {params.hp:q} --corpus {output.corpus:q}"
        " --benchmarks {output.benchmarks:q} --threads {threads} --log {log:q}"


rule toy_ood:
    """Tiny preset, Table 5: a generated out-of-domain set {ood_toy} (toy code problems in
    HumanEval's schema, or multiple-choice questions in GPQA's that the toy corpus and
    benchmarks never ask), deterministic in the preset's toy seed."""
    input:
        unpack(get_toy_ood_inputs),
        code=code("scripts/toy_ood.py"),
    output:
        f"{paths.OOD_TOY_DIR}/{{ood_toy}}.jsonl",
    wildcard_constraints:
        ood_toy=snakemake_helpers.one_of(TOY_OOD),
    params:
        hp=lambda wc: hp(ood_plan.toy_ood_params(config, wc.ood_toy)),
        inputs=lambda wc, input: shell_args("--corpus", input.corpus) + " "
        + shell_args("--benchmarks", input.benchmarks),
    resources:
        **job_resources("toy_ood"),
    log:
        f"{LOGS}/toy_ood/{{ood_toy}}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/toy_ood.py --params {params.hp:q} {params.inputs} --out {output:q}"
        " --log {log:q}"


rule download_raw:
    """open-r1/OpenR1-Math-Raw from the Hub at the preset's raw_data_revision, as one
    parquet file; raw_hub.download.json records the commit it resolved to."""
    input:
        code=code("scripts/download_raw.py"),
    output:
        corpus=paths.RAW_PATHS["hub"],
        record=paths.RAW_DOWNLOAD_RECORD,
    params:
        hp=lambda wc: hp(plan.raw_download_params(config)),
    resources:
        **job_resources("download_raw"),
    log:
        f"{LOGS}/download_raw.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/download_raw.py --params {params.hp:q} --out {output.corpus:q}"
        " --record {output.record:q} --log {log:q}"


rule tokenizer:
    """Paper: the tokenizer files of Qwen2.5-Math-1.5B at its revision. Tiny: a BPE
    tokenizer trained on the toy corpus."""
    input:
        code=code("scripts/tokenizer.py"),
        corpus=get_tokenizer_corpus,
    output:
        directory(paths.TOKENIZER_DIR),
    params:
        hp=lambda wc: hp(plan.tokenizer_params(config)),
        corpus=lambda wc, input: shell_args("--corpus", input.corpus),
    threads: 2
    resources:
        **job_resources("tokenizer", threads=2),
    log:
        f"{LOGS}/tokenizer.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/tokenizer.py --params {params.hp:q} {params.corpus} --out {output:q}"
        " --log {log:q}"


rule base_model:
    """Paper: Qwen2.5-Math-1.5B with the authors' config edits. Tiny: a Qwen2 init,
    briefly pretrained. Both with the tokenizer stage's files."""
    input:
        code=code("scripts/base_model.py"),
        tokenizer=paths.TOKENIZER_DIR,
    output:
        directory(paths.BASE_MODEL_DIR),
    params:
        hp=lambda wc: hp(plan.base_model_params(config)),
    threads: 2
    resources:
        **job_resources("base_model", threads=2),
    log:
        f"{LOGS}/base_model.log",
    benchmark:
        paths.benchmark_tsv("base_model", "primary")
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/base_model.py --params {params.hp:q} --tokenizer {input.tokenizer:q}"
        " --out {output:q} --threads {threads} --log {log:q}"


use rule tokenizer as base_tokenizer with:
    input:
        code=code("scripts/tokenizer.py"),
        corpus=get_base_tokenizer_corpus,
    output:
        directory(paths.TOKENIZER_DIRS),
    params:
        hp=lambda wc: hp(plan.tokenizer_params(config, wc.base)),
        corpus=lambda wc, input: shell_args("--corpus", input.corpus),
    log:
        f"{LOGS}/tokenizer_{{base}}.log",
    resources:
        **job_resources("base_tokenizer", threads=2),


use rule base_model as other_base_model with:
    input:
        code=code("scripts/base_model.py"),
        tokenizer=get_base_tokenizer,
    output:
        directory(paths.BASE_MODEL_DIRS),
    params:
        hp=lambda wc: hp(plan.base_model_params(config, wc.base)),
    log:
        f"{LOGS}/base_model_{{base}}.log",
    benchmark:
        paths.benchmark_tsv("base_model", "{base}")
    resources:
        **job_resources("other_base_model", threads=2),


rule filter_data:
    """The authors' filters, the dual-verifier rule, D_SFT and D_Pref (before the length filter)."""
    priority: 50  # cheap, and on the critical path to every stage-2 run
    input:
        code=code("scripts/filter_data.py"),
        raw=plan.raw_corpus_path(config),
    output:
        sft=paths.SFT_UNFILTERED,
        pairs=paths.PAIRS_UNFILTERED,
        report=paths.FILTER_REPORT,
    params:
        hp=lambda wc: hp(plan.filter_params(config)),
    resources:
        **job_resources("filter_data"),
    log:
        f"{LOGS}/filter_data.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/filter_data.py --params {params.hp:q} --raw {input.raw:q}"
        " --sft {output.sft:q} --pairs {output.pairs:q} --report {output.report:q} --log {log:q}"


rule sft_length:
    """The SFT length rule (sft.max_length): longer examples counted (truncated at training,
    as the authors'), those whose prompt alone fills it dropped. Its own job, so that the
    pairs' limits never rewrite sft.parquet (and rerun SFT)."""
    priority: 50
    input:
        code=code("scripts/sft_length.py"),
        tokenizer=paths.TOKENIZER_DIR,
        sft=rules.filter_data.output.sft,
        filter_report=rules.filter_data.output.report,
    output:
        sft=paths.SFT_DATA,
        report=paths.SFT_LENGTH_REPORT,
    params:
        hp=lambda wc: hp(plan.sft_length_params(config)),
    resources:
        **job_resources("sft_length"),
    log:
        f"{LOGS}/sft_length.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/sft_length.py --params {params.hp:q} --tokenizer {input.tokenizer:q}"
        " --sft-in {input.sft:q} --sft-out {output.sft:q}"
        " --filter-report {input.filter_report:q} --report {output.report:q} --log {log:q}"


rule length_filter:
    """Prompt/response token limits on the pairs; token-length statistics."""
    priority: 50
    input:
        code=code("scripts/length_filter.py"),
        tokenizer=paths.TOKENIZER_DIR,
        pairs=rules.filter_data.output.pairs,
        filter_report=rules.filter_data.output.report,
    output:
        pairs=paths.PAIRS,
        report=paths.LENGTH_REPORT,
    params:
        hp=lambda wc: hp(plan.length_filter_params(config)),
    resources:
        **job_resources("length_filter"),
    log:
        f"{LOGS}/length_filter.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/length_filter.py --params {params.hp:q} --tokenizer {input.tokenizer:q}"
        " --pairs-in {input.pairs:q} --pairs-out {output.pairs:q}"
        " --filter-report {input.filter_report:q} --report {output.report:q} --log {log:q}"


# Table 4: the token-length stages once per tokenizer (a base model with its own)
use rule sft_length as base_sft_length with:
    input:
        code=code("scripts/sft_length.py"),
        tokenizer=paths.TOKENIZER_DIRS,
        sft=rules.filter_data.output.sft,
        filter_report=rules.filter_data.output.report,
    output:
        sft=f"{paths.TOKENIZER_DATA}/sft.parquet",
        report=f"{paths.TOKENIZER_DATA}/sft_length_report.json",
    log:
        f"{LOGS}/sft_length_{{base}}.log",
    resources:
        **job_resources("base_sft_length"),


use rule length_filter as base_length_filter with:
    input:
        code=code("scripts/length_filter.py"),
        tokenizer=paths.TOKENIZER_DIRS,
        pairs=rules.filter_data.output.pairs,
        filter_report=rules.filter_data.output.report,
    output:
        pairs=f"{paths.TOKENIZER_DATA}/pairs.parquet",
        report=f"{paths.TOKENIZER_DATA}/length_report.json",
    log:
        f"{LOGS}/length_filter_{{base}}.log",
    resources:
        **job_resources("base_length_filter"),


rule verify_labels:
    """Optional: re-run Math-Verify on every generation; agreement with the corpus labels."""
    input:
        code=code("scripts/verify_labels.py"),
        raw=plan.raw_corpus_path(config),
    output:
        paths.VERIFY_REPORT,
    params:
        hp=lambda wc: hp(plan.verify_params(config)),
    threads: 2
    resources:
        **job_resources("verify_labels", threads=2),
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
        sft_length=rules.sft_length.output.report,
        verify=rules.verify_labels.output if config["verify_labels"] else [],
    output:
        paths.DATA_REPORT,
    params:
        verify=lambda wc, input: shell_args("--verify", input.verify),
    resources:
        **job_resources("data_report"),
    log:
        f"{LOGS}/data_report.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/data_report.py --filter {input.filter:q} --length {input.length:q}"
        " --sft-length {input.sft_length:q} {params.verify} --out {output:q} --log {log:q}"


rule validate_benchmarks:
    """Every math benchmark file checked against its schema (UTF-8, well-formed, unique
    ids, non-empty problems, gradable answers) before any generation job: a bad file
    stops the workflow naming the file, the item and the rule."""
    input:
        bench=names.benchmarks_dir(config),
        code=code("scripts/validate_benchmarks.py"),
    output:
        paths.BENCHMARKS_VALID,
    params:
        hp=lambda wc: hp(plan.benchmark_validation_params(config)),
    resources:
        **job_resources("validate_benchmarks"),
    log:
        f"{LOGS}/validate_benchmarks.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/validate_benchmarks.py --params {params.hp:q} --out {output:q} --log {log:q}"


rule validate_ood:
    """The out-of-domain files (Table 5) checked the same way before any ood_eval job."""
    input:
        ood=[b["path"] for b in ood_plan.ood_benchmarks(config) if b["path"]],
        code=code("scripts/validate_benchmarks.py"),
    output:
        paths.OOD_VALID,
    params:
        hp=lambda wc: hp(ood_plan.ood_validation_params(config)),
    resources:
        **job_resources("validate_ood"),
    log:
        f"{LOGS}/validate_ood.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python scripts/validate_benchmarks.py --params {params.hp:q} --out {output:q} --log {log:q}"
