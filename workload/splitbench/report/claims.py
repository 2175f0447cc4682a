"""The "paper vs measured" table: each headline figure of a paper beside ours.

Each claim carries its own tolerance and where that band comes from (the paper's own spread,
or a stated reason). Verdicts are three words only: `agrees` (the measured ratio lies within
the band), `differs` (it does not: the claim's one-line `if_differs` reason is shown, or the
table says that no reason is known) and `not measured` (a run is missing or was excluded).
Runs whose status is not `ok` (failed, degraded, unknown) are excluded and listed: a ratio
is never computed from a run that did not finish cleanly.

Repeats: when the summary holds several rows for one experiment (repeats), the ratio is of
the means and its spread the standard deviation propagated from both sides' relative
standard deviations (first order); with one row each the spread is n/a. Speedups (one per
run, from the budget table) are pooled into their median over the repeats, with the
repeats' standard deviation as the spread (_speedup).
"""
from __future__ import annotations

import math
import re

import pandas as pd

from ..model_cost_record import FIGURES_MISSING, figure_key
from ..spec import PaperClaim

VERDICTS = ("agrees", "differs", "not measured")


def _matches(summary: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of the setting `name`: one per repeat where the table is per run (its
    `setting` column), else the row whose experiment is that setting."""
    col = "setting" if "setting" in summary else "experiment"
    if summary.empty or col not in summary:
        return summary
    return summary[(summary[col] == name) | summary[col].str.endswith("-" + name)]


def _usable(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the rows of clean runs, the names of excluded runs with their status)."""
    if rows.empty:
        return rows, []
    status = rows["status"].fillna("unknown").astype(str) if "status" in rows else pd.Series("ok", index=rows.index)
    bad = status != "ok"
    if "degraded" in rows:
        bad |= rows["degraded"].fillna(False).astype(bool)
    excluded = [f"{e} ({'degraded' if s == 'ok' else s})" for e, s in zip(rows.loc[bad, "experiment"], status[bad])]
    return rows[~bad], excluded


def _metric(rows: pd.DataFrame, metric: str) -> pd.Series:
    if metric == "bytes_per_sample":
        return rows["bytes_per_sample_up"].astype(float) + rows["bytes_per_sample_down"].astype(float)
    if metric not in rows:
        return pd.Series(math.nan, index=rows.index)
    return rows[metric].astype(float)


def _ratio(num: pd.Series, den: pd.Series) -> tuple[float, float]:
    num, den = num.dropna(), den.dropna()
    if num.empty or den.empty or den.mean() == 0:
        return math.nan, math.nan
    r = num.mean() / den.mean()
    if len(num) < 2 or len(den) < 2:
        return float(r), math.nan
    rel = math.hypot(num.std(ddof=1) / num.mean() if num.mean() else 0.0, den.std(ddof=1) / den.mean())
    return float(r), float(abs(r) * rel)


def _run_of(names: pd.Series, setting: str) -> pd.Series:
    """Which run names are runs of `setting`: the setting itself or `<suite>-<setting>`, with
    or without a repeat's `-r<k>` suffix (spec.py: Suite.runs)."""
    return names.astype(str).str.contains(rf"(?:^|-){re.escape(setting)}(?:-r\d+)?$", regex=True)


def _speedup(budgets: pd.DataFrame | None, c: PaperClaim) -> tuple[float, float, str]:
    """The numerator's budget stage: the denominator's (from-scratch) time to its final
    accuracy over the time the stage took to reach it (report/budgets.py); and why not,
    when it cannot be measured.

    Repeats are pooled into the median over the runs, with the standard deviation of the
    runs that reached the from-scratch accuracy as the spread. A run that never reached it
    has a speedup below any measured one (its stage ran out first), so it ranks lowest: the
    median is then still defined while fewer than half the runs fell short, and the
    explanation says how many did."""
    if budgets is None or budgets.empty or "speedup_vs_scratch" not in budgets:
        return math.nan, math.nan, ""
    hits = budgets[_run_of(budgets["experiment"], c.numerator) & (budgets["budget"] == c.budget)]
    if hits.empty:
        return math.nan, math.nan, ""
    vals = hits["speedup_vs_scratch"].astype(float)
    short = hits[vals.isna()]
    if "scratch_accuracy" in hits:
        short = short[short["scratch_accuracy"].notna()]
    note = ""
    if not short.empty:
        row = short.iloc[0]
        note = (f"not reached: the stage ended at {row['final_accuracy']:.3f}, below the from-scratch run's "
                f"{row['scratch_accuracy']:.3f}")
        if len(hits) > 1:
            ends = ", ".join(f"{a:.3f}" for a in short["final_accuracy"])
            refs = ", ".join(f"{a:.3f}" for a in short["scratch_accuracy"])
            note = (f"not reached in {len(short)} of {len(hits)} repeats: those stages ended at {ends}, below the "
                    f"from-scratch runs' {refs}")
    reached = vals.dropna()
    if reached.empty:
        return math.nan, math.nan, note
    # not reached (nan) ranks below every measured speedup
    ranked = sorted(vals.fillna(-math.inf))
    n = len(ranked)
    median = ranked[n // 2] if n % 2 else (ranked[n // 2 - 1] + ranked[n // 2]) / 2
    spread = float(reached.std(ddof=1)) if len(reached) > 1 else math.nan
    if not math.isfinite(median):
        return math.nan, spread, note
    return float(median), spread, note


def judge(measured: float, paper: float, tolerance: float) -> str:
    if math.isnan(measured):
        return "not measured"
    return "agrees" if abs(measured / paper - 1) <= tolerance else "differs"


def claims_table(summary: pd.DataFrame, claims: list[PaperClaim], budgets: pd.DataFrame | None = None,
                 onair: dict[str, float] | None = None, figures: dict[str, float] | None = None) -> pd.DataFrame:
    """`onair`: experiment -> on-air bytes per payload byte of its training messages
    (report/onair.py); when None, it is taken from budgets.attrs['onair'] if the budget table
    carries it (budget_table computes it from the records). `figures`: the model-definition
    figures recorded when the suite was planned (model_cost_record.read_model_figures)."""
    if onair is None and budgets is not None:
        onair = budgets.attrs.get("onair")
    onair = onair or {}
    rows = []
    for c in claims:
        num_rows, num_out = _usable(_matches(summary, c.numerator))
        den_rows, den_out = _usable(_matches(summary, c.denominator))
        excluded = num_out + den_out
        measured, spread, why = math.nan, math.nan, ""
        if c.metric.startswith("model_"):  # recorded when the suite was planned (model_cost_record)
            measured = (figures or {}).get(figure_key(c.model, c.input_size, c.metric), math.nan)
            why = FIGURES_MISSING if math.isnan(measured) else ""
        elif c.metric == "speedup_vs_scratch":
            if not num_out:
                measured, spread, why = _speedup(budgets, c)
        elif c.metric == "onair_bytes_per_sample":
            def air(rows):
                factor = rows["experiment"].map(lambda e: onair.get(e, math.nan)).astype(float)
                return _metric(rows, "bytes_per_sample") * factor
            if not num_rows.empty and not den_rows.empty:
                measured, spread = _ratio(air(num_rows), air(den_rows))
                if math.isnan(measured):
                    why = "no on-air figures in these runs' records (link events without onair_bytes)"
        elif not num_rows.empty and not den_rows.empty:
            measured, spread = _ratio(_metric(num_rows, c.metric), _metric(den_rows, c.metric))
        verdict = judge(measured, c.paper, c.tolerance)
        if verdict == "not measured":
            missing = [n for n, r, out in ((c.numerator, num_rows, num_out), (c.denominator, den_rows, den_out))
                       if r.empty and not out]
            explanation = why or ("; ".join(filter(None, [
                f"no run named {', '.join(missing)}" if missing else "",
                f"excluded: {', '.join(excluded)}" if excluded else ""])) or "the metric is missing from the runs")
            if why.startswith("not reached") and c.if_differs:  # measured, and short of the paper: say why
                explanation += f"; {c.if_differs}"
        elif verdict == "differs":
            explanation = (f"ours is {measured / c.paper:.2f}x the paper's figure; "
                           + (c.if_differs or "no known cause: to investigate") + (f"; {why}" if why else ""))
        else:
            explanation = why  # e.g. some repeats did not reach the from-scratch accuracy
        what = (f"{c.metric}: {c.model}" + (f" at {c.input_size}x{c.input_size}" if c.input_size else "")
                if c.metric.startswith("model_") else f"{c.metric}: {c.numerator} / {c.denominator}")
        rows.append({"claim": c.claim, "source": c.source, "metric": what + (f" (budget {c.budget})" if c.budget else ""),
                     "paper": c.paper, "measured": measured, "spread": spread,
                     "tolerance": f"+-{100 * c.tolerance:.3g}%", "tolerance_source": c.tolerance_source,
                     "verdict": verdict, "explanation": explanation, "excluded_runs": "; ".join(excluded)})
    return pd.DataFrame(rows)
