"""How many sources one machine holds: split learning of `small_cnn` over `ethernet-1g` (or
--network, e.g. wifi6: one shared medium through the link relay), one server, N sources of 100m
CPU each, a few steps per source.

The roles are forked from one fork server that imported torch once (the local executor's
default, --launch forkserver) or each started as its own Python process (--launch spawn); the
table says which ran (`mode`, from the run's environment.json). Each source is its own process,
or with --group K past the process budget K sources share one process (a source group, each
with its own socket, identity, key and partition, the K sharing a quota of K x 100m);
`source_processes` says which ran, from the record (`processes`, or `groups of K`), and
`source_process_rss_mb_max` is the largest source process's peak (a whole group's).

For each N: server throughput (samples/s the server trained, first to last request), each
source's step time p50 and p99, resident memory per role kind (the largest over the role's
instances: peak RSS; PSS, shared pages divided among the processes that map them; USS, pages
no other process maps, what each added process costs; PSS and USS at the role's end), the
fork server's own at the end (`zygote_*`), and the PSS of every role process and the fork
server summed at one instant, sampled every 2 s, the largest (`pss_total_peak_mb`: what the run
takes from the machine); start-up: process start (for a forked role: its fork)
to ready to train, per kind (the relay: to listening), the fork server's import time, and the
launch to the last source ready (`all_ready_s`); messages lost (training steps the sources
recorded that the server never served: must be 0). A run that fails (the kernel's OOM killer, a
timeout) is a row with its reason, and larger N are not tried. On a shared machine a memory
guard stops the run's roles before the kernel's OOM killer would pick someone else's process:
when MemAvailable falls below --memory-floor-mb, the run ends failed, saying so.

    python benchmarks/scale_bench.py [--sizes 1,4,16,32,64] [--steps 3] [--launch forkserver] [--out build/scale]
    python benchmarks/scale_bench.py --sizes 1000 --group 50 --network wifi6 --steps 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from footprint_bench import descendants, role_of
from splitbench.roles.runtime import memory_mb
from splitbench.executors import LocalExecutor
from splitbench.spec import Experiment


def experiment(n: int, steps: int, group: int = 1, network: str = "ethernet-1g", batch: int = 32) -> Experiment:
    # the synthetic training set holds max(2000, 16 x samplesPerSource) samples, split among the
    # sources: past 16 sources samplesPerSource grows so that each still has `steps` full batches
    # (before, 32 sources trained one step each and 64 had 31 samples, less than a batch)
    per_source = batch * steps * max(1, math.ceil(n / 16))
    return Experiment.model_validate(
        {
            "metadata": {"name": f"scale-{n}" + (f"-g{group}" if group > 1 else "")},
            "spec": {
                "model": {"name": "small_cnn"},
                "dataset": {"name": "synthetic", "samplesPerSource": per_source, "testSamples": 32},
                "paradigm": {"name": "split", "splitAfter": 4},
                "training": {
                    "epochs": 1,
                    "batchSize": batch,
                    "lr": 0.01,
                    "maxStepsPerEpoch": steps,
                    "evaluate": "end",
                    "replyTimeoutS": 600,
                },
                "network": {"profile": network},
                "sources": {"replicas": n, "groupSize": min(group, n), "device": {"cpu": "100m"}},
            },
        }
    )


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def guard(floor_mb: float, stop: threading.Event, tripped: list, total: dict | None = None) -> None:
    """SIGTERM this process's role processes while MemAvailable is below floor_mb (and every
    role started after that: the run is over). Every 2 s, the PSS of every role process and
    the fork server together (one instant: shared pages counted once) into total['pss_mb'], the largest."""
    tick = 0
    while not stop.wait(0.5):
        tick += 1
        if total is not None and tick % 4 == 0:
            now = sum(memory_mb(pid).get("pss", 0.0) for pid in descendants(os.getpid()) if role_of(pid))
            total["pss_mb"] = max(total.get("pss_mb", 0.0), now)
        available = mem_available_mb()
        if available < floor_mb and not tripped:
            tripped.append(available)
        if tripped:
            for pid in descendants(os.getpid()):
                if role_of(pid):
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass


def measure(
    n: int,
    steps: int,
    runs: Path,
    timeout_s: float,
    memory_floor_mb: float = 2048,
    launch: str | None = None,
    group: int = 1,
    network: str = "ethernet-1g",
    batch: int = 32,
) -> dict:
    exp = experiment(n, steps, group, network, batch)
    stop, tripped, total = threading.Event(), [], {}
    watcher = threading.Thread(target=guard, args=(memory_floor_mb, stop, tripped, total), daemon=True)
    watcher.start()
    t0 = time.time()
    try:
        result = LocalExecutor(runs, quiet=True, timeout_s=timeout_s, launch=launch).run(exp)
    finally:
        stop.set()
        watcher.join()
    row = {
        "sources": n,
        "ok": result.ok and not tripped,
        "mode": _read_json(result.run_dir / "environment.json").get("role_processes", "unknown"),
        "source_processes": "processes",
        "network": network,
        "batch": batch,
        "wall_s": round(time.time() - t0, 1),
        "message": "" if result.ok else result.message,
    }
    zygote = _read_json(result.run_dir / "forkserver.json").get("server", {})
    for k in ("rss", "pss", "uss"):
        if zygote.get(f"{k}_end_mb") is not None:
            row[f"zygote_{k}_mb"] = round(zygote[f"{k}_end_mb"])
    if zygote.get("import_s") is not None:
        row["zygote_import_s"] = zygote["import_s"]
    if tripped:
        row["message"] = (
            f"stopped by the memory guard: {tripped[0]:.0f} MB available, under the floor of "
            f"{memory_floor_mb:.0f} MB; {row['message']}"
        )
    rec_path = result.run_dir / "record.parquet"
    if not rec_path.exists():
        return row
    rec = pd.read_parquet(rec_path)
    if "role" not in rec:  # no role got as far as recording anything
        return row
    steps_rec = rec[rec["event"] == "step"]
    served = rec[rec["event"] == "server"]
    if len(served):
        span = served["time"].max() - served["time"].min()
        row["server_samples_per_s"] = round(batch * len(served) / span, 1) if span > 0 else None
    if len(steps_rec):
        row["step_p50_s"] = round(steps_rec["duration_s"].quantile(0.5), 3)
        row["step_p99_s"] = round(steps_rec["duration_s"].quantile(0.99), 3)
    sessions = rec[rec["event"] == "session"]
    plans = rec[(rec["event"] == "plan") & (rec["role"] == "source")]
    if "group_size" in plans and plans["group_size"].notna().any():
        row["source_processes"] = f"groups of {int(plans['group_size'].max())}"
        ends = sessions[(sessions["role"] == "source") & sessions["group"].notna()]
        row["source_process_rss_mb_max"] = round(ends.groupby("group")["rss_peak_mb"].max().max(), 0)
    for kind in ("source", "server", "link"):
        mine = sessions[sessions["role"] == kind]
        if "rss_peak_mb" in mine:
            row[f"{kind}_rss_mb_max"] = round(mine["rss_peak_mb"].max(), 0)
        for k in ("pss", "uss"):
            if f"{k}_end_mb" in mine and mine[f"{k}_end_mb"].notna().any():
                row[f"{kind}_{k}_mb_max"] = round(mine[f"{k}_end_mb"].max(), 0)
        ready = mine["ready_s"].dropna() if "ready_s" in mine else pd.Series(dtype=float)
        if len(ready):
            row[f"{kind}_ready_s_max"] = round(ready.max(), 1)
    if total.get("pss_mb"):
        row["pss_total_peak_mb"] = round(total["pss_mb"])
    launched = rec.loc[rec["event"] == "launch", "time"]
    ready_src = sessions[(sessions["role"] == "source") & (sessions.get("status") == "limited")]
    if len(launched) and len(ready_src):
        row["all_ready_s"] = round(ready_src["time"].max() - launched.min(), 1)
    row["steps"] = int(len(steps_rec))
    row["lost_messages"] = int(len(steps_rec) - len(served))
    return row


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,16,32,64", help="source counts, in increasing order")
    ap.add_argument("--steps", type=int, default=3, help="training steps per source")
    ap.add_argument("--group", type=int, default=1, help="sources per process (sources.groupSize; 1: a process each)")
    ap.add_argument("--network", default="ethernet-1g", help="network profile (wifi6: one shared medium)")
    ap.add_argument(
        "--batch",
        type=int,
        default=32,
        help="batch size (a split source holds its step's activations while it waits for the server: "
        "~12-16 MB at 32, times every source in flight)",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--out", default="build/scale", help="folder for scale.csv and scale.png")
    ap.add_argument(
        "--launch",
        choices=["forkserver", "spawn"],
        default="forkserver",
        help="fork the torch roles from one fork server, or start each as its own process",
    )
    ap.add_argument(
        "--memory-floor-mb",
        type=float,
        default=2048,
        help="stop a run's roles when the machine's available memory falls below this",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            print(f"scale: {n} sources ...", file=sys.stderr, flush=True)
            row = measure(
                n,
                args.steps,
                Path(tmp),
                args.timeout,
                args.memory_floor_mb,
                args.launch,
                args.group,
                args.network,
                args.batch,
            )
            rows.append(row)
            print(pd.DataFrame([row]).to_string(index=False), flush=True)
            if not row["ok"]:
                print(f"scale: {n} sources failed ({row['message']}); larger sizes not tried", file=sys.stderr)
                break
    table = pd.DataFrame(rows)
    table.to_csv(out / "scale.csv", index=False)
    print(table.to_string(index=False))
    _plot(table, out / "scale.png")
    return 0


def _plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["ok"]]
    panels = [
        ("server samples/s", ["server_samples_per_s"]),
        ("source step time (s)", ["step_p50_s", "step_p99_s"]),
        ("memory per source process (MB)", ["source_rss_mb_max", "source_pss_mb_max", "source_uss_mb_max"]),
        ("start-up (s)", ["source_ready_s_max", "all_ready_s"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.5), constrained_layout=True)
    for ax, (title, cols) in zip(axes, panels):
        for col in cols:
            if col in ok:
                ax.plot(ok["sources"], ok[col], marker="o", label=col)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sources")
        ax.set_title(title)
        if len(cols) > 1:
            ax.legend(fontsize=7)
    modes = ", ".join(sorted(set(table["mode"].astype(str)))) if "mode" in table else "unknown"
    sources = ", ".join(sorted(set(table["source_processes"].astype(str)))) if "source_processes" in table else "?"
    network = ", ".join(sorted(set(table["network"].astype(str)))) if "network" in table else "?"
    fig.suptitle(
        f"split small_cnn over {network}, 100m CPU per source; role processes: {modes}; sources in {sources}",
        fontsize=9,
    )
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
