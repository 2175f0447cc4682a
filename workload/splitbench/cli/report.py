"""splitbench report RUNS...: rebuild a report from existing run records.

Each argument is a run folder or any folder above run folders (runs/, runs/<suite>/);
--suite takes the title, target accuracy and paper claims from the suite and reads
runs/<suite name>/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..report import build_report
from ..report.build import find_runs
from ..spec import load_suite
from .main import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="build a report from run folders")
    p.add_argument(
        "runs",
        nargs="*",
        help="run folders, or folders holding them (default with --suite: <--runs-root>/<suite name>)",
    )
    p.add_argument("--suite", default=None, help="the suite the runs came from (target accuracy, claims)")
    p.add_argument("--runs-root", default="runs", help="with --suite and no folders: where bench wrote them")
    p.add_argument("--out", default="report")
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="target accuracy for time-to-accuracy (default: the suite's, else 0.7)",
    )
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="what to print: a short text summary, or every table as JSON (report.json)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    suite = load_suite(args.suite) if args.suite else None
    roots = [Path(r) for r in args.runs] or ([Path(args.runs_root) / suite.metadata.name] if suite else [])
    if not roots:
        raise UsageError("give run folders, or --suite")
    dirs = []
    for r in roots:
        if not r.is_dir():
            raise UsageError(f"{r}: no such folder")
        found = find_runs(r)
        if not found:
            raise UsageError(f"{r}: no run folders (with spec.yaml) in it")
        dirs += found
    target = args.target if args.target is not None else (suite.spec.report.target_accuracy if suite else 0.7)
    title = f"splitbench: suite {suite.metadata.name}" if suite else "splitbench report"
    out = Path(args.out)
    build_report(dirs, out, target, title=title, claims=suite.spec.report.paper_claims if suite else None)
    if args.format == "json":
        json.dump(json.loads((out / "report.json").read_text()), sys.stdout, indent=1)
        print()
    else:
        print(f"report: {out / 'report.html'} from {len(dirs)} runs (CSV tables and report.json beside it)")
    return 0
