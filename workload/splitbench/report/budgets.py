"""Compressed split learning per budget stage: bytes per sample, accuracy, and the time a
stage took to reach the best accuracy of training from scratch at the same budget (the
paper's "prune trains 4-6x faster", sec. 4.2: the time for training from scratch to reach
its maximum against the time the transferred stage took to reach it), when the suite also
ran that budget from scratch. Times come from the runs' accuracy curves (one point per
evaluation), so the speedup is measured, never implied by the schedule."""
from __future__ import annotations

import math

import pandas as pd

from ..spec import REPEAT_LABEL, Experiment
from .onair import onair_factors
from .summary import training_bytes


def _stages(rec: pd.DataFrame) -> pd.DataFrame:
    steps = rec[(rec["event"] == "step")]
    if "budget" not in steps or steps["budget"].isna().all():
        return pd.DataFrame()
    rows = []
    evals = rec[rec["event"] == "eval"]
    for budget, s in steps.groupby("budget", sort=False):
        ev = evals[evals["budget"] == budget].groupby("epoch").agg(accuracy=("accuracy", "mean"), t=("t", "max"))
        rows.append({"budget": int(budget), "epochs": int(s["epoch"].nunique()), "samples": int(s["samples"].sum()),
                     "bytes_per_sample_up": training_bytes(s, "up").sum() / s["samples"].sum(),
                     "bytes_per_sample_down": training_bytes(s, "down").sum() / s["samples"].sum(),
                     "kept_soft_end": float(s["kept_soft"].iloc[-1]),
                     "start_t": float((s["t"] - s["duration_s"]).min()),
                     "final_accuracy": float(ev["accuracy"].iloc[-1]) if not ev.empty else math.nan,
                     "_curve": ev.reset_index()})
    return pd.DataFrame(rows)


def budget_table(records: dict[str, pd.DataFrame], experiments: dict[str, Experiment]) -> pd.DataFrame:
    per = {name: _stages(rec) for name, rec in records.items()}
    per = {k: v for k, v in per.items() if not v.empty}
    # (model, network, budget, repeat) -> (best accuracy, time to first reach it) of fixed-schedule runs: a
    # repeat's transferred stage is compared with the from-scratch run of the same repeat (the same seed)
    scratch = {}

    def repeat(name: str) -> str:
        return experiments[name].metadata.labels.get(REPEAT_LABEL, "")
    for name, st in per.items():
        comp = experiments[name].spec.paradigm.compression
        if comp.schedule == "fixed":
            row = st.iloc[0]
            curve = row["_curve"]
            if curve.empty:
                continue
            best = float(curve["accuracy"].max())
            reached = curve[curve["accuracy"] >= best]
            key = (experiments[name].spec.model.name, experiments[name].spec.network.profile, int(row["budget"]),
                   repeat(name))
            scratch[key] = (best, float(reached["t"].iloc[0]) - row["start_t"])
    out = []
    for name, st in per.items():
        spec = experiments[name].spec
        for _, row in st.iterrows():
            entry = {"experiment": name, "schedule": spec.paradigm.compression.schedule,
                     **{k: v for k, v in row.items() if not str(k).startswith("_") and k != "start_t"}}
            ref = scratch.get((spec.model.name, spec.network.profile, int(row["budget"]), repeat(name)))
            if ref and spec.paradigm.compression.schedule != "fixed":
                curve = row["_curve"]
                hit = curve[curve["accuracy"] >= ref[0]]
                entry["scratch_accuracy"] = ref[0]
                entry["time_to_scratch_accuracy_s"] = float(hit["t"].iloc[0]) - row["start_t"] if not hit.empty \
                    else math.nan
                entry["scratch_time_s"] = ref[1]
                entry["speedup_vs_scratch"] = ref[1] / entry["time_to_scratch_accuracy_s"] \
                    if not hit.empty and entry["time_to_scratch_accuracy_s"] > 0 else math.nan
            out.append(entry)
    table = pd.DataFrame(out)
    # carried to claims_table (build.py hands it this table): on-air bytes per payload byte per run
    table.attrs["onair"] = onair_factors(records)
    return table
