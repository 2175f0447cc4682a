"""The report's figures; each function takes run records and returns a matplotlib Figure."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..models import REGISTRY, build_model  # noqa: E402
from ..models.profile import profile_model  # noqa: E402
from .summary import accuracy_by_epoch  # noqa: E402


def _bytes(df: pd.DataFrame) -> pd.Series:
    return df.filter(regex=r"^(up|down)_.*_bytes$").sum(axis=1)


def cumulative_bytes(records: dict[str, pd.DataFrame]):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, df in records.items():
        ev = df[df["event"].isin(["step", "round", "eval"])].sort_values("t")
        if ev.empty:
            continue
        ax.plot(ev["t"], _bytes(ev).cumsum() / 1e6, label=name)
    ax.set(xlabel="time since training began (s)", ylabel="cumulative bytes on the wire (MB)",
           title="Cumulative bytes, up + down (training and evaluation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def throughput_per_source(records: dict[str, pd.DataFrame], bin_s: float = 2.0):
    names = [n for n, df in records.items() if (df["event"] == "step").any()]
    cols = min(3, max(1, len(names)))
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names):
        steps = records[name][records[name]["event"] == "step"]
        for inst, s in steps.groupby("instance"):
            b = (s["t"] // bin_s) * bin_s
            rate = s.groupby(b)["samples"].sum() / bin_s
            ax.plot(rate.index, rate.values, label=inst, lw=1)
        ax.set_title(name, fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        ax.set_xlabel("time since training began (s)", fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("samples/s per source")
    fig.suptitle(f"Throughput per source ({bin_s:.0f} s bins)")
    fig.tight_layout()
    return fig


def accuracy_over_time(records: dict[str, pd.DataFrame], target: float):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, df in records.items():
        acc = accuracy_by_epoch(df)
        if not acc.empty:
            ax.plot(acc["t"], acc["accuracy"], marker="o", label=name)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.2f}")
    ax.set(xlabel="time since training began (s)", ylabel="held-out accuracy", title="Accuracy over time (end of each epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def bytes_vs_accuracy(summary: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    total = summary["bytes_per_sample_up"].fillna(0) + summary["bytes_per_sample_down"].fillna(0)
    ax.scatter(total, summary["final_accuracy"])
    for (_, row), x in zip(summary.iterrows(), total):
        ax.annotate(row["experiment"], (x, row["final_accuracy"]), fontsize=6)
    ax.set(xlabel="training bytes per sample (up + down)", ylabel="final accuracy", title="Bytes vs accuracy")
    ax.set_xscale("symlog", linthresh=1)
    ax.grid(alpha=0.3)
    return fig


def step_breakdown(summary: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(summary) + 1.5))
    y = range(len(summary))
    left = pd.Series(0.0, index=summary.index)
    for col, color in (("compute_s", "tab:blue"), ("communication_s", "tab:orange"), ("waiting_s", "tab:grey")):
        vals = summary[col].fillna(0)
        ax.barh(list(y), vals, left=left, color=color, label=col.replace("_s", ""))
        left += vals
    ax.set_yticks(list(y), summary["experiment"], fontsize=7)
    ax.set(xlabel="median seconds per step", title="Where a step's time goes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def crossover(models: list[tuple[str, tuple[int, int, int]]]):
    """Activation bytes per sample at each cut vs the raw input (computed from the model
    definitions): a cut pays off on bytes only below the raw-input lines."""
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, (name, shape) in zip(axes[0], models):
        rows = profile_model(build_model(name, 10, shape), shape)
        raw = math.prod(shape)
        ax.plot([r.index for r in rows], [r.out_bytes for r in rows], marker="o", label="activations (float32)")
        ax.axhline(raw, color="tab:green", ls="--", label=f"raw input uint8 ({raw:,} B)")
        ax.axhline(raw * 4, color="tab:red", ls="--", label=f"raw input float32 ({raw * 4:,} B)")
        ax.set_yscale("log")
        ax.set(xlabel="cut after block", ylabel="bytes per sample uplink", title=f"{name} on {'x'.join(map(str, shape))}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def crossover_table(models: list[tuple[str, tuple[int, int, int]]]) -> pd.DataFrame:
    out = []
    for name, shape in models:
        raw = math.prod(shape)
        for r in profile_model(build_model(name, 10, shape), shape):
            out.append({"model": name, "input": "x".join(map(str, shape)), "cut_after": r.index, "block": r.name,
                        "activation_shape": "x".join(map(str, r.out_shape)), "bytes_per_sample": r.out_bytes,
                        "vs_raw_uint8": r.out_bytes / raw, "vs_raw_float32": r.out_bytes / (raw * 4)})
    return pd.DataFrame(out)


REFERENCE_MODELS = [("vgg11_bn", REGISTRY["vgg11_bn"].default_input)]
