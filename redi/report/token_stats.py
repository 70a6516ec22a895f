"""Figure 10's statistics from per-token log-probs (pandas only: the figure job needs
no torch): per vocabulary token, LogP before and after and its change; Pearson's r."""

from __future__ import annotations

import logging
import math
from typing import Any

from redi.io import write_csv

log = logging.getLogger(__name__)


def token_deltas(frame: Any, before: int, after: int) -> Any:
    """Per vocabulary token of the chosen responses: its frequency (occurrences in the
    sample), mean log-prob before (step ``before``) and after, and the change.

    ``frame``: TOKEN_COLUMNS rows; the same token positions are scored at both steps.
    """
    import pandas as pd

    grouped = {}
    for step, name in ((before, "logp_before"), (after, "logp_after")):
        rows = frame[frame["step"] == step]
        grouped[name] = rows.groupby("token_id")["logp"].mean()
        if name == "logp_before":
            grouped["frequency"] = rows.groupby("token_id")["logp"].size()
    out = pd.DataFrame(grouped).dropna().reset_index()
    out["delta_logp"] = out["logp_after"] - out["logp_before"]
    return out[["token_id", "frequency", "logp_before", "logp_after", "delta_logp"]]


def correlation(deltas: Any, min_frequency: int) -> dict[str, float | int]:
    """Pearson's r of Δ LogP against LogP before and the least-squares line, over the
    tokens seen at least ``min_frequency`` times."""
    rows = deltas[deltas["frequency"] >= min_frequency]
    x, y = rows["logp_before"].to_numpy(float), rows["delta_logp"].to_numpy(float)
    if len(rows) < 2 or x.std() == 0 or y.std() == 0:
        return {"min_frequency": min_frequency, "n_tokens": len(rows), "pearson_r": math.nan,
                "slope": math.nan, "intercept": math.nan}
    r = float(((x - x.mean()) * (y - y.mean())).mean() / (x.std() * y.std()))
    slope = float(r * y.std() / x.std())
    return {"min_frequency": min_frequency, "n_tokens": len(rows), "pearson_r": r,
            "slope": slope, "intercept": float(y.mean() - slope * x.mean())}


MIN_FREQUENCIES = (1, 10)  # the paper's two panels


def run_correlation(tokens_path: str, params: dict[str, Any], out_csv: str) -> None:
    """Figure 10's r and counts per panel (``MIN_FREQUENCIES``) for the run in ``params``."""
    import pandas as pd

    tokens = pd.read_parquet(tokens_path)
    before, after = 0, int(tokens["step"].max())
    deltas = token_deltas(tokens, before, after)
    rows = [{"run": params["run"], "before_step": before, "after_step": after,
             **correlation(deltas, f)} for f in MIN_FREQUENCIES]
    write_csv(out_csv, pd.DataFrame(rows))
    log.info("%s: %s", params["run"], [(r["min_frequency"], r["n_tokens"],
                                        round(r["pearson_r"], 4)) for r in rows])
