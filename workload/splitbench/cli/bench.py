"""splitbench bench SUITE: run every experiment of a suite, then write the report."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from ..report import build_report
from ..spec import load_suite
from .run import add_executor_args, make_executor, quick


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a suite and build its report")
    p.add_argument("suite")
    p.add_argument("--out", default="report", help="report folder")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    suite = load_suite(args.suite)
    exps = suite.experiments()
    args.runs = str(Path(args.runs) / suite.metadata.name)
    executor = make_executor(args)
    t0 = time.time()
    print(f"suite {suite.metadata.name}: {len(exps)} experiments, records in {args.runs}/", file=sys.stderr)
    results = []
    for i, exp in enumerate(exps, 1):
        print(f"({i}/{len(exps)}) {exp.name}", file=sys.stderr)
        results.append(executor.run(quick(exp) if args.quick else exp))
        if not results[-1].ok:
            print(f"  FAILED: {results[-1].message}", file=sys.stderr)
    summary = build_report([r.run_dir for r in results], Path(args.out), suite.spec.report.target_accuracy,
                           title=f"splitbench: suite {suite.metadata.name}", claims=suite.spec.report.paper_claims)
    show = ["experiment", "status", "bytes_per_sample_up", "bytes_per_sample_down", "samples_per_s_per_source",
            "step_time_s", "final_accuracy", "time_to_target_s"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:,.4g}".format):
        print(summary[show].to_string(index=False))
    print(f"report: {Path(args.out) / 'report.html'} (summary.csv, ranking.csv); {time.time() - t0:.0f} s in all")
    return 0 if all(r.ok for r in results) else 1
