"""splitbench bench SUITE: run every setting of a suite `repeats` times, then write the report."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..report import build_report
from ..spec import load_suite
from .run import add_executor_args, make_executor, quick


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a suite and build its report")
    p.add_argument("suite")
    p.add_argument("--out", default="report", help="report folder")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per setting, seeds seed..seed+N-1 (default: the suite's repeats)")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    suite = load_suite(args.suite)
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"splitbench bench: --repeats must be at least 1, got {args.repeats}")
    exps = suite.runs(args.repeats)
    args.runs = str(Path(args.runs) / suite.metadata.name)
    executor = make_executor(args)
    t0 = time.time()
    print(f"suite {suite.metadata.name}: {len(suite.experiments())} settings x {args.repeats or suite.spec.repeats} "
          f"repeats = {len(exps)} runs, records in {args.runs}/", file=sys.stderr)
    results = []
    for i, exp in enumerate(exps, 1):
        print(f"({i}/{len(exps)}) {exp.name} (seed {exp.spec.seed})", file=sys.stderr)
        results.append(executor.run(quick(exp) if args.quick else exp))
        if not results[-1].ok:
            print(f"  {'FAILED' if not results[-1].finished else results[-1].status}: {results[-1].message}",
                  file=sys.stderr)
    build_report([r.run_dir for r in results], Path(args.out), suite.spec.report.target_accuracy,
                 title=f"splitbench: suite {suite.metadata.name}", claims=suite.spec.report.paper_claims)
    print(Path(args.out, "ranking.txt").read_text() if Path(args.out, "ranking.txt").exists() else "", end="")
    print(f"report: {Path(args.out) / 'report.html'} (CSV tables and report.json beside it); "
          f"{time.time() - t0:.0f} s in all")
    return 0 if all(r.finished for r in results) else 1  # degraded runs are reported, not errors
