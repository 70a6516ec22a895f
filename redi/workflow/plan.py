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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redi.train.losses import OBJECTIVES
from redi.workflow import config as rc
from redi.workflow import names, paths
from redi.workflow.names import Config
from redi.workflow.snakemake_helpers import shell_args

# first disagreements listed per model and benchmark
AGREEMENT_EXAMPLES = 3


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


def eval_settings(config: Config, *drop: str) -> dict[str, Any]:
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
        **eval_settings(config),
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
            "thinks": model.get("thinks", True), "model": model_spec(config, model)}


def model_spec(config: Config, model: dict[str, Any]) -> dict[str, Any]:
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
    return {"init": paths.manifest(init), "pairs": pairs_path(config, run),
            "ref": paths.ref_logps(init) if needs_ref else []}


def benchmark_validation_params(config: Config) -> dict[str, Any]:
    """The math benchmark files, for the check that runs before any generation job
    (what each file is, not how it is sampled)."""
    return {"benchmarks": benchmark_specs(config)}


def curve_inputs(config: Config, run: str) -> dict[str, Any]:
    inputs = {"manifest": paths.manifest(run), "log_csv": paths.train_log(run),
              "bench": names.benchmarks_dir(config), "valid": paths.BENCHMARKS_VALID}
    if run in config["runs"]:  # step 0 = the init SFT model, from its curve
        inputs["init_curve"] = paths.curve(init_run(config, run))
    return inputs


def final_inputs(config: Config, label: str) -> dict[str, Any]:
    spec = final_models(config)[label]
    inputs = {"bench": names.benchmarks_dir(config), "valid": paths.BENCHMARKS_VALID, "manifests": [],
              "bests": [], "model_dir": []}
    if spec["kind"] == "sft" or (spec["kind"] == "run" and spec["checkpoint"] == "last"):
        inputs["manifests"] = [paths.manifest(spec["run"])]
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
