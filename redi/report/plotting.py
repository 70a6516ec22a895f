"""Figures 2-8 of the paper from the evaluation curves, training logs and
generation statistics; one function per figure, one shared style.

Inputs (see docs/ARCHITECTURE.md):

- curves ``results/eval/curves/<run>.csv``: ``step, epoch, accuracy, sem, ...``,
  accuracy and SEM as fractions (pass@1 over the intermediate samples);
- training logs ``results/train/<run>/log.csv``: one row per optimizer step,
  ``chosen_logps, rejected_logps`` (mean per-token log-probs), ``lr_x_grad_norm``
  (LR × pre-clip gradient norm: the step size as the authors computed it) and
  ``update_norm`` (‖Δθ‖₂ of the optimizer step). The LogPS and step-size panels use
  these per-step logs (denser than the evaluated checkpoints);
- generation statistics ``results/eval/genstats/<run>.csv`` (Figure 8).

Every run keeps one colour in every figure (``run_styles``); the line style
comes from the run's objective (``Objective.linestyle`` in ``redi.train.losses``: DPO/SimPO
β, symmetric vs asymmetric REDI). Functions return a ``matplotlib.figure.Figure``;
``save_figure`` writes the PNG and the PDF (no timestamps, so a rerun gives
identical files).

``FIGURES`` is the registry behind the one ``figure`` rule: adding a figure is one
plot function, one ``FIGURES`` entry and its caption ``report/<name>.rst``. The
module imports matplotlib and pandas on first use: the Snakefile reads ``FIGURES``
while it parses.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redi.io import atomic_path
from redi.train.losses import OBJECTIVES

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
# the PDF backend's font subsetting logs every glyph table at INFO
logging.getLogger("fontTools").setLevel(logging.WARNING)

# paper column widths (inches): single column and a full-width row of panels
SINGLE_COLUMN = 3.3
FULL_WIDTH = 7.0
PANEL_HEIGHT = 1.9

STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # has α, β, γ, Δ, θ, ‖
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "lines.linewidth": 1.0,
    "lines.markersize": 2.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "pdf.fonttype": 42,  # embed TrueType: editable, searchable text
    "savefig.dpi": 300,
}

# tab10 without its grey, which marks the SFT runs
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf"]
SFT_COLORS = ["#000000", "#7f7f7f"]

# the step-size panels: which log column, its title and axis label
STEP_SIZE = {
    "lr_x_grad_norm": ("Step size (LR × grad norm)", "LR × ‖∇L‖₂ (pre-clip)"),
    "update_norm": ("Update norm", "‖Δθ‖₂ per step"),
}
# the paper's "gradient step size" as the authors computed it (LR × pre-clip gradient
# norm: it scales with DPO's β, so Figure 3's runs start at matched sizes), then the
# AdamW update norm, the literal "norm of the parameter update" (nearly β-invariant)
STEP_SIZES = ("lr_x_grad_norm", "update_norm")


@dataclass(frozen=True)
class RunStyle:
    color: str
    linestyle: str
    label: str

    def kw(self) -> dict[str, Any]:
        return {"color": self.color, "linestyle": self.linestyle, "label": self.label}


def run_styles(palette: Sequence[str], specs: Mapping[str, Mapping[str, Any]],
               labels: Mapping[str, str]) -> dict[str, RunStyle]:
    """A fixed style per run for all figures.

    ``palette`` lists every run shown in any figure (order of first appearance); a run's
    colour is its position among the listed runs of its objective, so runs that
    share a figure never share a colour. SFT runs are black and grey. The line style is
    the objective's (``Objective.linestyle``), given the specs of all listed runs.
    """
    styles: dict[str, RunStyle] = {}
    seen: dict[str, int] = {}
    peers = [specs[r] for r in palette]
    for run in palette:
        spec = specs[run]
        objective = spec["objective"]
        index = seen.get(objective, 0)
        seen[objective] = index + 1
        if objective == "sft":
            color = SFT_COLORS[index % len(SFT_COLORS)]
        else:
            color = PALETTE[index % len(PALETTE)]
        linestyle = OBJECTIVES[objective].linestyle(spec, peers)
        # labels: only the runs this figure shows
        styles[run] = RunStyle(color, linestyle, labels.get(run, run))
    return styles


def _matplotlib() -> Any:
    """matplotlib, imported on first use (see the module docstring), headless."""
    import matplotlib

    matplotlib.use("Agg")  # jobs run on cluster nodes without a display
    return matplotlib


def _new_figure(**kwargs: Any) -> Figure:
    _matplotlib()
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with _matplotlib().rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def save_figure(fig: Figure, png: str | Path, pdf: str | Path) -> None:
    """Write the figure as PNG (300 dpi) and PDF, atomically and without timestamps."""
    with _matplotlib().rc_context(STYLE):
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=300, metadata={"Software": None})
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "Producer": None})


# -------------------------------------------------------------- validation


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}")
    if frame.empty:
        raise ValueError(f"{what}: no rows")
    return frame.sort_values("step") if "step" in frame.columns else frame


def _percent(values: pd.Series, what: str) -> pd.Series:
    if (values.dropna() > 1.0).any():
        raise ValueError(f"{what}: accuracy must be a fraction in [0, 1]")
    return 100.0 * values


def _legend_below(fig: Figure, axes, ncol: int) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


# ------------------------------------------------------------------ figures


@_styled
def plot_fig2(curves: Mapping[str, pd.DataFrame], styles: Mapping[str, RunStyle],
              benchmark_label: str) -> Figure:
    """Figure 2: SFT accuracy vs epoch (one line per SFT run, band = ±1 SEM)."""
    fig = _new_figure(figsize=(SINGLE_COLUMN, 2.3))
    ax = fig.subplots()
    for run, frame in curves.items():
        frame = _require(frame, ["epoch", "accuracy", "sem"], f"curve {run}")
        acc = _percent(frame["accuracy"], f"curve {run}")
        sem = 100.0 * frame["sem"].fillna(0.0)
        st = styles[run]
        ax.plot(frame["epoch"], acc, marker="o", **st.kw())
        ax.fill_between(frame["epoch"], acc - sem, acc + sem, color=st.color, alpha=0.15,
                        linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{benchmark_label} accuracy (%)")
    ax.legend(loc="lower right", frameon=False)
    return fig


def _dynamics(curves: Mapping[str, pd.DataFrame], logs: Mapping[str, pd.DataFrame],
              styles: Mapping[str, RunStyle], benchmark_label: str,
              step_sizes: Sequence[str]) -> Figure:
    """Panels vs training step: accuracy, chosen LogPS, rejected LogPS, then one panel
    per step-size column of the log (``STEP_SIZE``)."""
    unknown = [c for c in step_sizes if c not in STEP_SIZE]
    if unknown or not step_sizes:
        raise ValueError(f"step sizes must be some of {list(STEP_SIZE)}, not {list(step_sizes)}")
    fig = _new_figure(figsize=(FULL_WIDTH, PANEL_HEIGHT + 0.3))
    axes = fig.subplots(1, 3 + len(step_sizes))
    positive = dict.fromkeys(step_sizes, True)
    for run, curve in curves.items():
        curve = _require(curve, ["step", "accuracy"], f"curve {run}")
        log = _require(logs[run], ["step", "chosen_logps", "rejected_logps", *step_sizes],
                       f"log {run}")
        kw = styles[run].kw()
        axes[0].plot(curve["step"], _percent(curve["accuracy"], f"curve {run}"), marker="o",
                     **kw)
        axes[1].plot(log["step"], log["chosen_logps"], **kw)
        axes[2].plot(log["step"], log["rejected_logps"], **kw)
        for ax, column in zip(axes[3:], step_sizes, strict=True):
            ax.plot(log["step"], log[column], **kw)
            positive[column] &= bool((log[column].dropna() > 0).all())
    panels = [
        (f"{benchmark_label} accuracy", "accuracy (%)"),
        ("Chosen LogPS", "mean log-prob per token (nats)"),
        ("Rejected LogPS", "mean log-prob per token (nats)"),
        *(STEP_SIZE[c] for c in step_sizes),
    ]
    for ax, (panel_title, panel_ylabel) in zip(axes, panels, strict=True):
        ax.set_title(panel_title)
        ax.set_ylabel(panel_ylabel)
        ax.set_xlabel("training step")
    for ax, column in zip(axes[3:], step_sizes, strict=True):
        if positive[column]:  # step sizes of runs with 10-100x different LRs share a panel
            ax.set_yscale("log")
    _legend_below(fig, axes, ncol=min(len(curves), 4))
    return fig


@_styled
def plot_dynamics(curves: Mapping[str, pd.DataFrame], logs: Mapping[str, pd.DataFrame],
                  styles: Mapping[str, RunStyle], benchmark_label: str,
                  step_sizes: Sequence[str] = STEP_SIZES) -> Figure:
    """Figures 3, 5, 6, 7 (DPO dynamics for β with matched initial step sizes; SimPO;
    symmetric REDI vs REDI α = 0.8; the α ablation): one layout, the runs differ."""
    return _dynamics(curves, logs, styles, benchmark_label, step_sizes)


@_styled
def plot_fig4(curves: Mapping[str, pd.DataFrame], styles: Mapping[str, RunStyle],
              specs: Mapping[str, Mapping[str, Any]], benchmark_label: str) -> Figure:
    """Figure 4: DPO accuracy vs step, LR sweeps; one panel per β (ascending)."""
    no_beta = [run for run in curves if "beta" not in specs[run]]
    if no_beta:
        raise ValueError(f"Figure 4 splits DPO runs by β; {no_beta} have no β")
    betas = sorted({specs[run]["beta"] for run in curves})
    fig = _new_figure(figsize=(FULL_WIDTH, 2.4))
    axes = fig.subplots(1, len(betas), sharey=True, squeeze=False)[0]
    for ax, beta in zip(axes, betas, strict=True):
        for run, curve in curves.items():
            if specs[run]["beta"] != beta:
                continue
            curve = _require(curve, ["step", "accuracy"], f"curve {run}")
            ax.plot(curve["step"], _percent(curve["accuracy"], f"curve {run}"), marker="o",
                    **styles[run].kw())
        ax.set_title(f"DPO β = {beta:g}")
        ax.set_xlabel("training step")
        ax.legend(loc="lower right", frameon=False)
    axes[0].set_ylabel(f"{benchmark_label} accuracy (%)")
    return fig


@_styled
def plot_fig8(genstats: pd.DataFrame, benchmark: str, benchmark_label: str,
              style: RunStyle) -> Figure:
    """Figure 8: generation statistics vs REDI training step (step 0 = the SFT model)."""
    frame = _require(genstats, ["step", "benchmark", "mean_tokens", "mean_wait",
                                "wait_per_1k_tokens"], "genstats")
    frame = frame[frame["benchmark"] == benchmark]
    if frame.empty:
        raise ValueError(f"genstats: no rows for benchmark {benchmark!r}")
    fig = _new_figure(figsize=(FULL_WIDTH, PANEL_HEIGHT + 0.3))
    axes = fig.subplots(1, 3)
    panels = [
        ("mean_tokens", "Average prediction tokens", "tokens per response"),
        ("mean_wait", "Average “Wait” occurrences", "“Wait” per response"),
        ("wait_per_1k_tokens", "Normalised “Wait” occurrences", "“Wait” per 1,000 tokens"),
    ]
    for ax, (column, title, ylabel) in zip(axes, panels, strict=True):
        ax.plot(frame["step"], frame[column], marker="o", **style.kw())
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("REDI training step (0 = SFT model)")
    fig.suptitle(f"{style.label}, {benchmark_label}")
    return fig


TYPE_COLORS = {"train_chosen": "#2ca02c", "train_rejected": "#d62728",
               "test_generated": "#1f77b4"}


def plot_fig9(entropy: pd.DataFrame, style: RunStyle, generated_from: str) -> Figure:
    """Figure 9: mean token entropy (teacher-forced) per sample type vs training step."""
    frame = _require(entropy, ["step", "sample_type", "mean_entropy"], "entropy")
    fig = _new_figure(figsize=(SINGLE_COLUMN, PANEL_HEIGHT + 0.4))
    ax = fig.subplots()
    for kind, color in TYPE_COLORS.items():
        rows = frame[frame["sample_type"] == kind].sort_values("step")
        if not rows.empty:
            ax.plot(rows["step"], rows["mean_entropy"], marker="o", color=color, label=kind)
    ax.set_xlabel("REDI training step (0 = SFT model)")
    ax.set_ylabel("average token entropy (nats)")
    ax.set_title(f"{style.label}; test_generated: {generated_from}")
    ax.legend(frameon=False)
    return fig


def plot_fig10(token_logps: pd.DataFrame, style: RunStyle, after: int) -> Figure:
    """Figure 10: Δ LogP (after - before) against LogP before, per vocabulary token of
    the chosen responses; tokens seen >= 1 and >= 10 times; the fitted line and r."""
    from redi.report.token_stats import correlation, token_deltas

    deltas = token_deltas(_require(token_logps, ["step", "token_id", "logp"], "token_logps"),
                          0, after)
    fig = _new_figure(figsize=(FULL_WIDTH, PANEL_HEIGHT + 0.6))
    for ax, min_freq in zip(fig.subplots(1, 2), (1, 10), strict=True):
        rows = deltas[deltas["frequency"] >= min_freq]
        fit = correlation(deltas, min_freq)
        ax.scatter(rows["logp_before"], rows["delta_logp"], s=3, alpha=0.5, color=style.color,
                   linewidths=0)
        if fit["n_tokens"] >= 2 and fit["slope"] == fit["slope"]:  # not NaN
            xs = [rows["logp_before"].min(), rows["logp_before"].max()]
            ax.plot(xs, [fit["intercept"] + fit["slope"] * x for x in xs], color="black")
        ax.set_title(f"tokens with frequency ≥ {min_freq}: n = {fit['n_tokens']}, "
                     f"r = {fit['pearson_r']:.3f}")
        ax.set_xlabel("LogP before REDI (SFT model)")
        ax.set_ylabel(f"Δ LogP (step {after} − SFT)")
    fig.suptitle(style.label)
    return fig


# ------------------------------------------------------------ the registry


@dataclass(frozen=True)
class FigureData:
    """What a figure job hands its plot function: the job's params (``redi.workflow.plan.
    figure_params``), the run styles and the frames the figure reads, by run."""

    params: Mapping[str, Any]
    styles: Mapping[str, RunStyle]
    frames: Mapping[str, Any] = field(default_factory=dict)  # READS kind -> what it read

    @property
    def benchmark(self) -> Mapping[str, str]:
        return self.params["benchmark"]

    @property
    def curves(self) -> Mapping[str, pd.DataFrame]:
        return self.frames.get("curves", {})

    @property
    def logs(self) -> Mapping[str, pd.DataFrame]:
        return self.frames.get("logs", {})

    def one(self, kind: str) -> pd.DataFrame:
        """The single frame of a kind read for the figure's one run (genstats, ...)."""
        return self.frames[kind]

    @property
    def run_style(self) -> RunStyle:
        (run,) = self.params["runs"]
        return self.styles[run]


# what a figure job may read, each per run: rule inputs of the same names
def _per_run_csv(run_of: Callable[[Path], str], what: str):
    return lambda paths, runs: _by_run(paths, run_of, runs, what)


def _single(read: Callable[[Path], Any], what: str):
    def reader(paths: Sequence[str | Path], runs: Sequence[str]) -> Any:
        if len(paths) != 1:
            raise ValueError(f"a figure of one run needs one {what} file, got {len(paths)}")
        return read(Path(paths[0]))
    return reader


def _csv(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path)


def _parquet(path: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path)


# what a figure can read, per run it shows (paths: redi.workflow.plan.FIGURE_INPUTS)
READERS: dict[str, Callable[[Sequence[str | Path], Sequence[str]], Any]] = {
    "curves": _per_run_csv(lambda p: p.stem, "curve"),
    "logs": _per_run_csv(lambda p: p.parent.name, "training log"),
    "genstats": _single(_csv, "genstats"),
    "entropy": _single(_csv, "entropy"),
    "token_logps": _single(_parquet, "token log-prob"),
}
READS = tuple(READERS)
# which runs a figure shows: the SFT runs, a list of runs (config `figures.<name>`) or one run
SHOWS = ("sft", "runs", "run")


@dataclass(frozen=True)
class FigureKind:
    """A registry entry: how a figure is drawn and what its job needs.

    ``reads``: which of ``READS`` the job gets for every run it shows; ``shows``: one
    of ``SHOWS`` (``runs``/``run``: the config's ``figures.<name>`` lists them, validated
    by ``redi.workflow.config``); ``benchmark``: the preset key naming the benchmark it shows.
    """

    draw: Callable[[FigureData], Figure]
    reads: tuple[str, ...] = ("curves",)
    shows: str = "runs"
    benchmark: str = "intermediate_benchmark"


def _draw_dynamics(data: FigureData) -> Figure:
    return plot_dynamics(data.curves, data.logs, data.styles, data.benchmark["label"],
                         data.params["step_sizes"])


def _draw_fig8(data: FigureData) -> Figure:
    return plot_fig8(data.one("genstats"), data.benchmark["name"], data.benchmark["label"],
                     data.run_style)


def _draw_fig9(data: FigureData) -> Figure:
    source = f"Figure 8's generations ({data.benchmark['label']}, final protocol)"
    return plot_fig9(data.one("entropy"), data.run_style, source)


def _draw_fig10(data: FigureData) -> Figure:
    tokens = data.one("token_logps")
    return plot_fig10(tokens, data.run_style, int(tokens["step"].max()))


_DYNAMICS = FigureKind(_draw_dynamics, reads=("curves", "logs"))
FIGURES: dict[str, FigureKind] = {
    "fig2": FigureKind(lambda d: plot_fig2(d.curves, d.styles, d.benchmark["label"]),
                       shows="sft"),
    "fig3": _DYNAMICS,
    "fig4": FigureKind(lambda d: plot_fig4(d.curves, d.styles, d.params["specs"],
                                           d.benchmark["label"])),
    "fig5": _DYNAMICS,
    "fig6": _DYNAMICS,
    "fig7": _DYNAMICS,
    "fig8": FigureKind(_draw_fig8, reads=("genstats",), shows="run",
                       benchmark="fig8_benchmark"),
    "fig9": FigureKind(_draw_fig9, reads=("entropy",), shows="run", benchmark="fig8_benchmark"),
    "fig10": FigureKind(_draw_fig10, reads=("token_logps",), shows="run"),
}


# ---------------------------------------------------------------- job entry


def _by_run(paths: Sequence[str | Path], run_of: Callable[[Path], str],
            runs: Sequence[str], what: str) -> dict[str, pd.DataFrame]:
    """Read one CSV per run, in the figure's run order (names come from the paths)."""
    import pandas as pd

    frames = {run_of(Path(p)): pd.read_csv(p) for p in paths}
    missing = [r for r in runs if r not in frames]
    if missing:
        raise ValueError(f"no {what} for runs {missing}")
    return {r: frames[r] for r in runs}


def _read(kind: FigureKind, params: Mapping[str, Any],
          paths: Mapping[str, Sequence[str | Path]]) -> dict[str, Any]:
    """What ``kind`` reads (``READERS``), from the job's input paths by kind."""
    return {name: READERS[name](paths.get(name, []), params["runs"]) for name in kind.reads}


def make_figure(params: Mapping[str, Any], inputs: Mapping[str, Sequence[str | Path]],
                png: str | Path, pdf: str | Path) -> None:
    """The figure job. ``params``: figure, runs, palette, specs, labels, benchmark
    ({name, label}) and step_sizes (``redi.workflow.report_plan.figure_params``); ``inputs``: paths by
    ``READS`` kind."""
    figure = params["figure"]
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; known: {sorted(FIGURES)}")
    kind = FIGURES[figure]
    styles = run_styles(params["palette"], params["specs"], params["labels"])
    save_figure(kind.draw(FigureData(params, styles, _read(kind, params, inputs))), png, pdf)
    log.info("%s (%s) -> %s, %s", figure, ", ".join(params["runs"]), png, pdf)
