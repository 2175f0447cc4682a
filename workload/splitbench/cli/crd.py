"""splitbench crd: the Experiment CustomResourceDefinition generated from the spec."""

from __future__ import annotations

import sys
from pathlib import Path

from ..crd import crd_yaml

DEFAULT = Path("helm/splitbench/crds/experiments.splitbench.dev.yaml")


def add_parser(sub) -> None:
    p = sub.add_parser("crd", help="write the Experiment CRD generated from the spec")
    p.add_argument("--out", default=None, help=f"write here (e.g. {DEFAULT}); default: stdout")
    p.add_argument("--check", default=None, metavar="PATH", help="fail if PATH differs from what would be written")
    p.set_defaults(func=run)


def run(args) -> int:
    text = crd_yaml()
    if args.check:
        current = Path(args.check).read_text() if Path(args.check).exists() else ""
        if current != text:
            print(
                f"crd: {args.check} is out of date; regenerate it with 'splitbench crd --out {args.check}'",
                file=sys.stderr,
            )
            return 1
        print(f"crd: {args.check} is up to date")
        return 0
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"crd: wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0
