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


def claims_table(summary: pd.DataFrame, claims: list[PaperClaim], tolerance: float = 0.2) -> pd.DataFrame:
    rows = []
    for c in claims:
        num, den = _find(summary, c.numerator), _find(summary, c.denominator)
        measured = math.nan
        if num is not None and den is not None and _metric(den, c.metric):
            measured = _metric(num, c.metric) / _metric(den, c.metric)
        if math.isnan(measured):
            verdict = "not measured (a run is missing or failed)"
        elif abs(measured / c.paper - 1) <= tolerance:
            verdict = f"agrees (within {100 * tolerance:.0f}%)"
        else:
            verdict = f"DIFFERS: ours is {measured / c.paper:.2f}x the paper's figure"
        rows.append({"claim": c.claim, "source": c.source, "metric": f"{c.metric}: {c.numerator} / {c.denominator}",
                     "paper": c.paper, "measured": measured, "verdict": verdict})
    return pd.DataFrame(rows)
