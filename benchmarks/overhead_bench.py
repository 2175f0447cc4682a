"""The testbed's own overhead: time per step of split learning and full offload with the
link unconstrained (sources talk to the server directly on loopback, no CPU quota), vs the
same model trained whole in one process (the centralized trainer), same batch size.

Runs of the three paradigms are interleaved (rounds, order reversed every other round) and
each ratio is the median of per-step durations pooled over the rounds, with a 95% interval
from order statistics. The whole-model step is the trainer's forward + backward + optimizer
step, timed the same way the split phases are. The breakdown says where a split or
offloaded step goes, from each step's own record (the source's and the server's clocks):
  edge      the source's forward and backward (split) / input preparation (full offload)
  server    the server's forward, backward and optimizer step
  transport uplink + downlink: sent to arrived, reply sent to received, serialization and
            the I/O thread's hand-off included (each side's wall clock; same host)
  queue     arrival at the server to the start of its compute (the compute thread's hand-off)
  rest      what is left: the source's loop, recording and Python between the phases
The testbed's own share of a step, (transport + queue + rest) / step, comes from each step's
own record, so the host's drift between runs, which widens the ratio's interval, largely
cancels in it (not wholly: wake-ups and I/O need not slow down as compute does, so the range
of the runs' own medians is printed beside the pooled interval).
The verdict on a target says "meets" or "MISSES" only when the whole interval is on one side;
an interval across the target says so.

    python benchmarks/overhead_bench.py [--models small_cnn,vgg11_bn] [--steps 40] [--rounds 4]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from splitbench.data.datasets import DEBIAN_FASHION_MNIST
from splitbench.executors import LocalExecutor
from splitbench.report.stats import median_ci
from splitbench.spec import Experiment

WARMUP = 3  # first steps of each run dropped (allocators, caches, lazy init)
STEPS = {"small_cnn": 40, "vgg11_bn": 16}
TARGET = {"small_cnn": 1.5, "vgg11_bn": 1.05}
PARADIGMS = (
    {"name": "centralized"},
    {"name": "split", "splitAfter": 4},
    {"name": "full_offload", "inputEncoding": "uint8"},
)


def experiment(name: str, model: str, dataset: dict, paradigm: dict, steps: int) -> Experiment:
    return Experiment.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "model": {"name": model},
                "dataset": dataset,
                "paradigm": paradigm,
                "training": {"epochs": 1, "batchSize": 32, "lr": 0.01, "maxStepsPerEpoch": steps},
                "network": {"profile": "unconstrained"},
                "sources": {"replicas": 1},
            },
        }
    )


def ratio_ci(num: list[float], den: list[float], conf: float = 0.95) -> tuple[float, float, float]:
    """Ratio of medians with a conservative interval: the numerator's interval over the
    denominator's (both from order statistics at sqrt(conf) each)."""
    c = math.sqrt(conf)
    n, n_lo, n_hi = median_ci(num, c)
    d, d_lo, d_hi = median_ci(den, c)
    return n / d, n_lo / d_hi, n_hi / d_lo


def own_shares(part: dict[str, list[float]]) -> list[float]:
    """Per step: the share that is the testbed's, not compute."""
    return [(t + q + r) / s for t, q, r, s in zip(part["transport"], part["queue"], part["rest"], part["step"])]


def verdict(lo: float, hi: float, target: float) -> str:
    if hi <= target:
        return "meets"
    if lo > target:
        return "MISSES"
    return "interval spans it"


def _col(steps: pd.DataFrame, name: str) -> pd.Series:
    return steps[name].fillna(0.0) if name in steps else pd.Series(0.0, index=steps.index)


def breakdown(steps: pd.DataFrame, paradigm: str) -> dict[str, list[float]]:
    """Per-step seconds by part (see the module's docstring)."""
    total = steps["duration_s"]
    if paradigm == "centralized":
        return {"step": list(total)}
    edge = _col(steps, "phase_edge_forward_s") + _col(steps, "phase_edge_backward_s") + _col(steps, "phase_encode_s")
    server = _col(steps, "phase_server_forward_s") + _col(steps, "phase_server_backward_s")
    transport = _col(steps, "phase_uplink_s") + _col(steps, "phase_downlink_s")
    queue = _col(steps, "phase_server_wait_s")
    rest = total - edge - server - transport - queue
    return {
        "step": list(total),
        "edge": list(edge),
        "server": list(server),
        "transport": list(transport),
        "queue": list(queue),
        "rest": list(rest),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small_cnn,vgg11_bn")
    ap.add_argument("--steps", type=int, default=None, help="per run (default: 40 small_cnn, 16 vgg11_bn)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved repeats, pooled")
    ap.add_argument("--csv", default="runs/benchmarks/overhead.csv")
    args = ap.parse_args()
    fashion = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists()
    datasets = {
        "small_cnn": {"name": "fashion_mnist", "samplesPerSource": 4096, "testSamples": 256}
        if fashion
        else {"name": "synthetic", "samplesPerSource": 4096, "testSamples": 256},
        "vgg11_bn": {"name": "synthetic", "channels": 3, "imageSize": 32, "samplesPerSource": 2048, "testSamples": 256},
    }
    t_start, load0 = time.perf_counter(), os.getloadavg()
    rows, out_lines = [], []
    with tempfile.TemporaryDirectory() as d:
        ex = LocalExecutor(Path(d), cpu_limit="off", quiet=True)
        for model in args.models.split(","):
            steps_n = args.steps or STEPS.get(model, 40)
            parts: dict[str, dict[str, list[float]]] = {}
            own_runs: dict[str, list[float]] = {}  # per paradigm: each run's median own share
            for r in range(args.rounds):
                for paradigm in PARADIGMS if r % 2 == 0 else PARADIGMS[::-1]:
                    name = paradigm["name"]
                    exp = experiment(
                        f"{model.replace('_', '-')}-{name.replace('_', '-')}-{r}",
                        model,
                        datasets[model],
                        paradigm,
                        steps_n,
                    )
                    res = ex.run(exp)
                    if not res.ok:
                        print(f"{exp.name} failed: {res.message}", file=sys.stderr)
                        return 1
                    rec = pd.read_parquet(res.run_dir / "record.parquet")
                    steps = rec[rec["event"] == "step"].sort_values("step").iloc[WARMUP:]
                    run_parts = breakdown(steps, name)
                    for k, v in run_parts.items():
                        parts.setdefault(name, {}).setdefault(k, []).extend(v)
                    if name != "centralized":
                        own_runs.setdefault(name, []).append(statistics.median(own_shares(run_parts)))
            whole = parts["centralized"]["step"]
            w_med = statistics.median(whole)
            line = [f"{model}: whole model {w_med * 1e3:.1f} ms/step (n={len(whole)})"]
            for name in ("split", "full_offload"):
                p = parts[name]
                ratio, lo, hi = ratio_ci(p["step"], whole)
                med = {k: statistics.median(v) for k, v in p.items()}
                own = median_ci(own_shares(p))
                runs = own_runs[name]
                target = TARGET.get(model, math.inf)
                judged = f"target x{target:.2f}: {verdict(lo, hi, target)}" if target < math.inf else "no target"
                rows.append(
                    {
                        "model": model,
                        "paradigm": name,
                        "whole_ms": w_med * 1e3,
                        "step_ms": med["step"] * 1e3,
                        "ratio": ratio,
                        "ratio_lo": lo,
                        "ratio_hi": hi,
                        "target": target if target < math.inf else None,
                        "own_share": own[0],
                        "own_share_lo": own[1],
                        "own_share_hi": own[2],
                        "own_share_runs_min": min(runs),
                        "own_share_runs_max": max(runs),
                        **{f"{k}_ms": v * 1e3 for k, v in med.items() if k != "step"},
                        "steps": len(p["step"]),
                    }
                )
                line.append(
                    f"  {name:12s} {med['step'] * 1e3:8.1f} ms  x{ratio:.3f} [{lo:.3f}, {hi:.3f}] "
                    f"({judged})  | "
                    + "  ".join(f"{k} {med[k] * 1e3:.2f}" for k in ("edge", "server", "transport", "queue", "rest"))
                    + f"  | own {100 * own[0]:.1f}% [{100 * own[1]:.1f}, {100 * own[2]:.1f}]"
                    + f" (runs {100 * min(runs):.1f}-{100 * max(runs):.1f}%)"
                )
            print("\n".join(line), flush=True)
            out_lines += line
    load1 = os.getloadavg()
    print(
        f"ms per step, medians of {args.rounds} interleaved runs per paradigm ({WARMUP} warm-up steps dropped), "
        f"batch 32, no CPU quota, unconstrained link; ratio = split or offload step over the whole-model step, "
        f"95% interval; parts are medians of each part (they need not add up to the step's median); "
        f"own = the testbed's share of a step, (transport + queue + rest) / step, median of steps [95% interval] (the range of the runs' own medians)"
    )
    print(
        f"load average {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} cores; "
        f"{time.perf_counter() - t_start:.0f} s in all"
    )
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"csv: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
