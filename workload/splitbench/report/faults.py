"""Faults in the report: the sources each degraded run lost, the intervals each fault covered
(marked on the time-series figures), and what each fault cost against the unfaulted runs of
the same setting.

Degraded runs are kept out of the means and the ranking (summary.usable): a run that lost a
source trained on less data with fewer devices, so its time and accuracy answer another
question than a clean run's; they are listed here with what they lost instead."""
from __future__ import annotations

import math

import pandas as pd

from ..spec import Experiment


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(None, index=df.index, dtype=object)


def gone_sources(rec: pd.DataFrame) -> pd.DataFrame:
    """One row per source that stopped: when (t, seconds since training began), its last
    step, the samples it trained, and why. The executor's account (it saw the process end)
    wins over a server's or the aggregator's (they saw the source fall silent)."""
    ev = rec[rec["event"] == "source_gone"].copy() if "event" in rec else pd.DataFrame()
    if ev.empty:
        return pd.DataFrame(columns=["source", "stopped_t_s", "last_step", "samples_trained", "reason"])
    ev["by_executor"] = _col(ev, "noticed_by").astype(str).str.startswith("executor")
    ev = ev.sort_values(["by_executor", "t"], ascending=[False, True]).drop_duplicates("source")
    steps = rec[rec["event"] == "step"]
    rows = []
    for r in ev.itertuples():
        mine = steps[steps["instance"] == r.source]
        last = getattr(r, "last_step", None)
        rows.append({"source": r.source, "stopped_t_s": float(r.t),
                     "last_step": int(mine["step"].max()) if not mine.empty else
                     (None if last is None or pd.isna(last) else int(last)),
                     "samples_trained": int(mine["samples"].sum()) if not mine.empty else 0,
                     "reason": str(r.reason)})
    return pd.DataFrame(rows).sort_values("source").reset_index(drop=True)


def fault_intervals(rec: pd.DataFrame) -> list[tuple[float, float, str]]:
    """(start t, end t, label) of every fault the record shows: the executor's `fault` events
    (kill, slow) and the link emulator's outages (cuts and network.outages). A fault with no
    recorded end lasts to the end of the record."""
    if "event" not in rec or rec.empty:
        return []
    end_of_run = float(rec["t"].max())
    out: list[tuple[float, float, str]] = []
    faults = rec[rec["event"] == "fault"].sort_values("t")
    open_: dict[tuple, float] = {}
    for r in faults.itertuples():
        key = (r.kind, getattr(r, "target", None))
        if r.state == "start":
            open_[key] = float(r.t)
        elif r.state == "end" and key in open_:
            out.append((open_.pop(key), float(r.t), f"{r.kind} {key[1]}"))
    out += [(t, end_of_run, f"{k} {role}") for (k, role), t in open_.items()]
    down = None
    for r in rec[rec["event"] == "outage"].sort_values("t").itertuples():
        if r.state == "down":
            down = float(r.t)
        elif down is not None:
            out.append((down, float(r.t), "link cut"))
            down = None
    if down is not None:
        out.append((down, end_of_run, "link cut"))
    return sorted(out)


def describe(f) -> str:
    """A fault of the spec in words."""
    if f.kind == "kill":
        return f"kill {f.role} " + (f"at step {f.at_step}" if f.at_step is not None else f"at {f.at_s:g} s")
    if f.kind == "cut":
        return f"cut the link at {f.at_s:g} s for {f.for_s:g} s"
    return f"slow {f.role} to {f.cpu} CPU at {f.at_s:g} s for {f.for_s:g} s"


def _unfaulted_key(exp: Experiment) -> str:
    """What makes two runs the same setting but for their faults (and seed)."""
    return exp.spec.model_copy(update={"faults": [], "seed": 0}).model_dump_json()


def fault_table(runs: pd.DataFrame, experiments: dict[str, Experiment],
                records: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per fault of every faulted run: when it ran, the run's status and sources lost,
    and its cost (training time and final accuracy minus the mean of the clean unfaulted runs of
    the same setting), or n/a with the reason."""
    if runs.empty:
        return pd.DataFrame()
    by_key: dict[str, list[str]] = {}
    for name, exp in experiments.items():
        if not exp.spec.faults:
            by_key.setdefault(_unfaulted_key(exp), []).append(name)
    row_of = runs.set_index("experiment")
    rows = []
    for name, exp in experiments.items():
        if not exp.spec.faults or name not in row_of.index:
            continue
        run, rec = row_of.loc[name], records.get(name, pd.DataFrame())
        clean = [n for n in by_key.get(_unfaulted_key(exp), []) if n in row_of.index
                 and row_of.at[n, "status"] == "ok"]
        base = row_of.loc[clean] if clean else None
        intervals = fault_intervals(rec)
        lost = gone_sources(rec)
        for f in exp.spec.faults:
            label = "link cut" if f.kind == "cut" else f"{f.kind} {f.role}"
            mine = [iv for iv in intervals if iv[2] == label]
            if f.kind == "cut":  # the i-th cut is the outage that starts nearest its at_s
                mine = sorted(mine, key=lambda iv: abs(iv[0] - f.at_s))[:1]
            start, end = (mine[0][0], mine[0][1]) if mine else (math.nan, math.nan)
            row = {"experiment": name, "fault": describe(f), "status": run["status"],
                   "start_t_s": start, "end_t_s": end,
                   "sources_lost": ", ".join(lost["source"]) if not lost.empty else "",
                   "train_time_s": run.get("train_time_s", math.nan),
                   "final_accuracy": run.get("final_accuracy", math.nan)}
            if base is not None:  # the clean runs' spread beside the cost: a cost inside it is noise
                for metric, cost in (("train_time_s", "time_cost_s"), ("final_accuracy", "accuracy_cost")):
                    row[cost] = row[metric] - float(base[metric].mean())
                    row[f"unfaulted_{metric}"] = float(base[metric].mean())
                    row[f"unfaulted_{metric}_std"] = float(base[metric].std()) if len(clean) > 1 else math.nan
                row["against"] = f"{len(clean)} unfaulted run(s)"
            else:
                row["time_cost_s"] = row["accuracy_cost"] = math.nan
                row["against"] = "n/a: the suite has no clean run of this setting without faults"
            if not mine:
                row["against"] += "; the fault was not recorded (its step or time never came)"
            rows.append(row)
    return pd.DataFrame(rows)


def degraded_table(runs: pd.DataFrame, records: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every run that went on without sources: which, when, last step, samples trained."""
    rows = []
    for name in runs.loc[runs["status"] == "degraded", "experiment"] if not runs.empty else []:
        for r in gone_sources(records.get(name, pd.DataFrame())).itertuples(index=False):
            rows.append({"experiment": name, **r._asdict()})
    return pd.DataFrame(rows)
