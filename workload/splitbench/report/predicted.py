"""Predicted beside measured time per epoch: the runtime model of planning/epoch_time.py
([ours]: the hierarchical-training paper's equations were not available) for every run it
covers (split, early_exit, full_offload), against the epoch_time_s the run measured."""
from __future__ import annotations

import math

import pandas as pd

from ..planning.inputs import build_inputs
from ..planning.epoch_time import full_cloud_s, predict
from ..spec import Experiment

MODELLED = {"split": "split learning", "early_exit": "hierarchical, pipelined", "full_offload": "full cloud"}


def predicted_epoch_s(exp: Experiment) -> float:
    p = exp.spec.paradigm
    inputs = build_inputs(exp)
    if p.name == "split":
        return predict(inputs, p.split_after).split_s
    if p.name == "early_exit":
        return predict(inputs, p.split_after).hierarchical_pipelined_s
    if p.name == "full_offload":
        return full_cloud_s(inputs, 1 if p.input_encoding == "uint8" else 4, not p.cache_inputs)
    return math.nan


def prediction_table(summary: pd.DataFrame, experiments: dict[str, Experiment], progress=print) -> pd.DataFrame:
    rows = []
    for _, r in summary.iterrows():
        exp = experiments.get(r["experiment"])
        if exp is None or exp.spec.paradigm.name not in MODELLED:
            continue
        progress(f"report: predicting {exp.name} (measuring block times)")
        pred = predicted_epoch_s(exp)
        measured = r.get("epoch_time_s", math.nan)
        rows.append({"experiment": exp.name, "model_of": MODELLED[exp.spec.paradigm.name] + " [ours]",
                     "predicted_epoch_s": pred, "measured_epoch_s": measured,
                     "measured_over_predicted": measured / pred if pred and pred > 0 else math.nan})
    return pd.DataFrame(rows)
