# Tables 1-2 (pass@1 ± SEM, pass@16), the comparison with the paper's numbers,
# the grader agreement table, Figures 2-8 and the HTML report
# (`snakemake --report results/report.html`).
# Cheap CPU work: local rules, never submitted to a cluster.
#
# Table and comparison jobs import redi/reporting.py, figure jobs
# redi/plotting.py: editing one replans only its own jobs.

from redi import reporting


localrules:
    table1,
    table2,
    paper_comparison,
    grader_agreement,
    fig2,
    fig3,
    fig4,
    fig5,
    fig6,
    fig7,
    fig8,


TABLE_OUTPUTS = [
    f"results/{t}{suffix}.{ext}"
    for t in ("table1", "table2")
    for suffix in ("", "_pass16")
    for ext in ("csv", "md")
]
FIGURES = [f"fig{n}" for n in range(2, 9)]
# job parameters: built in redi/reporting.py (table_spec, figure_params)
TABLE_SPECS = {t: reporting.table_spec(config, t, TABLE2_GROUPS) for t in ("table1", "table2")}
AGREEMENT_SPEC = reporting.agreement_spec(config, TABLE_SPECS)
AGREEMENT_OUTPUTS = ["results/grader_agreement.csv", "results/grader_disagreements.csv",
                     "results/grader_agreement.md"]

ALL_TARGETS.extend(
    TABLE_OUTPUTS
    + ["results/paper_comparison.csv", "results/paper_comparison.md"]
    + AGREEMENT_OUTPUTS
    + [f"results/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
)


# ----------------------------------------------------------------- tables

for _table in ("table1", "table2"):

    rule:
        name:
            _table
        input:
            code=code("scripts/make_tables.py"),
            summaries=[f"results/eval/final/{row['label']}/summary.json"
                       for row in TABLE_SPECS[_table]["rows"]],
        output:
            csv=report(f"results/{_table}.csv", caption=f"../report/{_table}.rst",
                       category="Tables", subcategory=_table.replace("table", "Table ")),
            md=report(f"results/{_table}.md", caption=f"../report/{_table}.rst",
                      category="Tables", subcategory=_table.replace("table", "Table ")),
            pass16_csv=report(f"results/{_table}_pass16.csv",
                              caption=f"../report/{_table}_pass16.rst", category="Tables",
                              subcategory=_table.replace("table", "Table ")),
            pass16_md=report(f"results/{_table}_pass16.md",
                             caption=f"../report/{_table}_pass16.rst", category="Tables",
                             subcategory=_table.replace("table", "Table ")),
        params:
            hp=lambda wc, t=_table: hp(TABLE_SPECS[t]),
        log:
            f"{LOGS}/report/{_table}.log",
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
        reported="redi/data/reported_results.csv",
        training_times="redi/data/training_times.csv",
        manifests=[f"results/train/{r}/manifest.json" for r in SFT_RUNS + STAGE2_RUNS],
        table1=rules.table1.output.csv,
        table2=rules.table2.output.csv,
        table1_pass16=rules.table1.output.pass16_csv,
        table2_pass16=rules.table2.output.pass16_csv,
    output:
        csv=report("results/paper_comparison.csv", caption="../report/paper_comparison.rst",
                   category="Paper comparison"),
        md=report("results/paper_comparison.md", caption="../report/paper_comparison.rst",
                  category="Paper comparison"),
    params:
        hp=lambda wc: hp(reporting.comparison_params(config)),
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


rule grader_agreement:
    """The tables' grader vs Math-Verify's verdict on every final-evaluation sample."""
    input:
        code=code("scripts/grader_agreement.py"),
        samples=[f"results/eval/final/{row['label']}/{b['name']}.parquet"
                 for row in AGREEMENT_SPEC["rows"] for b in AGREEMENT_SPEC["benchmarks"]],
    output:
        csv=report(AGREEMENT_OUTPUTS[0], caption="../report/grader_agreement.rst",
                   category="Grader agreement"),
        examples=report(AGREEMENT_OUTPUTS[1], caption="../report/grader_agreement.rst",
                        category="Grader agreement"),
        md=report(AGREEMENT_OUTPUTS[2], caption="../report/grader_agreement.rst",
                  category="Grader agreement"),
    params:
        hp=lambda wc: hp(AGREEMENT_SPEC),
    log:
        f"{LOGS}/report/grader_agreement.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/grader_agreement.py --params {params.hp:q} --samples {input.samples:q}"
        " --csv {output.csv:q} --examples {output.examples:q} --md {output.md:q} --log {log:q}"


# ---------------------------------------------------------------- figures


rule fig2:
    """SFT accuracy vs epoch (both SFT runs)."""
    input:
        code=code("scripts/make_figure.py"),
        curves=[f"results/eval/curves/{r}.csv" for r in reporting.figure_runs(config, "fig2")],
    output:
        png=report("results/figures/fig2.png", caption="../report/fig2.rst",
                   category="Figures"),
        pdf="results/figures/fig2.pdf",
    params:
        hp=lambda wc: hp(reporting.figure_params(config, "fig2")),
    log:
        f"{LOGS}/report/fig2.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_figure.py --params {params.hp:q} --curves {input.curves:q}"
        " --png {output.png:q} --pdf {output.pdf:q} --log {log:q}"


rule fig4:
    """DPO accuracy vs step, LR sweeps split by β."""
    input:
        code=code("scripts/make_figure.py"),
        curves=[f"results/eval/curves/{r}.csv" for r in reporting.figure_runs(config, "fig4")],
    output:
        png=report("results/figures/fig4.png", caption="../report/fig4.rst",
                   category="Figures"),
        pdf="results/figures/fig4.pdf",
    params:
        hp=lambda wc: hp(reporting.figure_params(config, "fig4")),
    log:
        f"{LOGS}/report/fig4.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_figure.py --params {params.hp:q} --curves {input.curves:q}"
        " --png {output.png:q} --pdf {output.pdf:q} --log {log:q}"


# training dynamics: accuracy, chosen/rejected LogPS, update norm vs step
for _fig in ("fig3", "fig5", "fig6", "fig7"):

    rule:
        name:
            _fig
        input:
            code=code("scripts/make_figure.py"),
            curves=[f"results/eval/curves/{r}.csv" for r in reporting.figure_runs(config, _fig)],
            logs=[f"results/train/{r}/log.csv" for r in reporting.figure_runs(config, _fig)],
        output:
            png=report(f"results/figures/{_fig}.png", caption=f"../report/{_fig}.rst",
                       category="Figures"),
            pdf=f"results/figures/{_fig}.pdf",
        params:
            hp=lambda wc, f=_fig: hp(reporting.figure_params(config, f)),
        log:
            f"{LOGS}/report/{_fig}.log",
        conda:
            "../envs/report.yaml"
        shell:
            "python scripts/make_figure.py --params {params.hp:q} --curves {input.curves:q}"
            " --logs {input.logs:q} --png {output.png:q} --pdf {output.pdf:q} --log {log:q}"


rule fig8:
    """Generation statistics vs REDI training step."""
    input:
        code=code("scripts/make_figure.py"),
        genstats=f"results/eval/genstats/{config['figures']['fig8']}.csv",
    output:
        png=report("results/figures/fig8.png", caption="../report/fig8.rst",
                   category="Figures"),
        pdf="results/figures/fig8.pdf",
    params:
        hp=lambda wc: hp(reporting.figure_params(config, "fig8")),
    log:
        f"{LOGS}/report/fig8.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_figure.py --params {params.hp:q} --genstats {input.genstats:q}"
        " --png {output.png:q} --pdf {output.pdf:q} --log {log:q}"
