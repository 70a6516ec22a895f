"""The cost of every table and figure before anything runs: GPU-hours, wall time on the
configured GPUs, and disk, per target (``results/plan/cost.md``).

The planner rebuilds the workflow's GPU jobs from the plan module (the same functions the
rules use: runs, their init runs, final-evaluation models, figure runs, Table 5's models)
and gives each job a cost from the paper's measured times (``redi/report/paper/training_times.csv``,
8xA100-80GB) scaled by what this config changes: data size, epochs, model size, benchmarks,
samples and response lengths. A target's cost is that of every job it needs (its closure in
this job graph), so targets share jobs and their costs do not add up; the ``all`` row counts
each job once. Every scaling assumption is listed in the output (``ASSUMPTIONS``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redi.model import prune
from redi.report.flops import non_embedding_params
from redi.report.plotting import FIGURES
from redi.train.losses import OBJECTIVES
from redi.workflow import names, paths, plan, prune_plan, report_plan

Config = Mapping[str, Any]

# Architectures of the Hub models the paper preset names (their config.json): the planner
# runs without Hub access, so it cannot read them
HUB_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-Math-1.5B": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2,
                                   intermediate_size=8960, vocab_size=151936, tied=True),
    "Qwen/Qwen2.5-Math-1.5B-Instruct": dict(model_type="qwen2", hidden_size=1536,
                                            num_hidden_layers=28, num_attention_heads=12,
                                            num_key_value_heads=2, intermediate_size=8960,
                                            vocab_size=151936, tied=True),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": dict(
        model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, intermediate_size=8960, vocab_size=151936, tied=False),
    "meta-llama/Llama-3.2-3B": dict(model_type="llama", hidden_size=3072, num_hidden_layers=28,
                                    num_attention_heads=24, num_key_value_heads=8,
                                    intermediate_size=8192, vocab_size=128256, tied=True),
    "Qwen/Qwen2.5-Math-7B": dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4,
                                 intermediate_size=18944, vocab_size=152064, tied=False),
}
PAPER_MODEL = "Qwen/Qwen2.5-Math-1.5B"  # the model the paper's times were measured on
# problems per benchmark: the paper's files (rllm's copies) and Table 5's
BENCHMARK_SIZES = {"math500": 500, "aime24": 30, "amc23": 83, "minerva": 272,
                   "olympiadbench": 675, "humaneval": 164, "gpqa_diamond": 198}
# the paper's data (appendix C.2), and the toy corpus' at its default settings (the
# data-stage test's counts): the planner may not wait for the data stage
PAPER_DATA = {"sft": 77629, "pairs": 53175}
TOY_DATA = {"sft": 697, "pairs": 436, "n_problems": 1000}
PAPER_EVAL = {"intermediate": "eval_math500_4samples", "final": "eval_5bench_16samples"}
BF16_BYTES = 2
# bytes per parameter of a checkpoint's weights and of its resume state. GPU training is
# bf16 under ZeRO-2: bf16 weights; resume = fp32 master weights + AdamW's two moments
# (12 B) + the bf16 module weights beside them (2 B). CPU training (no mixed precision)
# saves fp32 weights; resume = fp32 weights + the two moments
CHECKPOINT_BYTES = {"gpu": (BF16_BYTES, 14), "cpu": (4, 12)}
GB = 1e9
COLUMNS = ["target", "jobs", "gpu_jobs", "checkpoints", "gpu_hours", "wall_h_one_node",
           "wall_h_critical_path", "disk_gb", "disk_gb_pruned"]

ASSUMPTIONS = [
    "Times are the paper's (training_times.csv, one 8xA100-80GB node); GPU-hours scale "
    "linearly with the examples trained (data size x epochs) and with the model's parameter "
    "count relative to Qwen2.5-Math-1.5B; an H100 is faster (docs/PERFORMANCE.md), not "
    "counted here.",
    "Data sizes: the paper's 77,629 SFT traces and 53,175 pairs for the Hub corpus; the toy "
    "corpus' 697 / 436 at 1,000 problems, scaled by toy.n_problems.",
    "SFT: the paper's row for that epoch count, else its 5-epoch time per epoch. DPO's "
    "time includes the reference forward pass: 1/4 of it (one forward of four passes) is "
    "the ref_logps job, once per init model; the run keeps 3/4.",
    "Generation cost per token: curves at the paper's MATH-500 x4 time (0.67 h), final "
    "evaluations, Figure 8 and Table 5 at its 5 benchmarks x16 time (20 h), each divided by "
    "its tokens (problems x samples x the benchmark's expected_tokens, else the job's "
    "max_new_tokens; GPQA's null budget: the math benchmarks' mean expected_tokens).",
    "Token analysis (Figures 9/10): a forward pass over n_pairs pairs and n_generated "
    "responses (half a pair each) per checkpoint and the init model, at 1/3 of REDI's "
    "training time per pair.",
    "Wall time: a job runs on its rule's GPUs (resources.train_gpus / eval_gpus) and scales "
    "linearly with them; 'one node' runs the jobs one after another (--resources "
    "gpu=<node's GPUs> with jobs that each take the node), 'critical path' is the longest "
    "chain of dependent jobs (enough nodes for every independent job).",
    "Disk: a checkpoint's bf16 weights (2 bytes x parameters; fp32, 4 bytes, on CPU) for "
    "every checkpoint a finished run keeps, plus the Hub models downloaded (bf16). A run "
    "that trains holds one resume state more (14 bytes x parameters: ZeRO-2 fp32 master "
    "weights, AdamW moments, bf16 weights; 12 on CPU), which it deletes when it finishes: "
    "not counted. The raw corpus, benchmarks, generations and logs are not counted.",
    "Pruned disk (the preset's prune_checkpoints, rule prune: docs/CLUSTER.md): the "
    "checkpoints redi.prune.kept_steps keeps, each run's final and best ones (every one of "
    "a run Figures 8-10 read); the best is counted as another checkpoint than the final "
    "one (it is known only once the curve is written).",
    "A CPU preset (resources.*_gpus = 0) has no GPU-hours or wall time: the paper's GPU "
    "times do not apply to it.",
]


@dataclass
class Job:
    """One workflow job: GPU-hours at the paper's rates, the GPUs its rule asks for, the
    disk it leaves (and would leave pruned), the jobs it needs."""

    name: str
    gpu_hours: float = 0.0
    gpus: int = 0
    checkpoints: int = 0
    disk: float = 0.0
    disk_pruned: float = 0.0
    deps: list[str] = field(default_factory=list)

    @property
    def wall_hours(self) -> float:
        return self.gpu_hours / self.gpus if self.gpus else 0.0


def load_times(path: str | Path) -> dict[str, dict[str, float]]:
    """training_times.csv by stage: duration_hours and gpu_hours."""
    with open(path, newline="") as f:
        return {r["stage"]: {"hours": float(r["duration_hours"]),
                             "gpu_hours": float(r["gpu_hours"])} for r in csv.DictReader(f)}


def architecture(config: Config, base: str | None) -> dict[str, Any]:
    """A base model's architecture: a Hub model's from ``HUB_ARCHITECTURES``, a tiny one's
    from the preset (on the primary tokenizer: the primary model's vocabulary)."""
    preset = names.preset(config)
    model = preset["base_model"] if base is None else preset["base_models"][base]["model"]
    source = model["source"]
    if source != "tiny":
        if source not in HUB_ARCHITECTURES:
            raise ValueError(f"no architecture known for {source!r}: add it to HUB_ARCHITECTURES")
        return HUB_ARCHITECTURES[source]
    vocab = model.get("vocab_size") or preset["base_model"]["vocab_size"]
    return {"model_type": model.get("family", "qwen2"), **model, "vocab_size": vocab,
            "tied": True}  # redi.model.base_model ties the tiny models' embeddings


def parameters(arch: Mapping[str, Any]) -> int:
    """Every parameter: the decoder, the embedding, and an untied output head."""
    embedding = arch["vocab_size"] * arch["hidden_size"]
    return non_embedding_params(arch) + embedding * (1 if arch["tied"] else 2)


def data_sizes(config: Config) -> dict[str, float]:
    """SFT traces and preference pairs the runs train on (see ``ASSUMPTIONS``)."""
    if names.raw_data_source(config) == "toy":
        scale = names.preset(config)["toy"]["n_problems"] / TOY_DATA["n_problems"]
        return {"sft": TOY_DATA["sft"] * scale, "pairs": TOY_DATA["pairs"] * scale}
    return dict(PAPER_DATA)


def checkpoint_steps(n_items: int, global_batch: int, epochs: int, save_every: int,
                     epoch_ends: bool) -> list[int]:
    """The steps the trainer saves (redi.train.training: every ``save_every`` steps, the last
    step, and with ``epoch_ends`` every epoch's end)."""
    per_epoch = math.ceil(n_items / global_batch)
    total = per_epoch * epochs
    return [s for s in range(1, total + 1) if s % save_every == 0 or s == total
            or (epoch_ends and s % per_epoch == 0)]


class Planner:
    """The job graph of one config, each job costed (see ``ASSUMPTIONS``)."""

    def __init__(self, config: Config, times: Mapping[str, Mapping[str, float]]) -> None:
        self.config, self.times = config, times
        self.preset = names.preset(config)
        res = self.preset["resources"]
        self.train_gpus, self.eval_gpus = res["train_gpus"], res["eval_gpus"]
        self.data = data_sizes(config)
        self.paper_params = parameters(HUB_ARCHITECTURES[PAPER_MODEL])
        self.jobs: dict[str, Job] = {}
        self.full_runs = set(prune_plan.every_checkpoint_runs(config))
        self.pruning = bool(self.preset.get("prune_checkpoints", False))
        self._training_jobs()
        self._evaluation_jobs()

    # ---------------------------------------------------------------- helpers

    def params(self, base: str | None) -> int:
        return parameters(architecture(self.config, base))

    def size_ratio(self, n_params: int) -> float:
        return n_params / self.paper_params

    def add(self, job: Job) -> None:
        if job.gpus == 0:  # a CPU preset: the paper's GPU times do not apply
            job.gpu_hours = 0.0
        self.jobs[job.name] = job

    def _run_disk(self, run: str, n_params: int, steps: list[int]) -> tuple[float, float]:
        """Disk of a finished run (every checkpoint's weights; it deleted its resume
        state) and pruned (``redi.prune.kept_steps``; the best step is not known before
        the curve: counted as another one than the final)."""
        weights = CHECKPOINT_BYTES["gpu" if self.train_gpus else "cpu"][0] * n_params
        kept = prune.kept_steps(steps, steps[0] if steps else None, run in self.full_runs)
        return len(steps) * weights, len(kept) * weights

    # ---------------------------------------------------------------- training

    def _download(self, base: str | None) -> str:
        name = f"download:{base or 'primary'}"
        arch = architecture(self.config, base)
        hub = (self.preset["base_model"] if base is None
               else self.preset["base_models"][base]["model"])["source"] != "tiny"
        disk = BF16_BYTES * parameters(arch) if hub else 0.0
        self.add(Job(name, disk=disk, disk_pruned=disk))
        return name

    def _training_jobs(self) -> None:
        for run in names.all_sft_runs(self.config):
            base = names.run_base(self.config, run)
            self._sft_job(run, base, int(names.SFT_RUN.fullmatch(run)["epochs"]))
        for run in plan.stage2_runs(self.config):
            self._stage2_job(run)

    def _sft_job(self, run: str, base: str | None, epochs: int) -> None:
        p, n_params = plan.sft_params(self.config, epochs, base), self.params(base)
        row = self.times.get(f"sft_{epochs}ep")
        hours = row["gpu_hours"] if row else self.times["sft_5ep"]["gpu_hours"] / 5 * epochs
        hours *= self.data["sft"] / PAPER_DATA["sft"] * self.size_ratio(n_params)
        steps = checkpoint_steps(round(self.data["sft"]), p["global_batch"], epochs,
                                 p["save_every_steps"], OBJECTIVES["sft"].epoch_checkpoints)
        disk, pruned = self._run_disk(run, n_params, steps)
        self.add(Job(f"train:{run}", hours, self.train_gpus, len(steps), disk, pruned,
                     [self._download(base)]))

    def _stage2_job(self, run: str) -> None:
        p = plan.stage2_params(self.config, run)
        objective, init = OBJECTIVES[p["objective"]], p["init"]
        n_params = self.params(names.run_base(self.config, run))
        scale = self.data["pairs"] / PAPER_DATA["pairs"] * self.size_ratio(n_params)
        paper = self.times.get(f"{p['objective']}_1ep", self.times["redi_1ep"])["gpu_hours"]
        deps = [f"train:{init}"]
        if objective.needs_ref:  # the paper's DPO time holds the reference pass: 1/4 of it
            self.add(Job(f"ref:{init}", paper / 4 * scale, self.train_gpus, deps=[f"train:{init}"]))
            deps.append(f"ref:{init}")
            paper *= 3 / 4
        steps = checkpoint_steps(round(self.data["pairs"]), p["global_batch"], p["epochs"],
                                 p["save_every_steps"], objective.epoch_checkpoints)
        disk, pruned = self._run_disk(run, n_params, steps)
        self.add(Job(f"train:{run}", paper * p["epochs"] * scale, self.train_gpus, len(steps),
                     disk, pruned, deps))

    # ---------------------------------------------------------------- generation

    def _problems(self, bench: Mapping[str, Any]) -> int:
        """A benchmark's problems: the toy generator's count, else the known file's."""
        toy = self.preset.get("toy", {}).get("benchmarks", {})
        if bench["name"] in toy:
            return toy[bench["name"]]
        if "toy" in bench:  # a toy out-of-domain benchmark
            return bench["toy"]
        return BENCHMARK_SIZES[bench["name"]]

    def _tokens(self, benches: Iterable[Mapping[str, Any]], samples: int, budget: int) -> float:
        """Tokens generated: problems x samples x the expected (else budgeted) length."""
        return sum(self._problems(b) * samples
                   * (b.get("expected_tokens") or b.get("max_new_tokens") or budget)
                   for b in benches)

    def _rate(self, protocol: str) -> float:
        """Tokens per GPU-hour of the paper's measured evaluation of ``protocol``."""
        paper = self.config["presets"]["paper"]
        benches = paper["benchmarks"]
        if protocol == "intermediate":
            benches = [b for b in benches if b["name"] == paper["intermediate_benchmark"]]
        ev = self.config["evaluation"][protocol]
        tokens = sum(BENCHMARK_SIZES[b["name"]] * ev["n_samples"] * b["expected_tokens"]
                     for b in benches)
        return tokens / self.times[PAPER_EVAL[protocol]]["gpu_hours"]

    def _generation_hours(self, protocol: str, benches: list[dict[str, Any]],
                          budget: int, n_params: int) -> float:
        samples = self.config["evaluation"][protocol]["n_samples"]
        return (self._tokens(benches, samples, budget) / self._rate(protocol)
                * self.size_ratio(n_params))

    def _benches(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        return [b for b in self.preset["benchmarks"] if names is None or b["name"] in names]

    # ---------------------------------------------------------------- evaluation

    def _evaluation_jobs(self) -> None:
        budget = self.preset["eval"]["max_new_tokens"]
        for run in names.all_sft_runs(self.config) + plan.stage2_runs(self.config):
            n_params = self.params(names.run_base(self.config, run))
            train = self.jobs[f"train:{run}"]
            per_ckpt = self._generation_hours(
                "intermediate", self._benches([self.preset["intermediate_benchmark"]]),
                budget, n_params)
            deps = [train.name] + ([f"curve:{plan.init_run(self.config, run)}"]
                                   if run in self.config["runs"] else [])
            self.add(Job(f"curve:{run}", per_ckpt * train.checkpoints, self.eval_gpus,
                         deps=deps))
        for label, spec in plan.final_models(self.config).items():
            self._final_job(label, spec, budget)
        for run in self.full_runs:
            self._figure_run_jobs(run, budget)

    def _model(self, spec: Mapping[str, Any]) -> tuple[list[str], int]:
        """A final-evaluation model's jobs and parameter count."""
        if spec["kind"] == "baseline":
            name = f"download:baseline-{spec['name']}"
            arch = HUB_ARCHITECTURES.get(spec["model"])
            disk = BF16_BYTES * parameters(arch) if arch else 0.0
            self.add(Job(name, disk=disk, disk_pruned=disk))
            n_params = parameters(arch) if arch else self.params(None)
            return [name], n_params
        runs = spec["runs"] if spec["kind"] == "group" else [spec["run"]]
        best = spec["kind"] == "group" or spec.get("checkpoint") == "best"
        deps = [f"{'curve' if best else 'train'}:{r}" for r in runs]
        return deps, self.params(names.run_base(self.config, runs[0]))

    def _final_job(self, label: str, spec: Mapping[str, Any], budget: int) -> None:
        deps, n_params = self._model(spec)
        self.add(Job(f"final:{label}", self._generation_hours("final", self._benches(), budget,
                                                              n_params), self.eval_gpus,
                     deps=deps))
        if label in self.config["tables"]["table5"]["models"]:
            ood = self.preset["ood"]["benchmarks"]
            mean = sum(b.get("expected_tokens") or budget for b in self._benches()) / len(
                self._benches())
            self.add(Job(f"ood:{label}", self._generation_hours("final", ood, round(mean),
                                                                n_params),
                         self.eval_gpus, deps=deps))

    def _figure_run_jobs(self, run: str, budget: int) -> None:
        """Figure 8's generations and Figures 9/10's forward passes: every checkpoint of
        the run and its init model."""
        n_params = self.params(names.run_base(self.config, run))
        models = self.jobs[f"train:{run}"].checkpoints + 1
        bench = self._benches([self.preset["fig8_benchmark"]])
        init = f"train:{plan.init_run(self.config, run)}"
        self.add(Job(f"genstats:{run}", models * self._generation_hours(
            "final", bench, budget, n_params), self.eval_gpus, deps=[f"train:{run}", init]))
        analysis = self.preset["analysis"]
        pair = self.times["redi_1ep"]["gpu_hours"] / PAPER_DATA["pairs"] / 3
        hours = models * (analysis["n_pairs"] + analysis["n_generated"] / 2) * pair
        self.add(Job(f"analysis:{run}", hours * self.size_ratio(n_params), self.train_gpus,
                     deps=[f"train:{run}", f"genstats:{run}"]))

    # ---------------------------------------------------------------- targets


def target_jobs(planner: Planner) -> dict[str, list[str]]:
    """Each table and figure target of the config and the jobs it reads directly."""
    config = planner.config
    out = {paths.table_outputs(t)["csv"]: [f"final:{row['label']}"
                                          for row in report_plan.table_spec(config, t)["rows"]]
           for t in report_plan.tables(config)}
    spec = report_plan.table3_spec(config)
    out[paths.TABLE3_OUTPUTS["csv"]] = [
        f"train:{Path(r['manifest']).parent.name}" for s in spec["stages"] for r in s["runs"]]
    out[paths.TABLE5_OUTPUTS["csv"]] = [f"ood:{m}" for m in config["tables"]["table5"]["models"]]
    kinds = {"curves": "curve", "logs": "train", "genstats": "genstats",
             "entropy": "analysis", "token_logps": "analysis"}
    for figure, kind in FIGURES.items():
        out[paths.figure(figure)] = list(dict.fromkeys(
            f"{kinds[read]}:{r}" for read in kind.reads
            for r in report_plan.figure_runs(config, figure)))
    inputs = report_plan.claims_inputs(config)
    out[paths.CLAIMS_OUTPUTS["csv"]] = [
        *(j for t in report_plan.tables(config) for j in out[paths.table_outputs(t)["csv"]]),
        *out[paths.TABLE5_OUTPUTS["csv"]],
        *(f"curve:{Path(c).stem}" for c in inputs["curves"])]
    return out


def closure(planner: Planner, names: Iterable[str]) -> set[str]:
    """Every job ``names`` need, themselves included."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(planner.jobs[name].deps)
    return seen


def critical_path(planner: Planner, names: Iterable[str]) -> float:
    """The longest chain of dependent jobs' wall hours ending in one of ``names``."""
    memo: dict[str, float] = {}

    def finish(name: str) -> float:
        if name not in memo:
            job = planner.jobs[name]
            memo[name] = job.wall_hours + max((finish(d) for d in job.deps), default=0.0)
        return memo[name]

    return max((finish(n) for n in names), default=0.0)


def target_row(planner: Planner, target: str, names: list[str]) -> dict[str, Any]:
    """A target's cost: the jobs it needs, their GPU-hours, wall time and disk."""
    jobs = [planner.jobs[n] for n in sorted(closure(planner, names))]
    gpu = planner.train_gpus or planner.eval_gpus
    return {
        "target": target, "jobs": len(jobs),
        "gpu_jobs": sum(1 for j in jobs if j.gpu_hours > 0),
        "checkpoints": sum(j.checkpoints for j in jobs),
        "gpu_hours": round(sum(j.gpu_hours for j in jobs), 1),
        "wall_h_one_node": round(sum(j.wall_hours for j in jobs), 1) if gpu else None,
        "wall_h_critical_path": round(critical_path(planner, names), 1) if gpu else None,
        "disk_gb": round(sum(j.disk for j in jobs) / GB, 3),
        "disk_gb_pruned": round(sum(j.disk_pruned for j in jobs) / GB, 3),
    }


def target_rows(planner: Planner) -> list[dict[str, Any]]:
    """One row per target, then ``all`` (every job of every target, each once)."""
    targets = target_jobs(planner)
    rows = [target_row(planner, t, names) for t, names in targets.items()]
    everything = [n for names in targets.values() for n in names]
    return [*rows, target_row(planner, "all", everything)]


def job_rows(planner: Planner) -> list[dict[str, Any]]:
    """Every job's own cost, for the detail table."""
    return [{"job": j.name, "gpus": j.gpus, "gpu_hours": round(j.gpu_hours, 2),
             "wall_h": round(j.wall_hours, 2), "checkpoints": j.checkpoints,
             "disk_gb": round(j.disk / GB, 3)}
            for j in planner.jobs.values() if j.gpu_hours or j.disk]


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("–" if r[c] is None else str(r[c]) for c in columns) + " |"
              for r in rows]
    return lines


def pruning_line(planner: Planner) -> str:
    """Whether this preset prunes, i.e. which disk column its run leaves."""
    key = f"presets.{planner.config['preset']}.prune_checkpoints"
    if planner.pruning:
        return (f"Pruning is **on** (`{key}: true`): the workflow removes the checkpoint "
                "weights no job needs once they are built, so `disk_gb_pruned` is what it "
                "leaves; `disk_gb` is what the runs hold until their prune jobs.")
    return (f"Pruning is **off** (`{key}: false`): `disk_gb` is what the workflow "
            "leaves; `disk_gb_pruned` is what it would leave with the key on.")


def markdown(planner: Planner, rows: list[dict[str, Any]]) -> str:
    config = planner.config
    head = [
        f"# Cost plan (preset {config['preset']})", "",
        f"Generated by `snakemake results/plan/cost.md --config preset={config['preset']}` "
        f"from the config and the paper's measured times; {planner.train_gpus} GPUs per "
        f"training job, {planner.eval_gpus} per evaluation job "
        f"(resources.train_gpus / eval_gpus). A target's row counts every job it needs; "
        "targets share jobs, so only the `all` row is the whole experiment.", "",
        "Columns: jobs in the target's closure, those with GPU time, checkpoints saved, "
        "GPU-hours, wall hours on one node running the jobs one after another, wall hours "
        "along the longest chain of dependent jobs (many nodes), disk (GB) as kept and if "
        "unneeded checkpoint weights were removed.", "",
        pruning_line(planner), "",
        *_md_table(rows, COLUMNS), "", "## Assumptions", "",
        *(f"- {a}" for a in ASSUMPTIONS), "", "## Jobs", "",
        *_md_table(job_rows(planner), ["job", "gpus", "gpu_hours", "wall_h", "checkpoints",
                                       "disk_gb"]), ""]
    return "\n".join(head)


def write_plan(config: Config, times_csv: str | Path, out_csv: str | Path,
               out_md: str | Path) -> list[dict[str, Any]]:
    """cost.csv (one row per target) and cost.md (the same, the assumptions, every job)."""
    planner = Planner(config, load_times(times_csv))
    rows = target_rows(planner)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    Path(out_md).write_text(markdown(planner, rows))
    return rows
