"""Pruning checkpoints (redi.model.prune, rule prune): exactly which files go and which stay,
with sizes computed by hand, the marker, the error a job gets for a removed checkpoint,
and in a copy of the workflow that the prune jobs are planned only with the key on and
that nothing reruns after pruning."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import yaml

from redi.eval import evaluation
from redi.io import FileIntegrityError, read_json, write_json
from redi.model import prune
from redi.model.checkpoints import (
    PRUNE_MARKER,
    PrunedCheckpointError,
    check_model_folder,
    init_checkpoint,
)
from redi.model.models import load_causal_lm, load_tokenizer
from redi.train import training
from redi.workflow import config as rc
from redi.workflow import cost_plan, default_target, names, paths, plan, prune_plan, report_plan
from tests.conftest import ROOT, copy_workflow, planned_jobs, snakemake
from tests.support.training import Interrupt, kill_after, sft_params

RUN = "sft_3ep"  # a run of the tiny preset, so the workflow test can prune it
RUN_DIR = Path("results/train") / RUN
# 20 toy rows, global batch 8: 3 steps an epoch, 6 in all; a checkpoint at every step
PARAMS = sft_params(run=RUN, save_every_steps=1)
STEPS = [1, 2, 3, 4, 5, 6]
BEST = 3
LEFT = (2, 6)  # checkpoints given a resume state that a deletion left behind


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> Path:
    """A finished run under ``results/train/sft_3ep`` of a folder, its manifest naming
    its checkpoints by relative paths (as in the workflow): copy the folder to use it."""
    root = tmp_path_factory.mktemp("prune_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        training.run_sft(PARAMS, tiny["sft"], tiny["base"], RUN_DIR / "manifest.json",
                         RUN_DIR / "log.csv")
    return root


@pytest.fixture(scope="module")
def resume_state(tiny, tmp_path_factory) -> Path:
    """The resume state of a run killed after step 2 (a finished run deletes its own)."""
    run_dir = tmp_path_factory.mktemp("prune_killed") / "killed"
    with pytest.raises(Interrupt):
        training.run_sft(PARAMS, tiny["sft"], tiny["base"], run_dir / "manifest.json",
                         run_dir / "log.csv", hooks=kill_after(2))
    return run_dir / "checkpoints" / "step-000002" / "resume"


@pytest.fixture
def run(trained, resume_state, tmp_path, monkeypatch) -> Path:
    """A copy of the trained run with its best checkpoint, the working directory its
    root; checkpoints ``LEFT`` hold a resume state that an interrupted deletion left."""
    shutil.copytree(trained / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    for step in LEFT:
        shutil.copytree(resume_state, ckpt(step) / "resume")
    write_best(Path("results/eval/curves") / f"{RUN}.best.json", BEST)
    return RUN_DIR


def write_best(path: Path, step: int) -> None:
    write_json(path, {"run": RUN, "step": step, "epoch": 1.0, "accuracy": 0.5,
                      "checkpoint": str(ckpt(step))})


def ckpt(step: int) -> Path:
    return RUN_DIR / "checkpoints" / f"step-{step:06d}"


def files_under(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file()}


def mtimes(folder: Path) -> dict[str, int]:
    """The mtime of ``folder`` and every folder and file under it."""
    return {p.as_posix(): p.stat().st_mtime_ns for p in [folder, *folder.rglob("*")]}


def prune_now(every: bool = False) -> dict:
    return prune.prune_run(RUN_DIR / "manifest.json", f"results/eval/curves/{RUN}.best.json",
                           every, RUN_DIR / PRUNE_MARKER)


def weights_bytes() -> int:
    """A tiny checkpoint's model.safetensors by hand: the 8-byte header length, the JSON
    header, then every parameter in fp32 (CPU training), counted as the planner counts."""
    arch = {**json.loads((ckpt(6) / "config.json").read_text()), "tied": True}
    header = (ckpt(6) / "model.safetensors").read_bytes()[:8]  # the final one: always kept
    return 8 + struct.unpack("<Q", header)[0] + 4 * cost_plan.parameters(arch)


# ------------------------------------------------------------- what is kept


def test_kept_steps_is_final_and_best_or_every_one():
    assert prune.kept_steps(STEPS, 3, every=False) == [3, 6]
    assert prune.kept_steps(STEPS, 6, every=False) == [6]  # the best is the final one
    assert prune.kept_steps(STEPS, 7, every=False) == [6]  # a step the run did not save
    assert prune.kept_steps(STEPS, None, every=False) == [6]
    assert prune.kept_steps(STEPS, 3, every=True) == STEPS  # Figures 8-10's runs
    assert prune.kept_steps([], None, every=False) == []


def test_removes_exactly_the_unneeded_weights_and_the_resume_state(run):
    before = {s: files_under(ckpt(s)) for s in STEPS}
    assert [s for s in STEPS if "resume/optimizer.bin" in before[s]] == list(LEFT)
    resume = {name: size for name, size in before[6].items() if name.startswith("resume/")}
    assert len(resume) > 3
    marker = prune_now()
    after = {s: files_under(ckpt(s)) for s in STEPS}
    size = weights_bytes()
    for step in STEPS:
        gone = {name for name in before[step] if name not in after[step]}
        expected = {"model.safetensors"} if step in (1, 2, 4, 5) else set()
        if step in LEFT:
            expected |= set(resume)
        assert gone == expected, step
        assert before[step]["model.safetensors"] == size  # the hand count, every checkpoint
        # what stays is untouched: the config and tokenizer of every checkpoint
        assert {n: s for n, s in before[step].items() if n not in gone} == after[step]
    removed = [(r["step"], r["file"], r["bytes"], r["kind"]) for r in marker["removed"]]
    resume_items = [(name, resume[name], "resume") for name in sorted(resume)]
    assert removed == [
        (1, "model.safetensors", size, "weights"),
        (2, "model.safetensors", size, "weights"), *((2, *item) for item in resume_items),
        *((s, "model.safetensors", size, "weights") for s in (4, 5)),
        *((6, *item) for item in resume_items)]
    assert marker["removed_bytes"] == 4 * size + 2 * sum(resume.values())
    assert read_json(run / PRUNE_MARKER) == marker


def test_marker_names_what_was_kept_and_why(run):
    marker = prune_now()
    assert marker["run"] == RUN and marker["best_step"] == BEST
    assert marker["every_checkpoint"] is False
    assert marker["kept"] == [
        {"step": 3, "checkpoint": str(ckpt(3)), "because": ["best"]},
        {"step": 6, "checkpoint": str(ckpt(6)), "because": ["final"]}]
    assert all(r["checkpoint"] == str(ckpt(r["step"])) and not r["earlier"]
               for r in marker["removed"])


def test_figure_runs_keep_every_checkpoint(run):
    before = {s: files_under(ckpt(s)) for s in STEPS}
    marker = prune_now(every=True)
    assert {r["kind"] for r in marker["removed"]} == {"resume"}
    assert [k["because"] for k in marker["kept"]] == [["figures 8-10"]] * 2 + [
        ["best", "figures 8-10"]] + [["figures 8-10"]] * 2 + [["final", "figures 8-10"]]
    for step in STEPS:
        assert "model.safetensors" in files_under(ckpt(step))
    left = sum(sum(files_under(ckpt(s)).values()) for s in STEPS)
    assert left == sum(sum(b.values()) for b in before.values()) - marker["removed_bytes"]


def test_manifest_log_and_folder_mtimes_are_unchanged(run):
    manifest, log_csv = (run / "manifest.json").read_bytes(), (run / "log.csv").read_bytes()
    folders = {p: t for p, t in mtimes(run).items() if Path(p).is_dir()}
    prune_now()
    assert (run / "manifest.json").read_bytes() == manifest
    assert (run / "log.csv").read_bytes() == log_csv
    after = mtimes(run)
    # every folder that remains keeps its mtime; the run folder also gains the marker,
    # whose rename changes it, as any output written into it would
    changed = {p for p, t in folders.items() if p in after and after[p] != t}
    assert changed == {str(run)}
    assert not any(str(ckpt(s) / "resume") in after for s in LEFT)


def test_kept_checkpoints_load_and_verify(run):
    prune_now()
    for step in (BEST, 6):
        check_model_folder(ckpt(step))
        load_causal_lm(ckpt(step))
    # the stage-2 init and reference pass check the final checkpoint against the manifest
    assert init_checkpoint(run / "manifest.json") == str(ckpt(6))


# --------------------------------------------------- asking for a removed one


def test_a_removed_checkpoint_names_the_marker_and_the_file(run):
    prune_now()
    weights = ckpt(2) / "model.safetensors"
    for load in (check_model_folder, load_causal_lm, load_tokenizer):
        with pytest.raises(PrunedCheckpointError) as err:
            load(ckpt(2))
        message = str(err.value)
        assert f"checkpoint '{ckpt(2)}' was pruned" in message
        assert f"'{run / PRUNE_MARKER}' lists '{weights}' ({weights_bytes()} bytes)" in message
        assert f"snakemake --forcerun {run / 'manifest.json'}" in message
    assert issubclass(PrunedCheckpointError, FileIntegrityError)


def test_a_forced_curve_rerun_stops_before_generating(run):
    """What a rerun of eval_curve meets at its first removed checkpoint: the evaluation
    of a checkpoint checks it before any generation."""
    prune_now()

    class NoBackend:
        def generate(self, *args, **kwargs):
            raise AssertionError("a pruned checkpoint reached generation")

    params = {"force_think": False, "n_samples": 1, "seed": 0, "think_prefix": "<think>",
              "think_prefix_newline": True}
    with pytest.raises(PrunedCheckpointError, match=f"'{run / PRUNE_MARKER}' lists"):
        evaluation.evaluate_model(str(ckpt(1)), [], params, NoBackend(), None, [])


def test_pruning_again_still_lists_what_the_first_removed(run):
    first = prune_now()
    (run / PRUNE_MARKER).unlink()  # Snakemake removes an output before rerunning its job
    second = prune_now()
    earlier = [r for r in second["removed"] if r["earlier"]]
    assert [(r["step"], r["bytes"]) for r in earlier] == [
        (r["step"], r["bytes"]) for r in first["removed"] if r["kind"] == "weights"]
    assert second["removed_bytes"] == 0
    with pytest.raises(PrunedCheckpointError, match="model.safetensors"):
        check_model_folder(ckpt(4))


def test_a_retrained_checkpoint_is_checked_as_usual(run, trained):
    """The marker refuses only weights still absent: a rerun of the training puts them
    back (here: the same file again) and the checkpoint verifies."""
    prune_now()
    shutil.copy2(trained / ckpt(4) / "model.safetensors", ckpt(4) / "model.safetensors")
    check_model_folder(ckpt(4))


# ------------------------------------------------------------------ the plan


def load_config(preset: str, prune_on: bool = False) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = preset
    config["presets"][preset]["prune_checkpoints"] = prune_on
    rc.validate_config(config, ROOT)
    return config


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_off_by_default_and_targets_only_when_on(preset):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert config["presets"][preset]["prune_checkpoints"] is False
    config = load_config(preset)
    assert prune_plan.prune_targets(config) == []
    assert not any(t.endswith(PRUNE_MARKER) for t in default_target.all_targets(config))
    on = load_config(preset, prune_on=True)
    runs = names.all_sft_runs(on) + plan.stage2_runs(on)
    assert prune_plan.prune_targets(on) == [f"results/train/{r}/pruned.json" for r in runs]
    assert default_target.all_targets(on)[-len(runs):] == prune_plan.prune_targets(on)


def test_schema_refuses_a_non_boolean():
    config = load_config("tiny")
    config["presets"]["tiny"]["prune_checkpoints"] = "yes"
    with pytest.raises(rc.ConfigError, match="presets.tiny.prune_checkpoints"):
        rc.validate_config(config, ROOT)


def test_prune_waits_for_every_job_that_loads_a_checkpoint():
    config = load_config("tiny", prune_on=True)
    # Figures 8-10's runs keep every checkpoint
    assert prune_plan.every_checkpoint_runs(config) == report_plan.figure_runs(config, "fig8")
    figure_run = report_plan.figure_runs(config, "fig8")[0]
    sft = plan.init_run(config, figure_run)
    inputs = prune_plan.prune_inputs(config, sft)
    assert (inputs["manifest"], inputs["curve"], inputs["best"]) == (
        f"results/train/{sft}/manifest.json", f"results/eval/curves/{sft}.csv",
        f"results/eval/curves/{sft}.best.json")
    children = [r for r in plan.stage2_runs(config) if plan.init_run(config, r) == sft]
    consumers = inputs["consumers"]
    assert {paths.manifest(r) for r in children} <= set(consumers)  # stage-2 inits
    assert f"results/train/ref_logps/{sft}.parquet" in consumers
    assert f"results/eval/final/{sft}/summary.json" in consumers
    # the init model is step 0 of Figure 8's generations and Figures 9/10's analysis
    assert {f"results/eval/genstats/{figure_run}.csv",
            f"results/analysis/{figure_run}/entropy.csv",
            f"results/analysis/{figure_run}/token_logps.parquet"} <= set(consumers)
    # a group's runs: the group's final evaluation reads their best checkpoints
    group = plan.table2_groups(config)[-1]
    label = f"table2-{group['slug']}"
    for r in group["runs"]:
        assert f"results/eval/final/{label}/summary.json" in prune_plan.checkpoint_consumers(
            config, r)


# -------------------------------------------------------------- the workflow


def test_dry_run_plans_prune_jobs_only_with_the_key_on(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    off = planned_jobs(snakemake(work, "-n"))
    assert "prune" not in off
    (work / "prune_on.yaml").write_text("presets: {tiny: {prune_checkpoints: true}}\n")
    on = planned_jobs(snakemake(work, "-n", "--configfile", "prune_on.yaml"))
    config = load_config("tiny", prune_on=True)
    assert on.pop("prune") == len(prune_plan.prune_runs(config))
    assert on == off  # the same jobs besides


def planned_outputs(proc) -> list[str]:
    """Every output of the jobs a dry run plans."""
    lines = (proc.stdout + proc.stderr).splitlines()
    return [p for line in lines if line.startswith("    output: ")
            for p in line.removeprefix("    output: ").split(", ")]


def stand_in_upstream(work: Path, targets: list[str], *options: str) -> None:
    """What the prune job's inputs need, as if built: every missing output of the jobs
    ``targets`` need (a stand-in file, a folder for a suffix-less path), then
    ``snakemake --touch`` gives them their order. The trained run's files stay."""
    for path in planned_outputs(snakemake(work, *targets, "-n", *options)):
        out = work / path
        if not out.exists() and "." in out.name:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(f"{path}\n")
        elif not out.exists():
            out.mkdir(parents=True)
    snakemake(work, *targets, "--touch", "--cores", "1", *options)


def test_snakemake_prunes_one_run_and_then_plans_nothing(trained, tmp_path):
    """A real prune job on a trained run whose curve and consumers are built: it runs
    alone, and afterwards neither its marker nor anything it waited for is planned."""
    work = copy_workflow(tmp_path / "wf")
    shutil.copytree(trained / "results", work / "results")
    (work / "prune_on.yaml").write_text("presets: {tiny: {prune_checkpoints: true}}\n")
    inputs = prune_plan.prune_inputs(load_config("tiny", prune_on=True), RUN)
    write_best(work / inputs["best"], BEST)
    marker = str(RUN_DIR / PRUNE_MARKER)
    built = [inputs["manifest"], str(RUN_DIR / "log.csv"), inputs["curve"], inputs["best"],
             *inputs["consumers"]]
    on = ("--configfile", "prune_on.yaml")  # last: it reads every argument after it
    stand_in_upstream(work, built, *on)
    assert planned_jobs(snakemake(work, *built, "-n", *on)) == {}
    assert planned_jobs(snakemake(work, marker, "-n", *on)) == {"prune": 1}
    before = {p: (work / p).stat().st_mtime_ns for p in built}
    snakemake(work, marker, "--cores", "1", *on)
    pruned = read_json(work / marker)
    assert [r["step"] for r in pruned["removed"] if r["kind"] == "weights"] == [1, 2, 4, 5]
    assert not (work / ckpt(1) / "model.safetensors").exists()
    assert {p: (work / p).stat().st_mtime_ns for p in built} == before
    for target in ([marker], built):
        assert planned_jobs(snakemake(work, *target, "-n", *on)) == {}
    # the key off: the marker is no target, and nothing is planned for what was built
    assert planned_jobs(snakemake(work, "-n", *built)) == {}
    # a forced rerun of the run's curve (a real benchmark file in the stand-in folder)
    # stops at its first removed checkpoint, the job's log naming the marker and the file
    bench = work / "results/data/toy_benchmarks/toy_arith.json"
    with prune.kept_mtimes([bench.parent]):  # the folder stays as built
        bench.write_text(json.dumps([{"id": "p1", "problem": "Compute 1+2*3", "answer": "7"}]))
    proc = snakemake(work, inputs["curve"], "--forcerun", "eval_curve", "--cores", "1", *on,
                     check=False)
    assert proc.returncode == 1 and "Error in rule eval_curve" in proc.stderr
    log = (work / f"results/logs/eval_curve/{RUN}.log").read_text()
    assert "PrunedCheckpointError: checkpoint 'results/train/sft_3ep/checkpoints/step-000001' " \
        "was pruned: 'results/train/sft_3ep/pruned.json' lists 'results/train/sft_3ep/" \
        "checkpoints/step-000001/model.safetensors'" in log
