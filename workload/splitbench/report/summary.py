"""One row per experiment, from its run record."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..data import dataset_meta
from ..models import build_model
from ..models.profile import edge_cost, profile_model
from ..record import TRAINING_KINDS
from ..spec import Experiment

COMPUTE_PHASES = ["edge_forward", "edge_backward", "encode", "server_forward", "server_backward", "forward",
                  "backward"]
COMM_PHASES = ["uplink", "downlink"]
WAIT_PHASES = ["server_wait"]


def _phase_sum(steps: pd.DataFrame, names: list[str]) -> pd.Series:
    cols = [f"phase_{n}_s" for n in names if f"phase_{n}_s" in steps]
    return steps[cols].fillna(0).sum(axis=1) if cols else pd.Series(0.0, index=steps.index)


def training_bytes(steps: pd.DataFrame, direction: str) -> pd.Series:
    cols = [f"{direction}_{k}_bytes" for k in TRAINING_KINDS if f"{direction}_{k}_bytes" in steps]
    return steps[cols].sum(axis=1)


def accuracy_by_epoch(record: pd.DataFrame, exit_name: str = "final") -> pd.DataFrame:
    """Mean held-out accuracy of one exit over the evaluating roles per epoch, at the time
    the last of them finished evaluating."""
    ev = record[(record["event"] == "eval") & (record.get("exit", pd.Series("final", index=record.index))
                                               .fillna("final") == exit_name)]
    if ev.empty:
        return pd.DataFrame(columns=["epoch", "accuracy", "t"])
    return ev.groupby("epoch").agg(accuracy=("accuracy", "mean"), t=("t", "max")).reset_index()


def _training_events(record: pd.DataFrame) -> pd.DataFrame:
    """Training work with its end time: sources' steps, the server's training requests (an
    early-exit server may still be training after its source has moved on) and federated
    rounds' weight exchanges."""
    return record[record["event"].isin(["step", "server", "round"])]


def train_time(record: pd.DataFrame) -> float:
    """First training step to the end of the last training work, anywhere."""
    ev = _training_events(record)
    return float(ev["t"].max()) if not ev.empty else math.nan


def epoch_time(record: pd.DataFrame) -> float:
    """Median over epochs of: the first step's start to the end of the epoch's last training
    work. Evaluation between epochs is outside it."""
    ev = _training_events(record)
    if ev.empty or "epoch" not in ev:
        return math.nan
    spans = []
    for _, e in ev.groupby("epoch"):
        steps = e[e["event"] == "step"]
        if not steps.empty:
            spans.append(float(e["t"].max() - (steps["t"] - steps["duration_s"]).min()))
    return float(np.median(spans)) if spans else math.nan


def edge_figures(exp: Experiment) -> tuple[int, int]:
    spec = exp.spec
    split_after = getattr(spec.paradigm, "split_after", None)
    if not split_after:
        return 0, 0
    meta = dataset_meta(spec.dataset)
    model = build_model(spec.model.name, spec.model.num_classes, meta.input_shape)
    return edge_cost(profile_model(model, meta.input_shape), split_after)


def round_table(record: pd.DataFrame) -> pd.DataFrame:
    """Per federated round and tier (source = low device, server = medium device): weight
    bytes, and the round's time: its first step's start to the last exchange's end."""
    rounds = record[record["event"] == "round"]
    if rounds.empty:
        return pd.DataFrame()
    steps = record[record["event"] == "step"]
    rows = []
    for (epoch, role), r in rounds.groupby(["epoch", "role"]):
        rows.append({"round_epoch": int(epoch), "tier": role, "devices": int(r["instance"].nunique()),
                     "weights_bytes_up": int(r.get("up_weights_bytes", pd.Series(0)).sum()),
                     "weights_bytes_down": int(r.get("down_weights_bytes", pd.Series(0)).sum()),
                     "exchange_s": float(r["duration_s"].median())})
    table = pd.DataFrame(rows)
    ends = rounds.groupby("epoch")["t"].max().sort_index()
    starts = [float((steps["t"] - steps["duration_s"]).min())] + ends.tolist()[:-1]
    table["round_time_s"] = table["round_epoch"].map(dict(zip(ends.index, ends.values - starts)))
    return table


def summarize(record: pd.DataFrame, exp: Experiment, target_accuracy: float, status: str = "ok") -> dict:
    spec = exp.spec
    steps = record[record["event"] == "step"]
    samples = int(steps["samples"].sum()) if not steps.empty else 0
    # training traffic: steps, and federated rounds' weight exchanges (whichever role made them)
    work = record[record["event"].isin(["step", "round"])]
    up, down = training_bytes(work, "up").sum(), training_bytes(work, "down").sum()
    rounds = round_table(record)
    per_source = steps.groupby("instance").agg(samples=("samples", "sum"), busy=("duration_s", "sum"))
    acc = accuracy_by_epoch(record)
    early = accuracy_by_epoch(record, "early")
    reached = acc[acc["accuracy"] >= target_accuracy]
    edge_params, edge_flops = edge_figures(exp)
    sessions = record[(record["event"] == "session") & (record["status"] == "limited")]
    mechanisms = sessions.loc[sessions["role"].isin(["source", "trainer"]), "cpu_limit"].dropna()
    mech = sorted({str(m).split(":")[0] for m in mechanisms})
    return {
        "experiment": exp.name,
        "status": status,
        "paradigm": spec.paradigm.name,
        "model": spec.model.name,
        "dataset": spec.dataset.name,
        "network": spec.network.profile or spec.network.medium,
        "sources": spec.sources.replicas if spec.uses_network else 0,
        "split_after": getattr(spec.paradigm, "split_after", None),
        "input_encoding": getattr(spec.paradigm, "input_encoding", None),
        "batch_size": spec.training.batch_size,
        "steps": len(steps),
        "samples": samples,
        "bytes_per_sample_up": up / samples if samples else math.nan,
        "bytes_per_sample_down": down / samples if samples else math.nan,
        "bytes_up_total": int(record.filter(like="up_").filter(like="_bytes").sum().sum()),
        "bytes_down_total": int(record.filter(like="down_").filter(like="_bytes").sum().sum()),
        "samples_per_s_per_source": float((per_source["samples"] / per_source["busy"]).median())
        if not per_source.empty else math.nan,
        "samples_per_s_total": samples / float(steps["t"].max() - (steps["t"] - steps["duration_s"]).min())
        if samples else math.nan,
        "step_time_s": float(steps["duration_s"].median()) if samples else math.nan,
        "compute_s": float(_phase_sum(steps, COMPUTE_PHASES).median()) if samples else math.nan,
        "communication_s": float(_phase_sum(steps, COMM_PHASES).median()) if samples else math.nan,
        "waiting_s": float(_phase_sum(steps, WAIT_PHASES).median()) if samples else math.nan,
        "target_accuracy": target_accuracy,
        "time_to_target_s": float(reached["t"].iloc[0]) if not reached.empty else math.nan,
        "final_accuracy": float(acc["accuracy"].iloc[-1]) if not acc.empty else math.nan,
        "final_accuracy_early_exit": float(early["accuracy"].iloc[-1]) if not early.empty else math.nan,
        "train_wall_s": float(record["t"].max()) if "t" in record else math.nan,
        "train_time_s": train_time(record),
        "epoch_time_s": epoch_time(record),
        "setup_s": float(-record.loc[record["event"] == "launch", "t"].iloc[0])
        if (record["event"] == "launch").any() else math.nan,
        "rounds": int(rounds["round_epoch"].nunique()) if not rounds.empty else 0,
        "round_time_s": float(rounds.groupby("round_epoch")["round_time_s"].first().median())
        if not rounds.empty else math.nan,
        "edge_params": edge_params,
        "edge_mflops_per_sample": edge_flops / 1e6,
        "cpu_limit": ",".join(mech) or "none",
    }


def rank(summary: pd.DataFrame) -> pd.DataFrame:
    """Fastest to the target accuracy first; then higher accuracy; then fewer bytes."""
    df = summary.copy()
    df["bytes_per_sample"] = df["bytes_per_sample_up"].fillna(0) + df["bytes_per_sample_down"].fillna(0)
    df = df.sort_values(["time_to_target_s", "final_accuracy", "bytes_per_sample"],
                        ascending=[True, False, True], na_position="last").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df[["rank", "experiment", "paradigm", "network", "time_to_target_s", "final_accuracy",
               "bytes_per_sample", "samples_per_s_per_source", "step_time_s"]]
