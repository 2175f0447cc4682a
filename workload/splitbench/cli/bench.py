"""splitbench bench SUITE: run every setting of a suite `repeats` times, then write the report.

Ctrl-C or SIGTERM stops the run in flight (its folder is marked interrupted, its roles are
stopped), leaves the runs before it exactly as they are and prints how to resume;
`--resume` runs only what is not completed (why_rerun) and rebuilds the report from all of it."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from ..executors.base import RunResult, interrupt_on_sigterm
from ..model_cost_record import write_model_figures
from ..record import read_environment, read_run, run_status
from ..report import build_report
from ..spec import Experiment, load_experiment, load_suite
from .main import UsageError, add_format_arg, add_set_arg
from .run import add_executor_args, make_executor, quick

COMPLETED = ("ok", "degraded")  # statuses of a run that --resume keeps


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a suite and build its report")
    p.add_argument("suite")
    p.add_argument("--out", default="report", help="report folder")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per setting, seeds seed..seed+N-1 (default: the suite's repeats)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already completed in --runs (status ok or degraded, a readable "
        "record.parquet, the same spec and executor) and run only the others",
    )
    add_executor_args(p)
    add_set_arg(p)
    add_format_arg(p, "the ranking (text) or every table of the report (json: report.json)")
    p.set_defaults(func=run)


def why_rerun(run_dir: Path, exp: Experiment, executor: str) -> str | None:
    """Why --resume cannot keep this run folder for this run (None: it is completed). Completed
    means: status.txt says ok or degraded; record.parquet reads whole; the stored spec.yaml is
    the spec the suite would run now (after --quick, --repeats), so a changed suite never reuses
    a stale run; and the same executor made it (times from another one do not compare)."""
    if not (run_dir / "spec.yaml").exists():
        return "no run folder" if not run_dir.exists() else "no spec.yaml in its folder"
    status = run_status(run_dir).split(":")[0]
    if status not in COMPLETED:
        return f"status {status}"
    try:
        if load_experiment(run_dir / "spec.yaml").to_yaml() != exp.to_yaml():
            return "the suite's spec for it changed"
    except Exception as err:  # an older spec the model no longer reads: not the same spec either
        return f"stored spec.yaml unreadable ({type(err).__name__})"
    made_by = read_environment(run_dir).get("executor", "unknown")
    if made_by != executor:
        return f"made by the {made_by} executor, not {executor}"
    if read_run(run_dir).source != "record.parquet":
        return "record.parquet missing or unreadable"
    return None


def resume_command() -> str:
    argv = sys.argv[1:]
    return "splitbench " + shlex.join(argv + ([] if "--resume" in argv else ["--resume"]))


def run(args) -> int:
    interrupt_on_sigterm()
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    suite = load_suite(args.suite, args.overrides)
    exps = [quick(e) if args.quick else e for e in suite.runs(args.repeats)]
    args.runs = str(Path(args.runs) / suite.metadata.name)
    write_model_figures(suite.spec.report.paper_claims, Path(args.runs))  # what the claims' report reads
    executor = make_executor(args)
    t0 = time.time()
    print(
        f"suite {suite.metadata.name}: {len(suite.experiments())} settings x {args.repeats or suite.spec.repeats} "
        f"repeats = {len(exps)} runs, records in {args.runs}/",
        file=sys.stderr,
    )
    results: list[RunResult] = []
    current = None
    try:
        for i, exp in enumerate(exps, 1):
            head = f"({i}/{len(exps)}) {exp.name} (seed {exp.spec.seed})"
            run_dir = (Path(args.runs) / exp.name).resolve()
            why = why_rerun(run_dir, exp, args.executor) if args.resume else None
            if args.resume and why is None:
                status = run_status(run_dir)
                print(f"{head}: reused, completed earlier ({status.split(':')[0]})", file=sys.stderr)
                kind = status.split(":")[0]
                results.append(
                    RunResult(
                        exp.name,
                        run_dir,
                        kind == "ok",
                        status,
                        0.0,
                        status=kind if kind in ("ok", "degraded") else "failed",
                    )
                )
                continue
            print(head + (f": running ({why})" if why else ""), file=sys.stderr)
            current = f"{exp.name} ({i}/{len(exps)})"
            results.append(executor.run(exp))
            current = None
            if not results[-1].ok:
                print(
                    f"  {'FAILED' if not results[-1].finished else results[-1].status}: {results[-1].message}",
                    file=sys.stderr,
                )
        build_report(
            [r.run_dir for r in results],
            Path(args.out),
            suite.spec.report.target_accuracy,
            title=f"splitbench: suite {suite.metadata.name}",
            claims=suite.spec.report.paper_claims,
        )
    except KeyboardInterrupt as err:
        where = (
            f"during {current}, which is marked interrupted"
            if current
            else "while building the report"
            if len(results) == len(exps)
            else "between runs"
        )
        print(
            f"bench interrupted ({err or 'Ctrl-C'}) {where}; the {len(results)} runs before it are kept as they "
            f"are; resume with: {resume_command()}",
            file=sys.stderr,
        )
        return 143 if str(err) == "SIGTERM" else 130
    if args.format == "json":
        json.dump(json.loads(Path(args.out, "report.json").read_text()), sys.stdout, indent=1)
        print()
        print(f"report: {Path(args.out) / 'report.html'}; {time.time() - t0:.0f} s in all", file=sys.stderr)
    else:
        print(Path(args.out, "ranking.txt").read_text() if Path(args.out, "ranking.txt").exists() else "", end="")
        print(
            f"report: {Path(args.out) / 'report.html'} (CSV tables and report.json beside it); "
            f"{time.time() - t0:.0f} s in all"
        )
    return 0 if all(r.finished for r in results) else 1  # degraded runs are reported, not errors
