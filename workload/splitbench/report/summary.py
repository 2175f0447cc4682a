"""One row per experiment, from its run record."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..record import TRAINING_KINDS
from ..spec import REPEAT_LABEL, SETTING_LABEL, Experiment
from .stats import TEST_NAME, spread, tie_groups

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


def edge_figures(exp: Experiment, cost: dict | None) -> tuple[float, float]:
    """The source's parameters and forward FLOPs per sample at the cut, as recorded when the
    run was planned (model_cost.json); nan where the run folder has no model cost."""
    if not getattr(exp.spec.paradigm, "split_after", None):
        return 0, 0
    if cost is None:
        return math.nan, math.nan
    return cost["edge_params"], cost["edge_flops"]


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


_COLUMNS = ("instance", "samples", "duration_s", "status", "cpu_limit", "epoch", "accuracy")


def summarize(record: pd.DataFrame, exp: Experiment, target_accuracy: float, status: str = "ok",
              cost: dict | None = None) -> dict:
    """`cost`: the run's model_cost.json (model_cost_record.read_model_cost), None if it has none."""
    spec = exp.spec
    # a run stopped before its first step has none of the step and evaluation columns
    missing = [c for c in _COLUMNS if c not in record]
    if missing:
        record = record.assign(**{c: math.nan for c in missing})
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
    edge_params, edge_flops = edge_figures(exp, cost)
    sessions = record[(record["event"] == "session") & (record["status"] == "limited")]
    mechanisms = sessions.loc[sessions["role"].isin(["source", "trainer"]), "cpu_limit"].dropna()
    mech = sorted({str(m).split(":")[0] for m in mechanisms})
    return {
        "experiment": exp.name,
        "setting": exp.metadata.labels.get(SETTING_LABEL, exp.name),
        "repeat": int(exp.metadata.labels.get(REPEAT_LABEL, 1)),
        "seed": spec.seed,
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
        "source_processes": source_processes(record),
    }


def source_processes(record: pd.DataFrame) -> str:
    """How the sources were hosted: `processes` (one each) or `groups of k` (sources.groupSize),
    from the sources' plan events (a grouped source's names its group's size)."""
    if "group_size" not in record or "role" not in record:
        return "processes"
    sizes = record.loc[(record["event"] == "plan") & (record["role"] == "source"), "group_size"].dropna()
    return f"groups of {int(sizes.max())}" if len(sizes) else "processes"


# Metrics that get a mean, spread and interval over repeats.
METRICS = ["bytes_per_sample_up", "bytes_per_sample_down", "samples_per_s_per_source", "samples_per_s_total",
           "step_time_s", "compute_s", "communication_s", "waiting_s", "time_to_target_s", "final_accuracy",
           "final_accuracy_early_exit", "train_time_s", "epoch_time_s", "setup_s", "round_time_s"]
SETTING_COLUMNS = ["setting", "paradigm", "model", "dataset", "network", "sources", "split_after", "input_encoding",
                   "batch_size", "edge_params", "edge_mflops_per_sample", "cpu_limit", "source_processes"]


def usable(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished: failed and degraded runs are left out of means and rankings (and listed)."""
    return runs[runs["status"] == "ok"] if not runs.empty else runs


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting over its finished repeats: <metric> (the mean), <metric>_std,
    <metric>_ci_low/_ci_high (95% t interval of the mean) and <metric>_n; repeats, seeds and
    the runs left out."""
    rows = []
    for setting, g in runs.groupby("setting", sort=False):
        ok = usable(g)
        first = g.iloc[0]
        row = {c: first[c] for c in SETTING_COLUMNS if c in g}
        row["experiment"] = setting  # claims and older readers name settings by this column
        counts = g["status"].value_counts()
        row["status"] = "ok" if list(counts.index) == ["ok"] else ", ".join(f"{n} {s}" for s, n in counts.items())
        row["repeats"] = len(ok)
        row["seeds"] = " ".join(str(s) for s in ok["seed"])
        row["left_out"] = " ".join(f"{r.experiment} ({r.status})" for r in g.itertuples() if r.status != "ok")
        for m in METRICS:
            if m not in g:
                continue
            s = spread(ok[m].astype(float))
            row.update({m: s.mean, f"{m}_std": s.std, f"{m}_ci_low": s.ci_low, f"{m}_ci_high": s.ci_high,
                        f"{m}_n": s.n})
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df.insert(0, "experiment", df.pop("experiment"))
    return df


# (metric, higher is better, what it means)
RANKED = [("time_to_target_s", False, "time to the target accuracy"),
          ("samples_per_s_per_source", True, "training throughput per source"),
          ("step_time_s", False, "median time per training step (robust to a slow first step)"),
          ("final_accuracy", True, "final held-out accuracy"),
          ("bytes_per_sample", False, "training bytes per sample, up + down")]


def ranking(runs: pd.DataFrame) -> pd.DataFrame:
    """For each ranked metric, settings best first; settings that the test (stats.TEST_NAME)
    cannot tell apart from the best of their group share its rank. One row per metric and
    setting: rank, mean, 95% interval, repeats, and whom it is tied with."""
    ok = usable(runs).copy()
    if ok.empty:
        return pd.DataFrame(columns=["metric", "rank", "setting", "mean", "ci_low", "ci_high", "n", "tied_with", "note"])
    ok["bytes_per_sample"] = ok["bytes_per_sample_up"].fillna(0) + ok["bytes_per_sample_down"].fillna(0)
    info = ok.groupby("setting").first()
    out = []
    for metric, higher, _ in RANKED:
        values = {k: g[metric].astype(float).tolist() for k, g in ok.groupby("setting")}
        complete = {k: v for k, v in values.items() if v and not any(math.isnan(x) for x in v)}
        groups = tie_groups(complete, higher)
        members: dict[int, list[str]] = {}
        for name, r, _ in groups:
            members.setdefault(r, []).append(name)
        for name, r, p in groups:
            s = spread(complete[name])
            others = [m for m in members[r] if m != name]
            note = "" if s.n > 1 else "one repeat: not tested, ranked by its value"
            out.append({"metric": metric, "rank": r, "setting": name, "paradigm": info.at[name, "paradigm"],
                        "network": info.at[name, "network"], "mean": s.mean, "ci_low": s.ci_low,
                        "ci_high": s.ci_high, "n": s.n, "tied_with": ", ".join(others),
                        "note": note})
        for name in sorted(set(values) - set(complete)):
            v = values[name]
            missing = sum(math.isnan(x) for x in v)
            why = (f"not reached in {missing} of {len(v)} repeats" if metric == "time_to_target_s"
                   else f"not measured in {missing} of {len(v)} repeats")
            out.append({"metric": metric, "rank": math.nan, "setting": name, "paradigm": info.at[name, "paradigm"],
                        "network": info.at[name, "network"], "mean": math.nan, "ci_low": math.nan,
                        "ci_high": math.nan, "n": len(v) - missing, "tied_with": "", "note": why})
    df = pd.DataFrame(out)
    df["rank"] = df["rank"].astype("Int64")
    return df


RANKING_NOTE = (f"Settings are ordered by their mean over repeats; {TEST_NAME} compares each with the first "
                "setting of its group, and a setting the test cannot tell apart shares that rank (a tie). "
                "Failed and degraded runs are left out.")
