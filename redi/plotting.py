"""Figures 2-8 of the paper from the evaluation curves, training logs and
generation statistics; one function per figure, one shared style.

Inputs (see docs/ARCHITECTURE.md):

- curves ``results/eval/curves/<run>.csv``: ``step, epoch, accuracy, sem, ...``,
  accuracy and SEM as fractions (pass@1 over the intermediate samples);
- training logs ``results/train/<run>/log.csv``: one row per optimizer step,
  ``chosen_logps, rejected_logps`` (mean per-token log-probs), ``update_norm``
  (‖Δθ‖₂ of the optimizer step) and ``lr_x_grad_norm``. The LogPS and step-size
  panels use these per-step logs (denser than the evaluated checkpoints);
- generation statistics ``results/eval/genstats/<run>.csv`` (Figure 8).

Every run keeps one colour in every figure (``run_styles``); the line style
encodes the regulariser (DPO/SimPO β, symmetric vs asymmetric REDI).
Functions return a ``matplotlib.figure.Figure``; ``save_figure`` writes the
PNG and the PDF (no timestamps, so a rerun gives identical files).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: jobs run on cluster nodes without a display

import matplotlib as mpl  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from redi.io import atomic_path  # noqa: E402

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
LINESTYLES = ["-", "--", ":", "-."]

# the step-size panel: which log column, its title and axis label
STEP_SIZE = {
    "update_norm": ("Update norm", "‖Δθ‖₂ per step"),
    "lr_x_grad_norm": ("LR × gradient norm", "LR × ‖∇L‖₂ (pre-clip)"),
}


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
    share a figure never share a colour. SFT runs are black and grey.
    """
    styles: dict[str, RunStyle] = {}
    seen: dict[str, int] = {}
    for run in palette:
        spec = specs[run]
        objective = spec["objective"]
        index = seen.get(objective, 0)
        seen[objective] = index + 1
        if objective == "sft":
            color = SFT_COLORS[index % len(SFT_COLORS)]
        else:
            color = PALETTE[index % len(PALETTE)]
        # labels: only the runs this figure shows
        styles[run] = RunStyle(color, _linestyle(spec, palette, specs), labels.get(run, run))
    return styles


def _linestyle(spec: Mapping[str, Any], palette: Sequence[str],
               specs: Mapping[str, Mapping[str, Any]]) -> str:
    objective = spec["objective"]
    if objective == "redi":  # symmetric REDI (α = 1) dashed, as in the paper's Fig. 6
        return "--" if spec.get("alpha", 0.0) >= 1.0 else "-"  # α: own runs only
    if objective in ("dpo", "simpo"):  # stronger regularisation (larger β): sparser dashes
        betas = sorted({specs[r]["beta"] for r in palette if specs[r]["objective"] == objective})
        return LINESTYLES[betas.index(spec["beta"]) % len(LINESTYLES)]
    return "-"


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def save_figure(fig: Figure, png: str | Path, pdf: str | Path) -> None:
    """Write the figure as PNG (300 dpi) and PDF, atomically and without timestamps."""
    with mpl.rc_context(STYLE):
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
    fig = Figure(figsize=(SINGLE_COLUMN, 2.3), layout="constrained")
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
              step_size: str) -> Figure:
    """Four panels vs training step: accuracy, chosen LogPS, rejected LogPS, step size."""
    if step_size not in STEP_SIZE:
        raise ValueError(f"step_size must be one of {list(STEP_SIZE)}, not {step_size!r}")
    fig = Figure(figsize=(FULL_WIDTH, PANEL_HEIGHT + 0.3), layout="constrained")
    axes = fig.subplots(1, 4)
    positive = True
    for run, curve in curves.items():
        curve = _require(curve, ["step", "accuracy"], f"curve {run}")
        log = _require(logs[run], ["step", "chosen_logps", "rejected_logps", step_size],
                       f"log {run}")
        kw = styles[run].kw()
        axes[0].plot(curve["step"], _percent(curve["accuracy"], f"curve {run}"), marker="o",
                     **kw)
        axes[1].plot(log["step"], log["chosen_logps"], **kw)
        axes[2].plot(log["step"], log["rejected_logps"], **kw)
        axes[3].plot(log["step"], log[step_size], **kw)
        positive &= bool((log[step_size].dropna() > 0).all())
    title, ylabel = STEP_SIZE[step_size]
    panels = [
        (f"{benchmark_label} accuracy", "accuracy (%)"),
        ("Chosen LogPS", "mean log-prob per token (nats)"),
        ("Rejected LogPS", "mean log-prob per token (nats)"),
        (title, ylabel),
    ]
    for ax, (panel_title, panel_ylabel) in zip(axes, panels, strict=True):
        ax.set_title(panel_title)
        ax.set_ylabel(panel_ylabel)
        ax.set_xlabel("training step")
    if positive:  # step sizes of runs with 10-100x different LRs share the panel
        axes[3].set_yscale("log")
    _legend_below(fig, axes, ncol=min(len(curves), 4))
    return fig


@_styled
def plot_dynamics(curves: Mapping[str, pd.DataFrame], logs: Mapping[str, pd.DataFrame],
                  styles: Mapping[str, RunStyle], benchmark_label: str,
                  step_size: str = "update_norm") -> Figure:
    """Figures 3, 5, 6, 7 (DPO dynamics for β with matched initial step sizes; SimPO;
    symmetric REDI vs REDI α = 0.8; the α ablation): one layout, the runs differ."""
    return _dynamics(curves, logs, styles, benchmark_label, step_size)


@_styled
def plot_fig4(curves: Mapping[str, pd.DataFrame], styles: Mapping[str, RunStyle],
              specs: Mapping[str, Mapping[str, Any]], benchmark_label: str) -> Figure:
    """Figure 4: DPO accuracy vs step, LR sweeps; one panel per β (ascending)."""
    no_beta = [run for run in curves if "beta" not in specs[run]]
    if no_beta:
        raise ValueError(f"Figure 4 splits DPO runs by β; {no_beta} have no β")
    betas = sorted({specs[run]["beta"] for run in curves})
    fig = Figure(figsize=(FULL_WIDTH, 2.4), layout="constrained")
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
    fig = Figure(figsize=(FULL_WIDTH, PANEL_HEIGHT + 0.3), layout="constrained")
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


DYNAMICS = {figure: plot_dynamics for figure in ("fig3", "fig5", "fig6", "fig7")}


# ---------------------------------------------------------------- job entry


def _by_run(paths: Sequence[str | Path], run_of: Callable[[Path], str],
            runs: Sequence[str], what: str) -> dict[str, pd.DataFrame]:
    """Read one CSV per run, in the figure's run order (names come from the paths)."""
    frames = {run_of(Path(p)): pd.read_csv(p) for p in paths}
    missing = [r for r in runs if r not in frames]
    if missing:
        raise ValueError(f"no {what} for runs {missing}")
    return {r: frames[r] for r in runs}


def make_figure(params: Mapping[str, Any], curves: Sequence[str | Path],
                logs: Sequence[str | Path], genstats: str | Path | None,
                png: str | Path, pdf: str | Path) -> None:
    """The figure job. ``params``: figure, runs, palette, specs, labels, benchmark
    ({name, label}) and step_size (see rules/report.smk)."""
    figure, runs = params["figure"], params["runs"]
    styles = run_styles(params["palette"], params["specs"], params["labels"])
    bench = params["benchmark"]
    if figure == "fig8":
        if genstats is None:
            raise ValueError("fig8 needs --genstats")
        fig = plot_fig8(pd.read_csv(genstats), bench["name"], bench["label"], styles[runs[0]])
    else:
        curve = _by_run(curves, lambda p: p.stem, runs, "curve")
        if figure == "fig2":
            fig = plot_fig2(curve, styles, bench["label"])
        elif figure == "fig4":
            fig = plot_fig4(curve, styles, params["specs"], bench["label"])
        elif figure in DYNAMICS:
            train_logs = _by_run(logs, lambda p: p.parent.name, runs, "training log")
            fig = DYNAMICS[figure](curve, train_logs, styles, bench["label"],
                                   params["step_size"])
        else:
            raise ValueError(f"unknown figure {figure!r}")
    save_figure(fig, png, pdf)
    log.info("%s (%s) -> %s, %s", figure, ", ".join(runs), png, pdf)
