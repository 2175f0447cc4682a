"""splitbench report RUN_DIR...: rebuild a report from existing run records."""
from __future__ import annotations

from pathlib import Path

from ..report import build_report


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="build a report from run folders")
    p.add_argument("runs", nargs="+", help="run folders (each with spec.yaml and record.parquet)")
    p.add_argument("--out", default="report")
    p.add_argument("--target", type=float, default=0.7, help="target accuracy for time-to-accuracy")
    p.set_defaults(func=run)


def run(args) -> int:
    dirs = [Path(r) for r in args.runs]
    missing = [str(d) for d in dirs if not (d / "spec.yaml").exists()]
    if missing:
        raise SystemExit(f"splitbench report: not run folders (no spec.yaml): {', '.join(missing)}")
    build_report(dirs, Path(args.out), args.target)
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
