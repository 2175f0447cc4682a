"""splitbench regress: the network usage of every setting, pinned exactly, both ways.

Bytes per sample are deterministic for a spec (fixed-width headers with a fixed-size
experiment id, full batches only), so the baseline pins them exactly, per direction and
message kind (input, activation, gradient, label, weights, control), and any change up or
down fails with a table. Multi-budget compressed split is measured per budget stage
(name@budgetB) and hfsl whose split moves per cut (name@splitS), since the overall means
depend on how long each stage runs. Federated weight exchanges depend on the round, not the
sample: they are pinned as bytes per round and device.

Time and throughput are compared as ratios to a reference setting measured in the same run
(centralized when the suite has it), with a tolerance from the repeats' spread; a ratio
beyond it fails, one within it is only reported. They are compared only when the baseline
was measured in the same environment (environment.timing_key); otherwise the report says
why not. `--update` is the only way to change a baseline, and it prints what changed."""

from __future__ import annotations

import copy
import functools
import json
import math
import sys
from pathlib import Path

import pandas as pd

from ..environment import TIMING_FIELDS
from ..record import TRAINING_KINDS, load, read_environment
from ..report.build import find_runs
from ..report.stats import t_quantile
from ..resources import benchmarks_dir
from ..spec import REPEAT_LABEL, SETTING_LABEL, load_experiment, load_suite
from .main import UsageError, add_format_arg
from .run import add_executor_args, make_executor, quick

BYTE_METRICS = [f"{d}_{k}" for d in ("up", "down") for k in TRAINING_KINDS]  # per sample, steps only
TIMING = {"step_time": ("step_time_s", "lower"), "throughput": ("samples_per_s_per_source", "higher")}
TIMING_ALPHA = 0.001  # a ratio fails only outside its 99.9% interval: 7 settings x 2 ratios stay quiet by chance


def add_parser(sub) -> None:
    p = sub.add_parser("regress", help="compare bytes per sample (exactly) and time ratios with the baseline")
    p.add_argument("--suite", default=None, help="run this suite first (default: only read --runs)")
    p.add_argument("--baseline", default=None, help="default: benchmarks/baselines/<suite>.json")
    p.add_argument("--repeats", type=int, default=1, help="runs per setting (the timing tolerance uses their spread)")
    p.add_argument(
        "--update", action="store_true", help="write the measured values as the new baseline and print what changed"
    )
    add_executor_args(p)
    add_format_arg(p, "the verdict and what changed")
    p.set_defaults(func=run)


# The machine's timing fields, and the CPU-quota mechanisms in force over the whole suite: times
# with a cgroup quota on the sources and without one (--cpu-limit off) do not compare.
REGRESS_FIELDS = (*TIMING_FIELDS, "cpu_quota")


def suite_environment(run_dirs: list[Path]) -> dict:
    env = dict(read_environment(run_dirs[0]))
    mechs = set()
    for d in run_dirs:
        for part in read_environment(d).get("cpu_quota_enforced_by", "none").split(","):
            mech = part.split(":")[-1].strip()
            if mech and mech != "none":
                mechs.add(mech)
    env["cpu_quota"] = ", ".join(sorted(mechs)) or "none"
    return env


def _per_sample(steps: pd.DataFrame) -> dict[str, float]:
    samples = int(steps["samples"].sum())
    out = {}
    for m in BYTE_METRICS:
        col = f"{m}_bytes"
        total = int(steps[col].sum()) if col in steps else 0
        out[m] = round(total / samples, 6) if samples else math.nan
    return out


def _per_round(rounds: pd.DataFrame) -> dict[str, float]:
    if rounds.empty:
        return {}
    per = rounds.groupby(["epoch", "instance"])
    return {f"weights_per_round_{d}": round(float(per[f"{d}_weights_bytes"].sum().mean()), 6) for d in ("up", "down")}


def measure_run(run_dir: Path) -> dict[str, dict[str, float]]:
    """Bytes per sample of one run, per stage key (the setting, or setting@budgetB / @splitS)."""
    p = Path(run_dir) / "record.parquet"
    return _measure_run(str(run_dir), p.stat().st_mtime_ns if p.exists() else 0)


@functools.lru_cache(maxsize=4096)  # a record is read once per process, however many baselines it meets
def _measure_run(run_dir: str, _mtime: int) -> dict[str, dict[str, float]]:
    run_dir = Path(run_dir)
    exp = load_experiment(run_dir / "spec.yaml")
    setting = exp.metadata.labels.get(SETTING_LABEL, exp.name)
    rec = load(run_dir)
    for c in [f"{m}_bytes" for m in BYTE_METRICS]:
        if c not in rec:
            rec[c] = 0
    steps, rounds = rec[rec["event"] == "step"], rec[rec["event"] == "round"]
    comp = getattr(exp.spec.paradigm, "compression", None)
    if comp is not None and len(comp.budgets) > 1:
        return {f"{setting}@budget{int(b)}": _per_sample(stage) for b, stage in steps.groupby("budget")}
    if getattr(exp.spec.paradigm, "candidates", None) and "split_after" in steps:
        out = {}
        for cut, stage in steps.groupby("split_after"):
            epochs = set(stage["epoch"])
            out[f"{setting}@split{int(cut)}"] = {
                **_per_sample(stage),
                **_per_round(rounds[rounds["epoch"].isin(epochs)]),
            }
        return out
    return {setting: {**_per_sample(steps), **_per_round(rounds)}}


def measure(run_dirs: list[Path]) -> tuple[dict, list[str]]:
    """(bytes per stage key, problems): repeats of a setting must agree exactly."""
    out: dict[str, dict[str, float]] = {}
    problems = []
    for d in run_dirs:
        for key, values in copy.deepcopy(measure_run(d)).items():
            if key in out and out[key] != values:
                diff = [m for m in values if out[key].get(m) != values[m]]
                problems.append(f"{key}: repeats disagree on {', '.join(diff)} ({d.name}): bytes are not deterministic")
            out.setdefault(key, values)
    return out, problems


def compare(measured: dict, baseline: dict) -> list[tuple[str, str, float, float]]:
    """(key, metric, baseline, measured) for every value that differs at all, either way, and
    for keys or metrics present on one side only (nan on the other)."""
    rows = []
    for key in sorted(set(baseline) | set(measured)):
        b, m = baseline.get(key, {}), measured.get(key, {})
        for metric in sorted(set(b) | set(m)):
            bv, mv = float(b.get(metric, math.nan)), float(m.get(metric, math.nan))
            if math.isnan(bv) and math.isnan(mv):
                continue
            if math.isnan(bv) or math.isnan(mv) or round(bv, 6) != round(mv, 6):
                rows.append((key, metric, bv, mv))
    return rows


def change_table(rows: list[tuple[str, str, float, float]]) -> str:
    """What changed, one line per value: key, message kind, baseline, measured, change."""

    def cell(v):
        return "absent" if math.isnan(v) else f"{v:,.6f}".rstrip("0").rstrip(".")

    lines = [
        f"  {'setting / stage':<44} {'bytes per sample (or round)':<26} {'baseline':>16} {'measured':>16} "
        f"{'change':>14}"
    ]
    for key, metric, b, m in rows:
        change = "n/a" if math.isnan(b) or math.isnan(m) else f"{m - b:+,.6f}".rstrip("0").rstrip(".")
        lines.append(f"  {key:<44} {metric:<26} {cell(b):>16} {cell(m):>16} {change:>14}")
    return "\n".join(lines)


def timing_ratios(run_dirs: list[Path]) -> tuple[str | None, dict[str, dict[str, list[float]]]]:
    """(reference setting, {setting: {ratio name: [one value per repeat]}}): each run's median
    step time and throughput over those of the reference's run of the same repeat."""
    rows = [row for row in (_timing_row(str(d)) for d in run_dirs) if row is not None]
    if not rows:
        return None, {}
    df = pd.DataFrame(rows)
    ref = "centralized" if (df["paradigm"] == "centralized").any() else None
    reference = df.loc[df["paradigm"] == ref, "setting"].iloc[0] if ref else df["setting"].iloc[0]
    base = df[df["setting"] == reference].set_index("repeat")
    out: dict[str, dict[str, list[float]]] = {}
    for setting, g in df.groupby("setting", sort=False):
        for name, (metric, _) in TIMING.items():
            vals = [
                float(r[metric]) / float(base.at[r["repeat"], metric])
                for _, r in g.iterrows()
                if r["repeat"] in base.index and float(base.at[r["repeat"], metric] or 0) > 0
            ]
            out.setdefault(setting, {})[name] = [v for v in vals if not math.isnan(v)]
    return reference, out


@functools.lru_cache(maxsize=4096)
def _timing_row(run_dir: str) -> dict | None:
    """The setting, repeat, paradigm, median step time and median per-source throughput of a
    finished run (as report.summary computes them)."""
    d = Path(run_dir)
    status = (d / "status.txt").read_text().split(":")[0] if (d / "status.txt").exists() else "unknown"
    if status != "ok":
        return None
    exp = load_experiment(d / "spec.yaml")
    steps = load(d).query("event == 'step'")
    if steps.empty:
        return None
    per_source = steps.groupby("instance").agg(samples=("samples", "sum"), busy=("duration_s", "sum"))
    return {
        "setting": exp.metadata.labels.get(SETTING_LABEL, exp.name),
        "repeat": int(exp.metadata.labels.get(REPEAT_LABEL, 1)),
        "paradigm": exp.spec.paradigm.name,
        "step_time_s": float(steps["duration_s"].median()),
        "samples_per_s_per_source": float((per_source["samples"] / per_source["busy"]).median()),
    }


def _mean_sd(v: list[float]) -> tuple[float, float]:
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan)


def check_timing(measured: dict, base: dict) -> tuple[list[str], list[str]]:
    """(failures, report lines): a ratio fails when it is outside the (1 - TIMING_ALPHA) t interval
    of the difference of means, from the baseline's spread and the measured one's (the baseline's
    when measured once)."""
    failures, lines = [], []
    for setting, ratios in sorted(measured.items()):
        if setting == base.get("reference"):
            continue  # 1 by definition
        for name, values in ratios.items():
            b = base.get("ratios", {}).get(setting, {}).get(name)
            m, sd = _mean_sd(values)
            if not b or math.isnan(m):
                lines.append(f"{setting} {name}: {m:.3f}x; no baseline to compare")
                continue
            bsd, bn = b.get("std", math.nan), b.get("n", 1)
            if bsd is None or math.isnan(bsd) or bn < 2:
                lines.append(
                    f"{setting} {name}: {m:.3f}x vs {b['mean']:.3f}x; not checked (the baseline has "
                    "one repeat, no spread: update it with --repeats 3)"
                )
                continue
            own = len(values) > 1 and not math.isnan(sd)
            msd = sd if own else bsd  # measured once: assume the baseline's spread
            vb, vm = bsd**2 / bn, msd**2 / len(values)
            se = math.sqrt(vb + vm)
            df = (
                (vb + vm) ** 2 / (vb**2 / (bn - 1) + vm**2 / (len(values) - 1))  # Welch-Satterthwaite
                if own and vb + vm > 0
                else bn - 1
            )
            tol = t_quantile(1 - TIMING_ALPHA / 2, max(1.0, df)) * se
            verdict = "within" if abs(m - b["mean"]) <= tol else "BEYOND"
            line = (
                f"{setting} {name}: {m:.3f}x vs baseline {b['mean']:.3f}x (tolerance ±{tol:.3f} from the "
                f"repeats' spread): {verdict}"
            )
            lines.append(line)
            if verdict == "BEYOND":
                failures.append(line)
    return failures, lines


def timing_note(why_not: list[str], checked: int, failures: list[str]) -> str:
    if why_not:
        return "timing not compared"
    if not checked:
        return "timing not checked: the baseline has no spread"
    return f"{checked} time ratios checked, {len(failures)} beyond tolerance"


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


def run(args) -> int:
    # --format json: the verdict as JSON on stdout, the text lines on stderr
    out = sys.stderr if args.format == "json" else sys.stdout
    suite = load_suite(args.suite) if args.suite else None
    name = suite.metadata.name if suite else Path(args.runs).name
    run_root = Path(args.runs) / name if suite else Path(args.runs)
    if args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    if suite:
        args.runs = str(run_root)
        executor = make_executor(args)
        for exp in suite.runs(args.repeats):
            r = executor.run(quick(exp) if args.quick else exp)
            if not r.ok:
                print(f"regress: {r.name} failed: {r.message}", file=sys.stderr)
                return 1
    run_dirs = [d for d in find_runs(run_root) if (d / "record.parquet").exists()] if run_root.is_dir() else []
    if not run_dirs:
        print(f"regress: no run records under {run_root}", file=sys.stderr)
        return 1
    measured, problems = measure(run_dirs)
    reference, ratios = timing_ratios(run_dirs)
    env = suite_environment(run_dirs)
    path = Path(args.baseline) if args.baseline else benchmarks_dir() / "baselines" / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else None
    if args.update:
        if problems:
            print("regress: not updating, " + "; ".join(problems), file=sys.stderr)
            return 1
        changes = compare(measured, old["bytes"]) if old and "bytes" in old else None
        timing = {
            "reference": reference,
            "quick": bool(args.quick) if suite else None,  # None: runs read, not made
            "environment": {f: env.get(f, "unknown") for f in REGRESS_FIELDS},
            "ratios": {
                s: {k: dict(zip(("mean", "std"), _mean_sd(v)), n=len(v)) for k, v in r.items()}
                for s, r in ratios.items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "suite": name,
                    "unit": "bytes per training sample (per round and device for weights_per_round_*), exact",
                    "bytes": measured,
                    "timing": timing,
                },
                indent=1,
                allow_nan=True,
            )
            + "\n"
        )
        if changes is None:
            print(
                f"regress: wrote {len(measured)} baselines to {path}; the previous one "
                f"{'was in the old format (totals only)' if old else 'did not exist'}: every value is new",
                file=out,
            )
        else:
            print(
                f"regress: wrote {len(measured)} baselines to {path}; "
                + (f"{len(changes)} values changed:\n{change_table(changes)}" if changes else "no byte count changed"),
                file=out,
            )
        if args.format == "json":
            print(
                json.dumps(
                    {
                        "suite": name,
                        "baseline": str(path),
                        "updated": True,
                        "experiments": len(measured),
                        "bytes_changed": None
                        if changes is None
                        else [
                            {"key": k, "metric": m, "baseline": _num(b), "measured": _num(v)} for k, m, b, v in changes
                        ],
                    },
                    indent=1,
                )
            )
        return 0
    if old is None:
        print(f"regress: no baseline at {path}; create it with --update", file=sys.stderr)
        return 1
    if "bytes" not in old:
        print(
            f"regress: {path} is in the old format (growth only, no message kinds); rewrite it with --update",
            file=sys.stderr,
        )
        return 1
    changes = compare(measured, old["bytes"])
    for line in problems:
        print(f"regress: FAIL: {line}", file=sys.stderr)
    if changes:
        print(
            f"regress: FAIL: {len(changes)} byte counts differ from the baseline (any change, up or down, "
            f"fails; run --update if it is intended):\n{change_table(changes)}",
            file=sys.stderr,
        )
    timing_failures, checked = [], 0
    base_timing = old.get("timing") or {}
    here = {f: env.get(f, "unknown") for f in REGRESS_FIELDS}
    base_env = base_timing.get("environment", {})
    why_not = (
        [
            f"{f}: {base_env.get(f, 'unknown')} vs {here[f]}"
            for f in REGRESS_FIELDS
            if base_env.get(f, "unknown") != here[f]
        ]
        if base_timing
        else ["no timing baseline"]
    )
    if suite and base_timing.get("quick") is not None and base_timing.get("quick") != bool(args.quick):
        why_not.append(f"baseline quick={base_timing.get('quick')}, this run quick={bool(args.quick)}")
    if base_timing.get("reference") not in (None, reference):
        why_not.append(f"reference {base_timing.get('reference')} vs {reference}")
    if why_not:
        print(
            f"regress: timing not compared, the environment differs from the baseline's ({'; '.join(why_not)})",
            file=out,
        )
    else:
        timing_failures, lines = check_timing(ratios, base_timing)
        checked = sum(": within" in l or ": BEYOND" in l for l in lines)
        print(f"regress: timing as ratios to {reference} (same run):", file=out)
        for line in lines:
            print(f"  {line}", file=out)
    failed = bool(changes or problems or timing_failures)
    print(
        f"regress: {len(measured)} experiments checked against {path}: {'FAILED' if failed else 'ok'} "
        f"(bytes exact per message kind; {timing_note(why_not, checked, timing_failures)})",
        file=out,
    )
    if args.format == "json":
        print(
            json.dumps(
                {
                    "suite": name,
                    "baseline": str(path),
                    "ok": not failed,
                    "experiments": len(measured),
                    "bytes_changed": [
                        {"key": k, "metric": m, "baseline": _num(b), "measured": _num(v)} for k, m, b, v in changes
                    ],
                    "problems": problems,
                    "timing": {
                        "compared": not why_not,
                        "why_not": why_not,
                        "reference": reference,
                        "checked": checked,
                        "failures": timing_failures,
                    },
                },
                indent=1,
            )
        )
    return 1 if failed else 0
