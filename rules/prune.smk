# Opt-in removal of the checkpoint weights no job needs (the preset's
# prune_checkpoints; redi/model/prune.py, docs/CLUSTER.md). One local job per run, after its
# curve and every job that loads one of its checkpoints; its marker pruned.json is a
# target only when the key is on. The manifest and log stay as they are, so nothing
# upstream or downstream reruns.


localrules:
    prune,


PRUNE_RUNS = prune_plan.prune_runs(config)


rule prune:
    """Remove the weights of {prune_run}'s checkpoints that no job needs, and its resume state."""
    input:
        unpack(get_prune_inputs),
        code=code("scripts/prune_checkpoints.py"),
    output:
        marker=paths.prune_marker(),
    wildcard_constraints:
        prune_run=snakemake_helpers.one_of(PRUNE_RUNS),
    params:
        hp=lambda wc: hp(prune_plan.prune_params(config, wc.prune_run)),
    resources:
        **job_resources("prune"),
    log:
        f"{LOGS}/prune/{{prune_run}}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python scripts/prune_checkpoints.py --params {params.hp:q} --manifest {input.manifest:q}"
        " --best {input.best:q} --out {output.marker:q} --log {log:q}"
