"""Predicted beside measured time per epoch: the runtime model of planning/epoch_time.py
([ours]: the hierarchical-training paper's equations were not available) for every run it
covers (split, early_exit, full_offload), against the epoch_time_s the run measured.

The prediction is the one recorded when the run was planned (model_cost.json): the report
builds no model and measures nothing."""
from __future__ import annotations

import math

import pandas as pd

from ..model_cost_record import MISSING_NOTE, MODELLED, predicted_epoch_s


def prediction_table(summary: pd.DataFrame, costs: dict[str, dict | None], paradigms: dict[str, str]) -> pd.DataFrame:
    """One row per setting the runtime model covers; `costs`: setting -> its recorded model
    cost (None where the run folder has none), `paradigms`: setting -> paradigm name."""
    rows = []
    for _, r in summary.iterrows():
        name = r["experiment"]
        if paradigms.get(name) not in MODELLED:
            continue
        cost = costs.get(name)
        pred = predicted_epoch_s(cost)
        measured = r.get("epoch_time_s", math.nan)
        note = MISSING_NOTE if cost is None else ((cost.get("predicted") or {}).get("note") or "")
        rows.append({"experiment": name, "model_of": MODELLED[paradigms[name]] + " [ours]",
                     "predicted_epoch_s": pred, "measured_epoch_s": measured,
                     "measured_over_predicted": measured / pred if pred and pred > 0 else math.nan,
                     "note": note})
    table = pd.DataFrame(rows)
    if not table.empty and not table["note"].any():  # a note only where a prediction is missing
        table = table.drop(columns="note")
    return table
