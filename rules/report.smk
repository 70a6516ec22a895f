# Tables (pass@1 ± SEM, pass@16; Table 3's cost, Table 5's out-of-domain results), the
# comparison with the paper's numbers, the grader agreement table, the figures and the
# HTML report
# (`snakemake --report results/report.html`). Tables and figures come from their
# registries (redi.workflow.report_plan.TABLES, redi.report.plotting.FIGURES), one wildcard rule each; a
# caption is report/<name>.rst, looked up by name (redi.workflow.snakemake_helpers.Caption).
# Cheap CPU work: local rules, never submitted to a cluster.
#
# Table and comparison jobs import redi/report/, figure jobs
# redi/report/plotting.py: editing one replans only its own jobs.

from redi.report.plotting import FIGURES


localrules:
    table,
    table3,
    table5,
    token_correlation,
    paper_comparison,
    grader_agreement,
    figure,


TABLE_SPECS = {t: report_plan.table_spec(config, t) for t in report_plan.tables(config)}


rule table:
    """A table of redi.workflow.report_plan.TABLES: pass@1 ± SEM and pass@16, as CSV and markdown."""
    input:
        code=code("scripts/make_tables.py"),
        summaries=get_table_inputs,
    output:
        csv=report(paths.table_outputs()["csv"], caption="../report/lookup/caption.rst",
                   category="Tables", subcategory=lambda wc: report_plan.TABLES[wc.table].title),
        md=report(paths.table_outputs()["md"], caption="../report/lookup/caption.rst",
                  category="Tables", subcategory=lambda wc: report_plan.TABLES[wc.table].title),
        pass16_csv=report(paths.table_outputs()["pass16_csv"],
                          caption="../report/lookup/caption_pass16.rst", category="Tables",
                          subcategory=lambda wc: report_plan.TABLES[wc.table].title),
        pass16_md=report(paths.table_outputs()["pass16_md"],
                         caption="../report/lookup/caption_pass16.rst", category="Tables",
                         subcategory=lambda wc: report_plan.TABLES[wc.table].title),
    wildcard_constraints:
        table=snakemake_helpers.one_of(report_plan.tables(config)),
    params:
        hp=lambda wc: hp(TABLE_SPECS[wc.table]),
        caption=lambda wc, output: snakemake_helpers.Caption(workflow.basedir, wc.table),
        caption_pass16=lambda wc, output: snakemake_helpers.Caption(workflow.basedir, f"{wc.table}_pass16"),
    resources:
        **job_resources("table"),
    log:
        f"{LOGS}/report/{{table}}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_tables.py --params {params.hp:q} --summaries {input.summaries:q}"
        " --csv {output.csv:q} --md {output.md:q} --pass16-csv {output.pass16_csv:q}"
        " --pass16-md {output.pass16_md:q} --log {log:q}"


rule paper_comparison:
    """Reproduced vs reported value for every cell the paper reports; training times."""
    input:
        code=code("scripts/paper_comparison.py"),
        reported=paths.REPORTED_RESULTS,
        training_times=paths.TRAINING_TIMES,
        manifests=[paths.manifest(r) for r in SFT_RUNS + plan.stage2_runs(config, primary_only=True)],
        table1=paths.table_outputs("table1")["csv"],
        table2=paths.table_outputs("table2")["csv"],
        table1_pass16=paths.table_outputs("table1")["pass16_csv"],
        table2_pass16=paths.table_outputs("table2")["pass16_csv"],
    output:
        csv=report(paths.PAPER_COMPARISON["csv"], caption="../report/paper_comparison.rst",
                   category="Paper comparison"),
        md=report(paths.PAPER_COMPARISON["md"], caption="../report/paper_comparison.rst",
                  category="Paper comparison"),
    params:
        hp=lambda wc: hp(report_plan.comparison_params(config)),
    resources:
        **job_resources("paper_comparison"),
    log:
        f"{LOGS}/report/paper_comparison.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/paper_comparison.py --params {params.hp:q} --reported {input.reported:q}"
        " --table1 {input.table1:q} --table2 {input.table2:q}"
        " --table1-pass16 {input.table1_pass16:q} --table2-pass16 {input.table2_pass16:q}"
        " --training-times {input.training_times:q} --manifests {input.manifests:q}"
        " --csv {output.csv:q} --md {output.md:q} --log {log:q}"


TABLE3_SPEC = report_plan.table3_spec(config)


rule table3:
    """Table 3: training cost per run (wall time, devices, device-hours, tokens/s, MFU)
    from the jobs' benchmark files, logs and manifests, beside the paper's."""
    input:
        code=code("scripts/make_table3.py"),
        records=report_plan.table3_inputs(TABLE3_SPEC),
        training_times=paths.TRAINING_TIMES,
    output:
        csv=report(paths.TABLE3_OUTPUTS["csv"], caption="../report/table3.rst",
                   category="Tables", subcategory="Table 3"),
        md=report(paths.TABLE3_OUTPUTS["md"], caption="../report/table3.rst",
                  category="Tables", subcategory="Table 3"),
    params:
        hp=lambda wc: hp(TABLE3_SPEC),
    resources:
        **job_resources("table3"),
    log:
        f"{LOGS}/report/table3.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_table3.py --params {params.hp:q}"
        " --training-times {input.training_times:q} --csv {output.csv:q} --md {output.md:q}"
        " --log {log:q}"


rule table5:
    """Table 5 (appendix D.2): out-of-domain pass@1 ± SEM of tables.table5's models and the
    relative improvement over its first, beside the paper's (+26.8 % GPQA, +181.2 % HumanEval)."""
    input:
        code=code("scripts/make_table5.py"),
        summaries=ood_plan.table5_inputs(config),
    output:
        csv=report(paths.TABLE5_OUTPUTS["csv"], caption="../report/table5.rst",
                   category="Tables", subcategory="Table 5"),
        md=report(paths.TABLE5_OUTPUTS["md"], caption="../report/table5.rst",
                  category="Tables", subcategory="Table 5"),
    params:
        hp=lambda wc: hp(ood_plan.table5_spec(config)),
    resources:
        **job_resources("table5"),
    log:
        f"{LOGS}/report/table5.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_table5.py --params {params.hp:q} --summaries {input.summaries:q}"
        " --csv {output.csv:q} --md {output.md:q} --log {log:q}"


rule token_correlation:
    """Figure 10's Pearson r and token counts (frequency >= 1 and >= 10) as a CSV."""
    input:
        code=code("scripts/token_correlation.py"),
        tokens=paths.FIGURE_INPUTS["token_logps"].format(run=config["figures"]["fig10"]),
    output:
        report(paths.TOKEN_CORRELATION, caption="../report/fig10.rst", category="Figures"),
    params:
        hp=lambda wc: hp({"run": config["figures"]["fig10"]}),
    resources:
        **job_resources("token_correlation"),
    log:
        f"{LOGS}/report/token_correlation.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/token_correlation.py --params {params.hp:q} --tokens {input.tokens:q}"
        " --out {output:q} --log {log:q}"


rule grader_agreement:
    """The tables' grader vs Math-Verify's verdict on every final-evaluation sample."""
    input:
        code=code("scripts/grader_agreement.py"),
        samples=report_plan.agreement_inputs(config),
    output:
        csv=report(paths.AGREEMENT_OUTPUTS["csv"], caption="../report/grader_agreement.rst",
                   category="Grader agreement"),
        examples=report(paths.AGREEMENT_OUTPUTS["examples"],
                        caption="../report/grader_agreement.rst", category="Grader agreement"),
        md=report(paths.AGREEMENT_OUTPUTS["md"], caption="../report/grader_agreement.rst",
                  category="Grader agreement"),
    params:
        hp=lambda wc: hp(report_plan.agreement_spec(config)),
    resources:
        **job_resources("grader_agreement"),
    log:
        f"{LOGS}/report/grader_agreement.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/grader_agreement.py --params {params.hp:q} --samples {input.samples:q}"
        " --csv {output.csv:q} --examples {output.examples:q} --md {output.md:q} --log {log:q}"


rule figure:
    """A figure of redi.report.plotting.FIGURES as PNG and PDF; its inputs are those its
    registry entry reads (curves, training logs, generation statistics)."""
    input:
        unpack(get_figure_inputs),
        code=code("scripts/make_figure.py"),
    output:
        png=report(paths.figure(), caption="../report/lookup/caption.rst",
                   category="Figures"),
        pdf=paths.figure(ext="pdf"),
    wildcard_constraints:
        figure=snakemake_helpers.one_of(FIGURES),
    params:
        hp=lambda wc: hp(report_plan.figure_params(config, wc.figure)),
        inputs=lambda wc, input: report_plan.figure_args(input),
        caption=lambda wc, output: snakemake_helpers.Caption(workflow.basedir, wc.figure),
    resources:
        **job_resources("figure"),
    log:
        f"{LOGS}/report/{{figure}}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_figure.py --params {params.hp:q} {params.inputs}"
        " --png {output.png:q} --pdf {output.pdf:q} --log {log:q}"
