"""splitbench validate FILE...: check experiment or suite documents, one line per error."""

from __future__ import annotations

import sys

from ..roleplan import plan_roles
from ..spec import Experiment, SpecError, load_document


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check Experiment/Suite YAML files")
    p.add_argument("files", nargs="+")
    from .main import add_input_args

    add_input_args(p)
    p.set_defaults(func=run)


def check(path: str) -> list[Experiment]:
    """Every experiment the file describes, with its profiles resolved; raises SpecError."""
    doc = load_document(path)
    exps = [doc] if isinstance(doc, Experiment) else doc.experiments()
    problems = []
    for e in exps:
        try:
            plan_roles(e)  # resolves the network and device profiles, as every run does
        except SpecError as err:
            problems.append(f"{path}: {e.name}: {err}")
    if problems:
        raise SpecError("\n".join(dict.fromkeys(problems)))
    return exps


def run(args) -> int:
    bad = 0
    for f in args.files:
        try:
            exps = check(f)
            print(f"{f}: ok ({len(exps)} experiment{'s' if len(exps) != 1 else ''})")
        except SpecError as err:
            print(err, file=sys.stderr)
            bad += 1
    return 2 if bad else 0  # a bad spec is a usage error (exit status 2), as for every command
