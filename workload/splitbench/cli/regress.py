"""splitbench regress: fail when a paradigm's bytes per sample grew past the baseline.

Bytes per sample is deterministic for a given spec (fixed-width headers, full batches
only), so any growth is a real change in what crosses the wire. Federated weight
exchanges depend on the round, not the sample: they are pinned as bytes per round and
device, and bytes per sample count the steps only."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..record import load
from ..report.summary import summarize, training_bytes
from ..resources import benchmarks_dir
from ..spec import load_experiment, load_suite
from .run import add_executor_args, make_executor, quick

METRICS = ("bytes_per_sample_up", "bytes_per_sample_down")


def add_parser(sub) -> None:
    p = sub.add_parser("regress", help="compare bytes per sample with the committed baseline")
    p.add_argument("--suite", default=None, help="run this suite first (default: only read --runs)")
    p.add_argument("--baseline", default=None, help="default: benchmarks/baselines/<suite>.json")
    p.add_argument("--tolerance", type=float, default=0.01, help="allowed relative growth (0.01 = 1%%)")
    p.add_argument("--update", action="store_true", help="write the measured values as the new baseline")
    add_executor_args(p)
    p.set_defaults(func=run)


def measure(run_root: Path) -> dict[str, dict[str, float]]:
    """Bytes per sample per experiment; a schedule of several budgets is measured per budget
    stage (name@budgetB), since its overall mean depends on how long each stage runs."""
    out = {}
    for d in sorted(p.parent for p in run_root.glob("*/record.parquet")):
        exp = load_experiment(d / "spec.yaml")
        rec = load(d)
        comp = getattr(exp.spec.paradigm, "compression", None)
        if comp is not None and len(comp.budgets) > 1:
            for budget, stage in rec[rec["event"] == "step"].groupby("budget"):
                samples = stage["samples"].sum()
                out[f"{exp.name}@budget{int(budget)}"] = {
                    m: round(float(training_bytes(stage, m.split("_")[-1]).sum() / samples), 3) for m in METRICS}
            continue
        rounds = rec[rec["event"] == "round"]
        if not rounds.empty:
            steps = rec[rec["event"] == "step"]
            samples = steps["samples"].sum()
            per_round = rounds.groupby(["epoch", "instance"])
            out[exp.name] = {
                **{m: round(float(training_bytes(steps, m.split("_")[-1]).sum() / samples), 3) for m in METRICS},
                **{f"weights_bytes_per_round_{d}": round(float(per_round[f"{d}_weights_bytes"].sum().mean()), 3)
                   for d in ("up", "down")}}
            continue
        row = summarize(rec, exp, 1.0)
        out[exp.name] = {m: round(float(row[m]), 3) for m in METRICS}
    return out


def compare(measured: dict, baseline: dict, tolerance: float) -> tuple[list[str], list[str]]:
    """(failures, notes), one line each."""
    failures, notes = [], []
    for name, base in sorted(baseline.items()):
        if name not in measured:
            failures.append(f"{name}: in the baseline but not measured")
            continue
        for m, b in base.items():
            v = measured[name].get(m, math.nan)
            if math.isnan(v):
                failures.append(f"{name}: {m} could not be measured (no such records)")
            elif v > b * (1 + tolerance) + 1e-9:
                failures.append(f"{name}: {m} grew {100 * (v / b - 1):+.2f}% ({b:,.3f} -> {v:,.3f})")
            elif v < b * (1 - tolerance):
                notes.append(f"{name}: {m} shrank {100 * (v / b - 1):+.2f}% ({b:,.3f} -> {v:,.3f}); "
                             "run with --update to lock it in")
    for name in sorted(set(measured) - set(baseline)):
        failures.append(f"{name}: measured but has no baseline; run 'splitbench regress --update'")
    return failures, notes


def run(args) -> int:
    suite = load_suite(args.suite) if args.suite else None
    name = suite.metadata.name if suite else Path(args.runs).name
    run_root = Path(args.runs) / name if suite else Path(args.runs)
    if suite:
        args.runs = str(run_root)
        executor = make_executor(args)
        for exp in suite.experiments():
            r = executor.run(quick(exp) if args.quick else exp)
            if not r.ok:
                print(f"regress: {r.name} failed: {r.message}", file=sys.stderr)
                return 1
    measured = measure(run_root)
    if not measured:
        print(f"regress: no run records under {run_root}", file=sys.stderr)
        return 1
    path = Path(args.baseline) if args.baseline else benchmarks_dir() / "baselines" / f"{name}.json"
    if args.update:
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = sorted({m for entry in measured.values() for m in entry})
        path.write_text(json.dumps({"suite": name, "metrics": metrics, "experiments": measured}, indent=2) + "\n")
        print(f"regress: wrote {len(measured)} baselines to {path}")
        return 0
    if not path.exists():
        print(f"regress: no baseline at {path}; create it with --update", file=sys.stderr)
        return 1
    failures, notes = compare(measured, json.loads(path.read_text())["experiments"], args.tolerance)
    for line in notes:
        print(f"regress: note: {line}")
    for line in failures:
        print(f"regress: FAIL: {line}", file=sys.stderr)
    print(f"regress: {len(measured)} experiments checked against {path}: "
          f"{'FAILED' if failures else 'ok'} (tolerance {100 * args.tolerance:g}%)")
    return 1 if failures else 0
