"""The paper's findings as explicit rules over this run's own numbers.

Each entry of ``CLAIMS`` states one finding of the paper, the rule that decides it from
this run's tables (``results/table*.csv``, pass@1 ± SEM in %) and intermediate curves
(``results/eval/curves/<run>.csv``, accuracy and SEM as fractions), and the paper's own
figure. A rule gives a ``Verdict``: ``holds``, ``does not hold`` or ``not enough evidence``
(an input is missing, or the difference lies within the noise).

Differences of pass@1 are judged against their noise: with σ = √(SEM_a² + SEM_b²), a
difference above ``SEM_FACTOR``·σ holds, one below −``SEM_FACTOR``·σ does not, anything
between is not enough evidence. pass@16 has no SEM (the paper reports none): it is
compared as is.

Adding a claim = one check function + one ``CLAIMS`` entry. ``redi.workflow.report_plan.claims_spec`` (the
job's parameters) and ``redi.workflow.report_plan.claims_inputs`` read the config; the module imports pandas lazily,
because the Snakefile reads them while it parses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redi.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

HOLDS, FAILS, UNKNOWN = "holds", "does not hold", "not enough evidence"
SEM_FACTOR = 1.0  # how many σ a difference must exceed to count
COLUMNS = ["claim", "statement", "verdict", "ours", "paper", "rule", "detail"]


class MissingEvidence(Exception):
    """An input the rule needs is absent (a table not built, a run not trained)."""


@dataclass(frozen=True)
class Verdict:
    verdict: str  # HOLDS, FAILS or UNKNOWN
    ours: str  # this run's numbers, in the paper's terms
    detail: str = ""


@dataclass
class Evidence:
    """This run's numbers: tables by name (``table1``, ``table2_pass16``, ...), curves
    by run, and the job's spec (``redi.workflow.report_plan.claims_spec``: groups, runs' hyper-parameters)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    spec: Mapping[str, Any] = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame:
        if name not in self.tables:
            raise MissingEvidence(f"no {name} in this run")
        return self.tables[name]

    def curve(self, run: str) -> pd.DataFrame:
        if run not in self.curves:
            raise MissingEvidence(f"no curve of run {run}")
        return self.curves[run]


@dataclass(frozen=True)
class Claim:
    """A registry entry: the paper's statement, the rule in words, the paper's figure,
    and ``check`` (evidence -> verdict) implementing the rule."""

    statement: str
    rule: str
    paper: str
    check: Callable[[Evidence], Verdict]


# ------------------------------------------------------------------ helpers


def row(frame: pd.DataFrame, label: str) -> pd.Series:
    """The table row of one final-evaluation label (``table2-redi``, ``sft_3ep``, ...)."""
    hits = frame[frame["label"] == label]
    if hits.empty:
        raise MissingEvidence(f"no row {label!r}")
    return hits.iloc[0]


def _sem(value: Any) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def compare(a: float, sem_a: float, b: float, sem_b: float) -> tuple[str, float, float]:
    """Verdict, difference and σ of "a beats b" (see the module docstring)."""
    diff, sigma = a - b, math.hypot(_sem(sem_a), _sem(sem_b))
    if diff > SEM_FACTOR * sigma:
        return HOLDS, diff, sigma
    if diff < -SEM_FACTOR * sigma:
        return FAILS, diff, sigma
    return UNKNOWN, diff, sigma


def _beats(frame: pd.DataFrame, winner: str, loser: str, column: str = "avg") -> Verdict:
    """Verdict of "row ``winner`` has a higher ``column`` than row ``loser``"."""
    w, lo = row(frame, winner), row(frame, loser)
    sem = f"{column}_sem"
    verdict, diff, sigma = compare(w[column], w.get(sem), lo[column], lo.get(sem))
    ours = (f"{w['model']} {w[column]:.1f} ± {_sem(w.get(sem)):.1f} vs {lo['model']} "
            f"{lo[column]:.1f} ± {_sem(lo.get(sem)):.1f}")
    return Verdict(verdict, ours, f"diff {diff:+.2f}, σ {sigma:.2f}")


def _group(ev: Evidence, kind: str) -> str:
    """The Table 2 label of the group of ``kind`` (dpo, simpo, symmetric, redi)."""
    groups = ev.spec.get("groups", {})
    if kind not in groups:
        raise MissingEvidence(f"Table 2 has no {kind} group")
    return groups[kind]["label"]


def peak(curve: pd.DataFrame) -> pd.Series:
    """The run's own checkpoint (step > 0) with the highest accuracy; ties -> earliest."""
    own = curve[curve["step"] > 0].sort_values("step", kind="stable")
    if own.empty:
        raise MissingEvidence("curve has no checkpoint of the run")
    return own.loc[own["accuracy"].idxmax()]


def _pct(r: pd.Series) -> str:
    return f"{100 * r['accuracy']:.1f} ± {100 * _sem(r['sem']):.1f} (step {int(r['step'])})"


# ------------------------------------------------------------------- checks


def redi_beats_sft(ev: Evidence) -> Verdict:
    return _beats(ev.table("table2"), _group(ev, "redi"), ev.spec["table2_start"])


def final_beats_sft5ep(ev: Evidence) -> Verdict:
    return _beats(ev.table("table1"), "table1-final", ev.spec["table1_sft"])


def redi_beats_dpo(ev: Evidence) -> Verdict:
    return _beats(ev.table("table2"), _group(ev, "redi"), _group(ev, "dpo"))


def redi_beats_simpo(ev: Evidence) -> Verdict:
    return _beats(ev.table("table2"), _group(ev, "redi"), _group(ev, "simpo"))


def _runs(ev: Evidence, objective: str) -> dict[str, Mapping[str, Any]]:
    return {r: s for r, s in ev.spec.get("runs", {}).items() if s["objective"] == objective}


def asymmetric_beats_symmetric(ev: Evidence) -> Verdict:
    """At each LR with both: the largest α < 1 run's peak vs the α = 1 run's peak."""
    redi = _runs(ev, "redi")
    pairs = []
    for run, spec in redi.items():
        if spec["alpha"] != 1.0:
            continue
        asym = [r for r, s in redi.items() if s["alpha"] < 1.0 and s["lr"] == spec["lr"]]
        if asym:
            pairs.append((max(asym, key=lambda r: redi[r]["alpha"]), run))
    if not pairs:
        raise MissingEvidence("no LR with both an α < 1 and an α = 1 REDI run")
    verdicts, parts = [], []
    for asym, sym in pairs:
        a, s = peak(ev.curve(asym)), peak(ev.curve(sym))
        verdicts.append(compare(a["accuracy"], a["sem"], s["accuracy"], s["sem"])[0])
        parts.append(f"LR {redi[sym]['lr']:g}: α {redi[asym]['alpha']:g} {_pct(a)} vs "
                     f"α 1 {_pct(s)}")
    return Verdict(all_of(verdicts), "; ".join(parts), "peak intermediate accuracy")


def all_of(verdicts: Iterable[str]) -> str:
    """One verdict from several that must all hold: any failure fails, any doubt doubts."""
    verdicts = list(verdicts)
    if FAILS in verdicts:
        return FAILS
    return UNKNOWN if UNKNOWN in verdicts else HOLDS


def _dpo_peaks(ev: Evidence) -> dict[str, pd.Series]:
    dpo = _runs(ev, "dpo")
    peaks = {r: peak(ev.curves[r]) for r in dpo if r in ev.curves}
    if len({dpo[r]["beta"] for r in peaks}) < 2:
        raise MissingEvidence("DPO curves for fewer than two β")
    return peaks


def dpo_best_small_beta(ev: Evidence) -> Verdict:
    """The best DPO run (peak) has the grid's smallest β and an LR below the grid's
    largest, and its peak beats every larger-β run's peak beyond the noise."""
    dpo, peaks = _runs(ev, "dpo"), _dpo_peaks(ev)
    best = max(peaks, key=lambda r: (peaks[r]["accuracy"], -peaks[r]["step"]))
    beta, lr = dpo[best]["beta"], dpo[best]["lr"]
    small = min(dpo[r]["beta"] for r in peaks)
    top_lr = max(dpo[r]["lr"] for r in peaks if dpo[r]["beta"] == beta)
    ours = f"best {best} (β {beta:g}, LR {lr:g}) peak {_pct(peaks[best])}"
    if beta != small or lr >= top_lr:
        return Verdict(FAILS, ours, f"grid's smallest β {small:g}, its largest LR {top_lr:g}")
    others = [r for r in peaks if dpo[r]["beta"] > beta]
    rival = max(others, key=lambda r: peaks[r]["accuracy"])
    b, o = peaks[best], peaks[rival]
    verdict, diff, sigma = compare(b["accuracy"], b["sem"], o["accuracy"], o["sem"])
    return Verdict(verdict, ours, f"vs best larger-β run {rival} {_pct(o)}: "
                                  f"diff {100 * diff:+.2f}, σ {100 * sigma:.2f}")


def dpo_high_lr_collapses(ev: Evidence) -> Verdict:
    """The smallest-β DPO run at the grid's largest LR ends below its peak by more than
    the noise (its last checkpoint vs its best)."""
    dpo = _runs(ev, "dpo")
    if not dpo:
        raise MissingEvidence("no DPO runs")
    small = min(s["beta"] for s in dpo.values())
    lr = max(s["lr"] for s in dpo.values() if s["beta"] == small)
    run = next(r for r, s in dpo.items() if s["beta"] == small and s["lr"] == lr)
    curve = ev.curve(run)
    top = peak(curve)
    last = curve.sort_values("step", kind="stable").iloc[-1]
    verdict, drop, sigma = compare(top["accuracy"], top["sem"], last["accuracy"], last["sem"])
    ours = f"{run}: peak {_pct(top)}, last {_pct(last)}"
    # the last checkpoint being the peak is no collapse, whatever the noise
    return Verdict(FAILS if drop <= 0 else verdict, ours,
                   f"drop {100 * drop:.2f}, σ {100 * sigma:.2f}")


def pass16_kept(ev: Evidence) -> Verdict:
    """REDI's mean pass@16 is at least its SFT start's, in Table 2 and in Table 1."""
    pairs = [("table2_pass16", _group(ev, "redi"), ev.spec["table2_start"]),
             ("table1_pass16", "table1-final", ev.spec["table1_sft"])]
    verdicts, parts = [], []
    for table, redi, sft in pairs:
        r, s = row(ev.table(table), redi), row(ev.table(table), sft)
        verdicts.append(HOLDS if r["avg"] >= s["avg"] else FAILS)
        parts.append(f"{table}: {r['model']} {r['avg']:.1f} vs {s['model']} {s['avg']:.1f}")
    return Verdict(all_of(verdicts), "; ".join(parts), "mean pass@16 over the benchmarks")


def other_bases(ev: Evidence) -> Verdict:
    """On every other base model, its REDI row's Avg beats its SFT row's."""
    pairs = ev.spec.get("table4", [])
    if not pairs:
        raise MissingEvidence("no other base models in this config")
    frame = ev.table("table4")
    results = [_beats(frame, final, sft) for sft, final in pairs]
    return Verdict(all_of(v.verdict for v in results), "; ".join(v.ours for v in results),
                   "; ".join(v.detail for v in results))


def out_of_domain(ev: Evidence) -> Verdict:
    """On every out-of-domain benchmark the final REDI model beats Table 5's reference."""
    frame, spec = ev.table("table5"), ev.spec.get("table5", {})
    if "table1-final" not in spec.get("models", []):
        raise MissingEvidence("Table 5 has no row of the final REDI model")
    results = [_beats(frame, "table1-final", spec["reference"], b["name"])
               for b in spec["benchmarks"]]
    if not results:
        raise MissingEvidence("no out-of-domain benchmarks")
    parts = [f"{b['label']}: {v.ours}" for b, v in zip(spec["benchmarks"], results, strict=True)]
    return Verdict(all_of(v.verdict for v in results), "; ".join(parts),
                   "; ".join(v.detail for v in results))


# ----------------------------------------------------------------- registry

CLAIMS: dict[str, Claim] = {
    "redi_beats_sft": Claim(
        "REDI improves on its SFT start on the benchmark average.",
        "Table 2: REDI row Avg − start SFT row Avg > σ of the two Avg SEMs.",
        "Table 2: REDI 48.3 ± 0.3 vs SFT-3ep 41.9 ± 0.3", redi_beats_sft),
    "asymmetric_beats_symmetric": Claim(
        "Asymmetric weighting (α < 1) beats symmetric REDI (α = 1) at the same LR.",
        "Curves: at every LR with both, the largest α < 1 run's peak intermediate accuracy "
        "− the α = 1 run's > σ of their SEMs.",
        "Fig. 6: α 1, LR 1e-6 peaks ≈ 80.8 % MATH-500 then collapses; α 0.8, LR 1e-6 has "
        "the highest peak", asymmetric_beats_symmetric),
    "dpo_best_small_beta": Claim(
        "DPO's best setting needs a tiny β and a small LR.",
        "Curves: the DPO run with the highest peak has the grid's smallest β and an LR below "
        "that β's largest, and beats the best larger-β run's peak by > σ.",
        "Table 2 / Fig. 4: best β 0.001, LR 2e-7 (≈ 82.3 % MATH-500 at step 1000)",
        dpo_best_small_beta),
    "dpo_high_lr_collapses": Claim(
        "With a tiny β, DPO at a high LR collapses.",
        "Curve of the smallest-β DPO run at its largest LR: peak − last checkpoint > σ.",
        "Fig. 4: β 0.001, LR 1e-6 peaks ≈ 80.9 % MATH-500, then collapses",
        dpo_high_lr_collapses),
    "redi_beats_dpo": Claim(
        "REDI beats the best DPO run.",
        "Table 2: REDI row Avg − DPO row Avg > σ.",
        "Table 2: REDI 48.3 ± 0.3 vs DPO 47.2 ± 0.4", redi_beats_dpo),
    "redi_beats_simpo": Claim(
        "REDI beats the best SimPO run.",
        "Table 2: REDI row Avg − SimPO row Avg > σ.",
        "Table 2: REDI 48.3 ± 0.3 vs SimPO 47.2 ± 0.4", redi_beats_simpo),
    "pass16_kept": Claim(
        "REDI keeps or improves pass@16.",
        "Tables 2 and 1, pass@16: REDI's mean over the benchmarks ≥ its SFT start's (no SEM).",
        "v2 Tables 6/7: REDI 73.5 vs SFT-3ep 71.1; REDI 75.0 vs SFT-5ep 71.9", pass16_kept),
    "final_beats_sft5ep": Claim(
        "The final REDI model beats SFT-5ep.",
        "Table 1: final REDI row Avg − SFT row Avg > σ.",
        "Table 1: Qwen-REDI-1.5B 49.5 ± 0.3 vs Qwen-SFT-1.5B-5ep 45.8 ± 0.3",
        final_beats_sft5ep),
    "other_bases": Claim(
        "REDI on other base models beats their SFT.",
        "Table 4: for every base model, REDI row Avg − its SFT row Avg > σ.",
        "v2 App. D.2: +17.7 % (Llama-3.2-3B), +4.2 % (Qwen2.5-Math-7B) relative Avg",
        other_bases),
    "out_of_domain": Claim(
        "REDI improves out-of-domain.",
        "Table 5: on every benchmark, final REDI pass@1 − the reference row's > σ.",
        "v2 Table 5: +26.8 % GPQA, +181.2 % HumanEval over SFT-3ep (relative)",
        out_of_domain),
}


def evaluate(claim: Claim, evidence: Evidence) -> Verdict:
    """Run one claim's rule; a missing input is a verdict, not an error."""
    try:
        return claim.check(evidence)
    except MissingEvidence as missing:
        return Verdict(UNKNOWN, "", str(missing))


# ----------------------------------------------------------- job and files


def load_evidence(spec: Mapping[str, Any], tables: Iterable[str | Path],
                  curves: Iterable[str | Path]) -> Evidence:
    """Tables by file stem (``table2_pass16``), curves by run (the curve's file stem)."""
    import pandas as pd

    def read_table(path: str | Path) -> pd.DataFrame:
        # labels stay text (a label like "1" must not become a number)
        return pd.read_csv(path, dtype={"label": str, "model": str}, keep_default_na=True)

    return Evidence(tables={Path(p).stem: read_table(p) for p in tables},
                    curves={Path(p).stem: pd.read_csv(p) for p in curves}, spec=spec)


def claims_frame(evidence: Evidence, claims: Mapping[str, Claim] | None = None) -> pd.DataFrame:
    """One row per claim: statement, verdict, our numbers, the paper's, rule, detail."""
    import pandas as pd

    records = []
    for name, claim in (CLAIMS if claims is None else claims).items():
        v = evaluate(claim, evidence)
        records.append({"claim": name, "statement": claim.statement, "verdict": v.verdict,
                        "ours": v.ours, "paper": claim.paper, "rule": claim.rule,
                        "detail": v.detail})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(frame: pd.DataFrame, spec: Mapping[str, Any]) -> str:
    """The claims as a markdown table, with the rule for noise and a tally."""
    counts = frame["verdict"].value_counts()
    tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in (HOLDS, FAILS, UNKNOWN))
    lines = [f"# The paper's findings on this run (preset {spec['preset']})", "",
             f"{len(frame)} claims: {tally}. A pass@1 difference counts when it exceeds "
             f"{spec['sem_factor']:g} σ, σ = √(SEM_a² + SEM_b²); within ±σ it is not enough "
             "evidence. pass@16 has no SEM and is compared as is.", ""]
    if spec["preset"] != "paper":
        lines += [f"The {spec['preset']} preset trains small models on toy data and toy "
                  "benchmarks: a claim that does not hold here says what this run shows, "
                  "not whether the paper's finding is right at its scale.", ""]
    lines += ["| claim | verdict | ours | paper | rule |", "|:--|:--|:--|:--|:--|"]
    for _, r in frame.iterrows():
        ours = r["ours"] or r["detail"]
        lines.append(f"| {_cell(r['statement'])} | **{r['verdict']}** | {_cell(ours)} | "
                     f"{_cell(r['paper'])} | {_cell(r['rule'])} |")
    return "\n".join(lines) + "\n"


def run_claims(spec: Mapping[str, Any], tables: Iterable[str | Path],
               curves: Iterable[str | Path], csv: str | Path, md: str | Path) -> pd.DataFrame:
    """The job: evaluate every claim, write the CSV and the markdown."""
    frame = claims_frame(load_evidence(spec, tables, curves))
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(md) as tmp:
        Path(tmp).write_text(claims_markdown(frame, spec))
    return frame
