"""splitbench: the command line. Each command is one module of this package; only the chosen
one is imported, so `splitbench --help` answers without loading torch."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# name -> one line of help; `role` is internal (executors start it) and stays out of --help
# Exit status of every command: 0 ok; 1 a run failed or a check regressed; 2 bad usage
# (argparse's own errors, UsageError) or a bad spec (SpecError).
COMMANDS = {
    "validate": "check Experiment/Suite YAML files",
    "schema": "print the JSON schema of an Experiment or Suite",
    "crd": "write the Experiment CRD generated from the spec",
    "profile": "per-block cost of a model and bytes at each cut",
    "registry": "list the paradigms, models, datasets and profiles a spec may name",
    "plan": "predict time per epoch for each cut and choose the separation point",
    "run": "run an experiment with an executor",
    "bench": "run a suite and build its report",
    "report": "build a report from run folders",
    "regress": "compare bytes per sample with the committed baseline",
    "role": None,
}


class UsageError(Exception):
    """A command given arguments it cannot use (exit status 2, as argparse's own usage errors)."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("splitbench")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parser_for(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitbench", description="split-learning benchmark testbed")
    parser.add_argument("--version", action="version", version=f"splitbench {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if name == chosen:
            importlib.import_module(f"{__package__}.{name}").add_parser(sub)
        elif help_text:
            sub.add_parser(name, help=help_text)
        else:
            sub.add_parser(name, help=argparse.SUPPRESS)  # internal: accepted, not listed
    # Python before 3.14 prints a SUPPRESSed subcommand as "==SUPPRESS==": drop it from the listing
    sub._choices_actions = [a for a in sub._choices_actions if a.help != argparse.SUPPRESS]
    return parser


def add_input_args(p: argparse.ArgumentParser) -> None:
    """What a spec may read from disk beyond the defaults (commands that load specs)."""
    p.add_argument(
        "--trace-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also read network.trace files from DIR (default: benchmarks/traces only)",
    )
    p.add_argument("--allow-large", action="store_true", help="accept a suite matrix beyond the size cap")


def add_set_arg(p: argparse.ArgumentParser) -> None:
    """--set path.to.field=value, repeatable (overrides.py: set in the document before validation)."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="PATH=VALUE",
        help="set a field of the spec before it is validated, e.g. --set spec.training.epochs=1 "
        "(a YAML value; for a suite, a run's field holds for every run; repeatable)",
    )


def add_format_arg(p: argparse.ArgumentParser, what: str = "the table") -> None:
    p.add_argument(
        "--format", choices=["text", "json"], default="text", help=f"print {what} as text, or as JSON on stdout"
    )


def apply_input_args(args: argparse.Namespace) -> None:
    """Hand the input flags to the spec loader and to the roles this process starts (their env)."""
    if getattr(args, "trace_dir", None):
        from ..link.profiles import TRACE_DIR_ENV

        dirs = [str(Path(d).resolve()) for d in args.trace_dir]
        os.environ[TRACE_DIR_ENV] = os.pathsep.join(filter(None, [os.environ.get(TRACE_DIR_ENV), *dirs]))
    if getattr(args, "allow_large", False):
        os.environ["SPLITBENCH_ALLOW_LARGE"] = "1"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser_for(argv).parse_args(argv)
    apply_input_args(args)
    from ..spec import SpecError

    # exit status: 0 ok; 1 a run failed or a check regressed; 2 bad usage or a bad spec
    try:
        return int(args.func(args) or 0)
    except SpecError as err:
        print(err, file=sys.stderr)
        return 2
    except UsageError as err:
        print(f"splitbench {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
