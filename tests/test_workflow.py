"""redi.sources.module_inputs (the package files a script imports, transitively), the
paths from config: quoted in every shell line, outputs only under results/; the data
stages plan no pretraining; `snakemake --lint` is clean."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil

import pandas as pd
import yaml

from redi.sources import module_inputs
from tests.conftest import BENCHMARKS_DIR, ROOT, copy_workflow, planned_jobs, snakemake
from tests.support.hub import openr1_row


def test_real_scripts():
    # figures style runs by their objective's registry entry (redi/train/losses.py); Figure 10's
    # statistics (redi/report/token_stats.py) need no torch, so no training code is an input
    assert module_inputs("scripts/make_figure.py", str(ROOT)) == (
        "redi/__init__.py", "redi/cli.py", "redi/io.py", "redi/report/__init__.py",
        "redi/report/plotting.py", "redi/report/token_stats.py", "redi/train/__init__.py",
        "redi/train/losses.py")
    # the training entry point reaches the losses through redi.train.training
    train = module_inputs("scripts/train_stage2.py", str(ROOT))
    assert {"redi/train/training.py", "redi/train/losses.py", "redi/train/logprobs.py"} <= set(train)
    assert "redi/report/plotting.py" not in train


def test_import_forms_and_transitivity(tmp_path):
    pkg = tmp_path / "redi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .c import thing\n")
    (pkg / "b.py").write_text("import redi.d as d\n")
    (pkg / "c.py").write_text("thing = 1\n")
    (pkg / "d.py").write_text("from redi import e\n")
    (pkg / "e.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    (tmp_path / "run.py").write_text("def main():\n    from redi.a import x\n")
    assert module_inputs("run.py", str(tmp_path)) == (
        "redi/__init__.py", "redi/a.py", "redi/b.py", "redi/c.py", "redi/d.py", "redi/e.py")


# ------------------------------------------------ paths from config

# params built with shell_args() (rules/common.smk): already quoted, used as {params.x}
PREQUOTED = {"corpus", "verify", "init", "args", "ref", "inputs"}
PLACEHOLDER = re.compile(r"\{(input|output|log|params|wildcards)(\.\w+)?(:\w+)?\}")


def test_every_path_reaches_the_shell_quoted():
    """Every {input}/{output}/{log}/{params}/{wildcards} of every shell line is :q, or a
    params string that shell_args() built (each path inside shlex-quoted)."""
    seen = 0
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        shell = "".join(re.findall(r"\n\s+shell:\n((?:\s+\".*\"\n)+)", text))
        for match in PLACEHOLDER.finditer(shell):
            seen += 1
            kind, field, spec = match.groups()
            if spec == ":q":
                continue
            name = (field or "")[1:]
            assert kind == "params" and name in PREQUOTED, f"{smk.name}: {match.group(0)}"
            built = re.search(rf"\b{name}=(lambda[^\n]*(shell_args\(|figure_args\b)|final_args\b)",
                              text)
            assert built, f"{smk.name}: params.{name} is not built by shell_args"
    assert seen > 80


def test_a_raw_data_path_with_shell_syntax_is_data_not_a_command(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    raw = "my corpus/x$(touch PWNED) 'it''s'.jsonl"  # a space, $(...), quotes
    (work / raw).parent.mkdir()
    good, bad = "<think>\n1+2=3\n</think>\n\\boxed{3}", "<think>\n1+2=4\n</think>\n\\boxed{4}"
    rows = [openr1_row(f"Evaluate: 1+2 (variant {i})", good, bad) for i in range(3)]
    (work / raw).write_text("".join(json.dumps(r) + "\n" for r in rows))
    snakemake(work, "--cores", "1", "results/data/filter_report.json",
              "--config", f"raw_data={raw}")
    assert not list(work.rglob("PWNED")) and not (ROOT / "PWNED").exists()
    report = json.loads((work / "results/data/filter_report.json").read_text())
    assert report["raw_source"] == raw
    assert len(pd.read_parquet(work / "results/data/sft_unfiltered.parquet")) == 3


def dry_run(work, *args: str) -> str:
    proc = snakemake(work, "-n", "-p", "all", *args)
    return proc.stdout + proc.stderr


def job_outputs(text: str) -> list[str]:
    return [path for line in text.splitlines()
            if (m := re.match(r"^\s+output: (.*)$", line)) for path in m.group(1).split(", ")]


def test_outputs_never_leave_results_and_odd_paths_stay_one_argument(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    bench = tmp_path / "bench $(dir) 'x'"
    shutil.copytree(BENCHMARKS_DIR, bench)
    model = tmp_path / "my models" / "it's here"
    model.mkdir(parents=True)
    (tmp_path / "o.yaml").write_text(yaml.safe_dump({"presets": {"paper": {
        "benchmarks_dir": str(bench),
        "baselines": [{"name": "local.one", "label": "L", "model": str(model)},
                      {"name": "hub-one", "label": "H", "model": "org/model",
                       "revision": "main"}]}}}))
    paper = dry_run(work, "--config", "preset=paper", "--configfile", str(tmp_path / "o.yaml"))
    tiny = dry_run(work)
    for text in (paper, tiny):
        outputs = job_outputs(text)
        assert len(outputs) > 100
        for path in outputs:
            assert os.path.normpath(path).startswith("results/"), path
    assert "results/models/hub/hub-one" in job_outputs(paper)
    commands = [shlex.split(line.removeprefix("Shell command: "))
                for line in paper.splitlines() if line.startswith("Shell command: ")]
    baseline = next(c for c in commands if "--label" in c and "baseline-local.one" in c)
    assert baseline[baseline.index("--model-dir") + 1] == str(model)
    for argv in commands:
        if "--params" in argv:
            params = json.loads(argv[argv.index("--params") + 1])
            for spec in params.get("benchmarks", []):
                assert spec.get("dir") in (None, str(bench))


def test_a_failed_hub_download_deletes_nothing_else(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    base = work / "results/models/base"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    other = work / "results/models/hub/other"  # another baseline's finished download
    other.mkdir(parents=True)
    (other / "config.json").write_text("{}")
    (tmp_path / "o.yaml").write_text(yaml.safe_dump({"presets": {"tiny": {"baselines": [
        {"name": "tiny-base", "label": "T", "model": "results/models/base"},
        {"name": "hub-x", "label": "X", "model": "someone/model", "revision": "main"}]}}}))
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = snakemake(work, "--cores", "1", "results/models/hub/hub-x",
                     "--configfile", str(tmp_path / "o.yaml"), check=False, env=offline)
    assert proc.returncode == 1
    assert (base / "config.json").read_text() == "{}"
    assert sorted(p.name for p in (work / "results/models").iterdir()) == ["base", "hub"]
    assert [p.name for p in (work / "results/models/hub").iterdir()] == ["other"]
    assert (other / "config.json").exists()
    log = (work / "results/logs/download_baseline/hub-x.log").read_text()
    assert "job failed" in log and "Traceback" in log


# ------------------------------------------------- the data half


def test_the_data_report_of_a_users_corpus_plans_no_pretraining(tmp_path):
    """The length filter needs only the tokenizer: the data stages never wait on the
    base model's pretraining (tiny: 2,600 steps)."""
    work = copy_workflow(tmp_path / "wf")
    good, bad = "<think>\n1+2=3\n</think>\n\\boxed{3}", "<think>\n1+2=4\n</think>\n\\boxed{4}"
    (work / "rows.jsonl").write_text(json.dumps(openr1_row("1+2", good, bad)) + "\n")
    proc = snakemake(work, "-n", "results/data/report.json", "--config", "raw_data=rows.jsonl")
    jobs = planned_jobs(proc)
    assert jobs == {"toy_corpus": 1, "tokenizer": 1, "filter_data": 1, "sft_length": 1,
                    "length_filter": 1, "data_report": 1}
    assert "rule base_model:" not in proc.stdout + proc.stderr
    # the tiny tokenizer trains on the toy corpus; the paper's is the base model's own
    paper = planned_jobs(snakemake(work, "-n", "results/data/report.json", "--config",
                                   "raw_data=rows.jsonl", "preset=paper"))
    assert paper == {"tokenizer": 1, "filter_data": 1, "sft_length": 1, "length_filter": 1,
                     "data_report": 1}


def test_training_still_gets_the_base_model_with_that_tokenizer(tmp_path):
    text = dry_run(copy_workflow(tmp_path / "wf"), "results/train/sft_3ep/manifest.json")
    assert "scripts/base_model.py" in text and "--tokenizer results/models/tokenizer" in text


def test_lint_is_clean(tmp_path):
    proc = snakemake(copy_workflow(tmp_path / "wf"), "--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
