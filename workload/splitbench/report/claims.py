"""The "paper vs measured" table: each headline figure of a paper beside ours."""
from __future__ import annotations

import math

import pandas as pd

from ..spec import PaperClaim


def _find(summary: pd.DataFrame, name: str) -> pd.Series | None:
    hits = summary[(summary["experiment"] == name) | summary["experiment"].str.endswith("-" + name)]
    return hits.iloc[0] if len(hits) == 1 else None


def _metric(row: pd.Series, metric: str) -> float:
    if metric == "bytes_per_sample":
        return float(row["bytes_per_sample_up"]) + float(row["bytes_per_sample_down"])
    return float(row[metric])


def _speedup(budgets: pd.DataFrame | None, c: PaperClaim) -> tuple[float, str | None]:
    """The numerator's budget stage: the denominator's (from-scratch) time to its final
    accuracy over the time the stage took to reach it (report/budgets.py); and why not,
    when it cannot be measured."""
    if budgets is None or budgets.empty or "speedup_vs_scratch" not in budgets:
        return math.nan, None
    hits = budgets[(budgets["experiment"].str.endswith(c.numerator)) & (budgets["budget"] == c.budget)]
    if len(hits) != 1:
        return math.nan, None
    row = hits.iloc[0]
    if math.isnan(row["speedup_vs_scratch"]) and not math.isnan(row.get("scratch_accuracy", math.nan)):
        return math.nan, (f"not reached: the stage ended at {row['final_accuracy']:.3f}, below the from-scratch "
                          f"run's {row['scratch_accuracy']:.3f}")
    return float(row["speedup_vs_scratch"]), None


def claims_table(summary: pd.DataFrame, claims: list[PaperClaim], tolerance: float = 0.2,
                 budgets: pd.DataFrame | None = None) -> pd.DataFrame:
    rows = []
    for c in claims:
        num, den = _find(summary, c.numerator), _find(summary, c.denominator)
        measured, why = math.nan, None
        if c.metric == "speedup_vs_scratch":
            measured, why = _speedup(budgets, c)
        elif num is not None and den is not None and _metric(den, c.metric):
            measured = _metric(num, c.metric) / _metric(den, c.metric)
        if why:
            verdict = why
        elif math.isnan(measured):
            verdict = "not measured (a run is missing or failed)"
        elif abs(measured / c.paper - 1) <= tolerance:
            verdict = f"agrees (within {100 * tolerance:.0f}%)"
        else:
            verdict = f"DIFFERS: ours is {measured / c.paper:.2f}x the paper's figure"
        rows.append({"claim": c.claim, "source": c.source, "metric": f"{c.metric}: {c.numerator} / {c.denominator}",
                     "paper": c.paper, "measured": measured, "verdict": verdict})
    return pd.DataFrame(rows)
