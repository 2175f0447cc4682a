from __future__ import annotations

import argparse
import sys

from ..spec import SpecError
from . import bench, crd, plan, profile, regress, report, role, run, schema, validate

COMMANDS = [validate, schema, crd, profile, plan, run, bench, report, regress, role]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="splitbench", description=__doc__ or "split-learning benchmark testbed")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpecError as err:
        print(err, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
