# The claims check: each finding the paper states (redi.report.claims.CLAIMS) as an explicit
# rule over this run's tables and curves, with its verdict and the paper's figure.
# Cheap CPU work: a local rule, never submitted to a cluster.

localrules:
    claims,


CLAIMS_INPUTS = report_plan.claims_inputs(config)


rule claims:
    """Verdict per paper claim (holds / does not hold / not enough evidence)."""
    input:
        code=code("scripts/make_claims.py"),
        tables=CLAIMS_INPUTS["tables"],
        curves=CLAIMS_INPUTS["curves"],
    output:
        csv=report(paths.CLAIMS_OUTPUTS["csv"], caption="../report/claims.rst",
                   category="Claims"),
        md=report(paths.CLAIMS_OUTPUTS["md"], caption="../report/claims.rst",
                  category="Claims"),
    params:
        hp=lambda wc: hp(report_plan.claims_spec(config)),
    resources:
        **job_resources("claims"),
    log:
        f"{LOGS}/report/claims.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/make_claims.py --params {params.hp:q} --tables {input.tables:q}"
        " --curves {input.curves:q} --csv {output.csv:q} --md {output.md:q} --log {log:q}"
