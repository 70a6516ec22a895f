"""Every path the workflow writes under ``results/``, defined once: the rules' outputs
(Snakemake wildcards are ``str.format`` fields, so one template serves a rule and the
plan), the plan's inputs and the jobs' defaults."""

from redi.model.checkpoints import PRUNE_MARKER  # read by the checkpoint checks too

# where the download rule puts the Hub copies when a preset's benchmarks_dir is null
BENCHMARKS_DOWNLOAD_DIR = "results/data/benchmarks"

LOGS = "results/logs"

RAW_PATHS = {"toy": "results/data/raw_toy.parquet", "hub": "results/data/raw_hub.parquet"}

TOKENIZER_DIR = "results/models/tokenizer"

BASE_MODEL_DIR = "results/models/base"

SFT_DATA = "results/data/sft.parquet"

PAIRS = "results/data/pairs.parquet"

# Table 4's other base models: results/models/base_<base>, and where a base model has
# a tokenizer of its own, results/models/tokenizer_<base> and results/data/tokenizer_<base>/
BASE_MODEL_DIRS = "results/models/base_{base}"

TOKENIZER_DIRS = "results/models/tokenizer_{base}"

TOKENIZER_DATA = "results/data/tokenizer_{base}"

# the paper's numbers (v1 PDF) and training times (v2 Table 3), read by paper_comparison
REPORTED_RESULTS = "redi/report/paper/reported_results.csv"

TRAINING_TIMES = "redi/report/paper/training_times.csv"
# the prompts Figures 9/10 analyse in the paper (the authors' seeded draw)
PAPER_SAMPLE = "redi/report/paper/paper_sample.csv"

AGREEMENT_OUTPUTS = {"csv": "results/grader_agreement.csv",
                     "examples": "results/grader_disagreements.csv",
                     "md": "results/grader_agreement.md"}

TOY_BENCHMARKS_DIR = "results/data/toy_benchmarks"  # toy_corpus's benchmark folder

OOD_TOY_DIR = "results/data/toy_ood"  # rule toy_ood: <name>.jsonl

OOD_DOWNLOAD_DIR = "results/data/ood"  # rule download_ood: <name>.jsonl + .download.json

# rule validate_benchmarks: every benchmark file checked, before any generation job
BENCHMARKS_VALID = "results/data/benchmarks_valid.json"

OOD_VALID = "results/data/ood_valid.json"  # rule validate_ood: the out-of-domain files

TABLE5_OUTPUTS = {"csv": "results/table5.csv", "md": "results/table5.md"}

TABLE3_OUTPUTS = {"csv": "results/table3.csv", "md": "results/table3.md"}

TOKEN_CORRELATION = "results/figures/fig10_correlation.csv"

CLAIMS_OUTPUTS = {"csv": "results/claims.csv", "md": "results/claims.md"}


# ------------------------------------------------------------------ templates
# A function per output family: called bare, it gives the rule's pattern (its
# wildcards); called with values, the path the plan names as an input.

RAW_DOWNLOAD_RECORD = "results/data/raw_hub.download.json"
SFT_UNFILTERED = "results/data/sft_unfiltered.parquet"
PAIRS_UNFILTERED = "results/data/pairs_unfiltered.parquet"
FILTER_REPORT = "results/data/filter_report.json"
SFT_LENGTH_REPORT = "results/data/sft_length_report.json"
LENGTH_REPORT = "results/data/length_report.json"
VERIFY_REPORT = "results/data/verify_report.json"
DATA_REPORT = "results/data/report.json"
PAPER_COMPARISON = {"csv": "results/paper_comparison.csv", "md": "results/paper_comparison.md"}
COST_PLAN = {"csv": "results/plan/cost.csv", "md": "results/plan/cost.md"}


def run_dir(run: str = "{run}") -> str:
    return f"results/train/{run}"


def manifest(run: str = "{run}") -> str:
    """A training run's manifest (written last: the run's finished marker)."""
    return f"{run_dir(run)}/manifest.json"


def prune_marker(run: str = "{prune_run}") -> str:
    """What a run's prune job removed (``presets.<preset>.prune_checkpoints``)."""
    return f"{run_dir(run)}/{PRUNE_MARKER}"


def train_log(run: str = "{run}") -> str:
    return f"{run_dir(run)}/log.csv"


def ref_logps(sft: str = "{sft}") -> str:
    return f"results/train/ref_logps/{sft}.parquet"


def curve(run: str = "{curve_run}") -> str:
    return f"results/eval/curves/{run}.csv"


def best(run: str = "{curve_run}") -> str:
    return f"results/eval/curves/{run}.best.json"


def final_dir(label: str = "{label}") -> str:
    return f"results/eval/final/{label}"


def final_summary(label: str = "{label}") -> str:
    return f"{final_dir(label)}/summary.json"


def final_samples(label: str = "{label}", bench: str = "{bench}") -> str:
    return f"{final_dir(label)}/{bench}.parquet"


def ood_dir(label: str = "{label}") -> str:
    return f"results/eval/ood/{label}"


def ood_summary(label: str = "{label}") -> str:
    return f"{ood_dir(label)}/summary.json"


def ood_samples(label: str = "{label}", bench: str = "{bench}") -> str:
    return f"{ood_dir(label)}/{bench}.parquet"


def genstats(run: str = "{run}") -> str:
    return f"results/eval/genstats/{run}.csv"


def genstats_responses(run: str = "{run}") -> str:
    return f"results/eval/genstats/{run}.responses.parquet"


def entropy(run: str = "{run}") -> str:
    return f"results/analysis/{run}/entropy.csv"


def token_logps(run: str = "{run}") -> str:
    return f"results/analysis/{run}/token_logps.parquet"


def hub_model(name: str = "{baseline}") -> str:
    """A Hub baseline's download (names are validated single path components)."""
    return f"results/models/hub/{name}"


def table_outputs(table: str = "{table}") -> dict[str, str]:
    return {"csv": f"results/{table}.csv", "md": f"results/{table}.md",
            "pass16_csv": f"results/{table}_pass16.csv", "pass16_md": f"results/{table}_pass16.md"}


def figure(name: str = "{figure}", ext: str = "png") -> str:
    return f"results/figures/{name}.{ext}"


def benchmark_tsv(rule: str, name: str) -> str:
    """A job's ``benchmark:`` file (wall time, memory): results/benchmarks/<rule>/<name>.tsv."""
    return f"results/benchmarks/{rule}/{name}.tsv"


# what a figure can read, per run it shows ({run} is filled by the plan)
FIGURE_INPUTS = {
    "curves": curve("{run}"),
    "logs": train_log(),
    "genstats": genstats(),
    "entropy": entropy(),
    "token_logps": token_logps(),
}
