"""splitbench run SPEC: run one experiment (or every run of a suite) and build its report."""

from __future__ import annotations

import sys
from pathlib import Path

from ..spec import load_suite


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run an experiment with an executor")
    p.add_argument("spec")
    add_executor_args(p)
    from .main import add_set_arg

    add_set_arg(p)
    p.set_defaults(func=run)


def add_executor_args(p) -> None:
    from .main import add_input_args

    add_input_args(p)
    p.add_argument(
        "--executor",
        choices=EXECUTOR_NAMES,
        default="local",
        help="local: processes here; docker: containers (Docker or podman, DOCKER_HOST); "
        "kubernetes: an Experiment for the operator",
    )
    p.add_argument("--runs", default="runs", help="folder for run records")
    p.add_argument("--cpu-limit", choices=["auto", "cgroup", "throttle", "off"], default="auto")
    p.add_argument(
        "--launch",
        choices=["forkserver", "spawn"],
        default=None,
        help="local executor: fork the torch roles from one process that imported torch once "
        "(forkserver, the default, or $SPLITBENCH_LAUNCH) or start each as its own process (spawn)",
    )
    p.add_argument("--timeout", type=float, default=None, help="give up on one experiment after this many s")
    p.add_argument("--quick", action="store_true", help="1 epoch, a few steps per epoch (smoke runs, CI)")


EXECUTOR_NAMES = ["docker", "kubernetes", "local"]


def make_executor(args):
    from ..executors import EXECUTORS

    local = {"launch": args.launch} if args.executor == "local" else {}
    return EXECUTORS[args.executor](Path(args.runs), cpu_limit=args.cpu_limit, timeout_s=args.timeout, **local)


def quick(exp, steps: int = 4):
    """A short run of the same spec: one epoch (one per budget stage for compressed split;
    for hfsl whose split may move, enough rounds for the load schedule to move it and one
    round after), a few steps each. Bytes per sample stay those of the full run (full batches
    only), per budget stage and per cut."""
    spec = exp.spec.model_copy(deep=True)
    comp = getattr(spec.paradigm, "compression", None)
    if comp is not None:
        comp.epochs = [1] * len(comp.budgets)
    epochs = len(comp.budgets) if comp is not None else 1
    if getattr(spec.paradigm, "candidates", None):
        loads = [
            s.from_round for d in (spec.sources.device, spec.server.device, spec.aggregator.device) for s in d.load
        ]
        epochs = (max(loads, default=0) + 2) * spec.paradigm.local_epochs
    spec.training.epochs = epochs
    spec.training.max_steps_per_epoch = steps
    spec.dataset.test_samples = min(spec.dataset.test_samples, 256)
    return exp.model_copy(update={"spec": spec})


def run(args) -> int:
    from ..executors.base import interrupt_on_sigterm

    interrupt_on_sigterm()  # SIGTERM stops the run as Ctrl-C does: roles stopped, record kept
    suite = load_suite(args.spec, args.overrides)
    executor = make_executor(args)
    failed = 0
    for exp in suite.experiments():
        result = executor.run(quick(exp) if args.quick else exp)
        print(
            f"{result.name}: {'FAILED' if not result.finished else result.status}: {result.message} -> "
            f"{result.run_dir}",
            file=sys.stderr if not result.ok else sys.stdout,
        )
        failed += not result.finished
    return 1 if failed else 0
