"""splitbench registry [KIND [NAME]]: the names a spec may choose (registry.py), one kind or
all; NAME's choices are the registry's. --markdown writes docs/registries.md."""

from __future__ import annotations

import json
import sys

from .. import registry

KINDS = {"paradigms": "paradigm", "models": "model", "datasets": "dataset", "networks": "network", "devices": "device"}


def add_parser(sub) -> None:
    p = sub.add_parser("registry", help="list the paradigms, models, datasets and profiles a spec may name")
    p.add_argument("--markdown", action="store_true", help="print docs/registries.md")
    p.add_argument("--format", choices=["text", "json"], default="text")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    for kind, names in registry.names().items():
        k = kinds.add_parser(kind, help=f"the {kind} a spec may name")
        k.add_argument("name", nargs="?", choices=names, help="one of them: what it is")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.markdown:
        sys.stdout.write(registry.markdown())
        return 0
    all_names = registry.names()
    kinds = [args.kind] if args.kind else list(all_names)
    rows = {
        k: {n: registry.label(KINDS[k], n) for n in all_names[k] if not getattr(args, "name", None) or n == args.name}
        for k in kinds
    }
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for k in kinds:
        print(f"{k}:")
        for n, text in rows[k].items():
            print(f"  {n:24} {text}")
    return 0
