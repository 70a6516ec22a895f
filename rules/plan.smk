# The cost plan: GPU-hours, wall time and disk of every table and figure target of
# this config, from the plan module and the paper's measured times (redi/workflow/cost_plan.py).
# Reads only the config and the package: it runs before any download, on any machine.


localrules:
    cost_plan,


rule cost_plan:
    """GPU-hours, wall time on the configured GPUs and disk per target."""
    input:
        code=code("scripts/cost_plan.py"),
        times=paths.TRAINING_TIMES,
    output:
        csv=paths.COST_PLAN["csv"],
        md=paths.COST_PLAN["md"],
    params:
        # the whole config: any key may change a job's cost
        hp=lambda wc: hp(dict(config)),
    resources:
        **job_resources("cost_plan"),
    log:
        f"{LOGS}/plan/cost.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/cost_plan.py --params {params.hp:q} --times {input.times:q}"
        " --csv {output.csv:q} --md {output.md:q} --log {log:q}"
