"""splitbench schema [--kind Experiment|Suite]: the JSON schema of the spec (the CRD's source)."""

from __future__ import annotations

import json

from ..spec import json_schema


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the JSON schema of an Experiment or Suite")
    p.add_argument("--kind", choices=["Experiment", "Suite"], default="Experiment")
    p.set_defaults(func=run)


def run(args) -> int:
    print(json.dumps(json_schema(args.kind), indent=2))
    return 0
