"""The report's figures: one color per setting, every repeat drawn (or the mean with its 95%
interval), legends outside the axes, long names shortened by their common prefix."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .faults import fault_intervals  # noqa: E402
from .reference_models import REFERENCE_MODELS  # noqa: E402
from .summary import accuracy_by_epoch  # noqa: E402

RunKey = tuple[str, int]  # (setting, repeat)


def short_names(names) -> dict[str, str]:
    """Setting names without the prefix they all share (the suite's name)."""
    names = list(dict.fromkeys(names))
    if len(names) < 2:
        return {n: n for n in names}
    prefix = os.path.commonprefix(names)
    prefix = prefix[:prefix.rfind("-") + 1] if "-" in prefix else ""
    return {n: n[len(prefix):] or n for n in names}


def _colors(settings) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(settings) <= 10 else "tab20")
    return {s: cmap(i % cmap.N) for i, s in enumerate(settings)}


def _legend_outside(ax, **kw) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=7, frameon=False, **kw)


def _mark_faults(ax, records: dict[RunKey, pd.DataFrame], color: dict[str, tuple]) -> None:
    """Each run's faults as hatched spans in its setting's color, labelled at the top."""
    labelled = False
    for (setting, repeat), df in records.items():
        for start, end, what in fault_intervals(df):
            ax.axvspan(start, max(end, start + 1e-3), color=color[setting], alpha=0.12, hatch="//", lw=0,
                       label=None if labelled else "fault (hatched)")
            ax.annotate(f"{what} (r{repeat})", (start, 1), xycoords=("data", "axes fraction"), fontsize=6,
                        rotation=90, va="top", ha="right", color=color[setting])
            labelled = True


def _bytes(df: pd.DataFrame) -> pd.Series:
    return df.filter(regex=r"^(up|down)_.*_bytes$").sum(axis=1)


def cumulative_bytes(records: dict[RunKey, pd.DataFrame]):
    """Every repeat as its own line (same color per setting): the spread is the lines' fan."""
    settings = list(dict.fromkeys(s for s, _ in records))
    color, label = _colors(settings), short_names(settings)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn = set()
    for (setting, _), df in records.items():
        ev = df[df["event"].isin(["step", "round", "eval"])].sort_values("t")
        total = _bytes(ev).cumsum() / 2 ** 20
        if ev.empty or not total.iloc[-1]:
            continue
        ax.plot(ev["t"], total, color=color[setting], lw=1.2, alpha=0.8,
                label=None if setting in drawn else label[setting])
        drawn.add(setting)
    _mark_faults(ax, records, color)
    drawn |= {"fault"} if any(fault_intervals(df) for df in records.values()) else set()
    ax.set(xlabel="time since training began (s)", ylabel="cumulative MiB on the wire",
           title="Cumulative bytes, up + down (one line per repeat)")
    ax.grid(alpha=0.3)
    if drawn:
        _legend_outside(ax)
    fig.tight_layout()
    return fig


def accuracy_over_time(records: dict[RunKey, pd.DataFrame], target: float):
    """Per setting, the mean accuracy at each epoch's end (mean time over repeats) and a band
    from the lowest to the highest repeat."""
    settings = list(dict.fromkeys(s for s, _ in records))
    color, label = _colors(settings), short_names(settings)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for setting in settings:
        accs = [accuracy_by_epoch(df) for (s, _), df in records.items() if s == setting]
        accs = [a for a in accs if not a.empty]
        if not accs:
            continue
        both = pd.concat(accs).groupby("epoch").agg(t=("t", "mean"), mean=("accuracy", "mean"),
                                                    lo=("accuracy", "min"), hi=("accuracy", "max"))
        ax.plot(both["t"], both["mean"], marker="o", ms=3, color=color[setting], label=label[setting])
        if len(accs) > 1:  # band between epochs, whiskers at each (a single epoch has no band to draw)
            ax.fill_between(both["t"], both["lo"], both["hi"], color=color[setting], alpha=0.15, lw=0)
            # clipped: the mean of equal accuracies can round a hair outside them, and matplotlib refuses
            ax.errorbar(both["t"], both["mean"], yerr=[(both["mean"] - both["lo"]).clip(lower=0),
                                                       (both["hi"] - both["mean"]).clip(lower=0)],
                        fmt="none", ecolor=color[setting], capsize=3, lw=1)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.2f}")
    _mark_faults(ax, records, color)
    ax.set(xlabel="time since training began (s)", ylabel="held-out accuracy",
           title="Accuracy at each epoch's end: mean; band and whiskers: lowest to highest repeat")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def _ci_bars(ax, summary: pd.DataFrame, metric: str, scale: float = 1.0, color="tab:blue"):
    y = np.arange(len(summary))
    mean = summary[metric].astype(float) * scale
    lo = (mean - summary.get(f"{metric}_ci_low", mean / scale).astype(float) * scale).clip(lower=0).fillna(0)
    hi = (summary.get(f"{metric}_ci_high", mean / scale).astype(float) * scale - mean).clip(lower=0).fillna(0)
    ax.barh(y, mean.fillna(0), xerr=[lo, hi], color=color, capsize=3, error_kw={"lw": 1})
    return y


def throughput(summary: pd.DataFrame):
    """Samples per second per source: the mean over repeats with its 95% interval."""
    df = summary[summary["samples_per_s_per_source"].notna()]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(df) + 1.4))
    y = _ci_bars(ax, df, "samples_per_s_per_source")
    ax.set_yticks(y, list(short_names(df["experiment"]).values()), fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="samples/s per source (bar: mean, whisker: 95% interval over repeats)",
           title="Training throughput per source")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def bytes_vs_accuracy(summary: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = short_names(summary["experiment"])
    color = _colors(list(names))
    total = summary["bytes_per_sample_up"].fillna(0) + summary["bytes_per_sample_down"].fillna(0)
    seen: dict[float, int] = {}
    for (_, row), x in zip(summary.iterrows(), total):
        k = seen[round(x, 3)] = seen.get(round(x, 3), -1) + 1
        x = x * 1.08 ** k if x > 1 else x + 0.15 * k  # settings with equal bytes side by side, not on top
        acc = row["final_accuracy"]
        if isinstance(acc, float) and math.isnan(acc):
            continue
        lo, hi = row.get("final_accuracy_ci_low", math.nan), row.get("final_accuracy_ci_high", math.nan)
        err = [[acc - lo], [hi - acc]] if not (math.isnan(lo) or math.isnan(hi)) else None
        ax.errorbar([max(x, 0)], [acc], yerr=err, fmt="o", capsize=3, color=color[row["experiment"]],
                    label=names[row["experiment"]])
    ax.set(xlabel="training bytes per sample, up + down (symlog scale)", ylabel="final accuracy",
           title="Bytes vs accuracy (whiskers: 95% interval over repeats; equal bytes set side by side)")
    ax.set_xscale("symlog", linthresh=1)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def step_breakdown(summary: pd.DataFrame):
    df = summary[summary["step_time_s"].notna()]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(df) + 1.6))
    y = np.arange(len(df))
    left = np.zeros(len(df))
    for col, color in (("compute_s", "tab:blue"), ("communication_s", "tab:orange"), ("waiting_s", "tab:grey")):
        vals = df[col].fillna(0).to_numpy() * 1e3
        ax.barh(y, vals, left=left, color=color, label=col.replace("_s", ""))
        left += vals
    step = df["step_time_s"].astype(float).to_numpy() * 1e3
    lo = np.nan_to_num(step - df["step_time_s_ci_low"].astype(float).to_numpy() * 1e3).clip(min=0)
    hi = np.nan_to_num(df["step_time_s_ci_high"].astype(float).to_numpy() * 1e3 - step).clip(min=0)
    ax.errorbar(step, y, xerr=[lo, hi], fmt="|", color="black", capsize=3, label="step time, 95% interval")
    ax.set_yticks(y, list(short_names(df["experiment"]).values()), fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="median ms per step (mean over repeats)", title="Where a step's time goes")
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def crossover(models: list[dict]):
    """Activation bytes per sample at each cut vs the raw input (computed from the model
    definitions when the run was planned, so there is no spread): a cut pays off on bytes only
    below the raw-input lines. `models`: model costs as recorded (model_cost_record.model_blocks)."""
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 3.6 * len(models)), squeeze=False)
    for ax, m in zip(axes[:, 0], models):
        name, shape, rows = m["model"], tuple(m["input_shape"]), m["blocks"]
        raw = math.prod(shape)
        ax.plot([r["index"] for r in rows], [r["out_bytes"] for r in rows], marker="o", label="activations (float32)")
        ax.axhline(raw, color="tab:green", ls="--", label=f"raw input uint8 ({raw:,} B)")
        ax.axhline(raw * 4, color="tab:red", ls="--", label=f"raw input float32 ({raw * 4:,} B)")
        ax.set_yscale("log")
        ax.set(xlabel="cut after block", ylabel="bytes per sample, uplink",
               title=f"{name} on {'x'.join(map(str, shape))} (computed)")
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    fig.tight_layout()
    return fig


def crossover_table(models: list[dict]) -> pd.DataFrame:
    out = []
    for m in models:
        name, shape = m["model"], tuple(m["input_shape"])
        raw = math.prod(shape)
        for r in m["blocks"]:
            out.append({"model": name, "input": "x".join(map(str, shape)), "cut_after": r["index"],
                        "block": r["name"], "activation_shape": "x".join(map(str, r["out_shape"])),
                        "bytes_per_sample": r["out_bytes"], "vs_raw_uint8": r["out_bytes"] / raw,
                        "vs_raw_float32": r["out_bytes"] / (raw * 4)})
    return pd.DataFrame(out)


def reference_models() -> list[dict]:
    """Models drawn beside the runs' own (vgg11_bn at its default input): their block costs as
    model_cost_record.model_blocks wrote them (report/reference_models.py), checked against the
    models by a test."""
    return REFERENCE_MODELS
