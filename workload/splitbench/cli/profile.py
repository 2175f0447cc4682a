"""splitbench profile MODEL: parameters, FLOPs and activation bytes per block, and what a
cut after each block sends compared with the raw input."""

from __future__ import annotations

import json
import math

from ..models import REGISTRY, build_model
from ..models.cost import profile_model


# Published figures to print beside ours: (params, FLOPs as the paper counts them, source).
# The HFSL paper's "FLOPs" are multiply-adds: compare them with our MACs (FLOPs / 2).
PAPER = {
    "efficientnet_b2": (9.110e6, 1.020e9, "HFSL paper, Table 2 (said to be at 224x224)"),
    "efficientnet_b2s": (6.424e6, 0.421e9, "HFSL paper, Table 2 (said to be at 224x224)"),
}


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="per-block cost of a model and bytes at each cut")
    p.add_argument("model", choices=sorted(REGISTRY))
    p.add_argument("--input", default=None, help="C,H,W (default: the model's usual input)")
    p.add_argument("--num-classes", type=int, default=10)
    from .main import add_format_arg

    add_format_arg(p, "the per-block table")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.input:
        try:
            shape = tuple(int(v) for v in args.input.split(","))
        except ValueError:
            from .main import UsageError

            raise UsageError(f"--input {args.input!r}: expected C,H,W (e.g. 3,32,32)") from None
    else:
        shape = REGISTRY[args.model].default_input
    model = build_model(args.model, args.num_classes, shape)
    rows = profile_model(model, shape)
    raw8 = math.prod(shape)
    if args.format == "json":
        paper = PAPER.get(args.model)
        print(
            json.dumps(
                {
                    "model": args.model,
                    "input": list(shape),
                    "params": sum(r.params for r in rows),
                    "flops": sum(r.flops for r in rows),
                    "raw_bytes_uint8": raw8,
                    "raw_bytes_float32": raw8 * 4,
                    "paper": dict(zip(("params", "macs", "source"), paper)) if paper else None,
                    "blocks": [
                        {
                            "cut": r.index,
                            "block": r.name,
                            "params": r.params,
                            "flops": r.flops,
                            "edge_flops": sum(q.flops for q in rows[: i + 1]),
                            "out_shape": list(r.out_shape),
                            "bytes_per_sample": r.out_bytes,
                            "x_uint8": r.out_bytes / raw8,
                            "x_float32": r.out_bytes / (raw8 * 4),
                        }
                        for i, r in enumerate(rows)
                    ],
                },
                indent=1,
            )
        )
        return 0
    print(
        f"{args.model} on {'x'.join(map(str, shape))}: {sum(r.params for r in rows):,} parameters, "
        f"{sum(r.flops for r in rows) / 1e6:,.1f} MFLOPs forward per sample"
    )
    if args.model in PAPER:
        params, macs, source = PAPER[args.model]
        ours_macs = sum(r.flops for r in rows) / 2
        print(
            f"paper: {params / 1e6:.3f}M parameters, {macs / 1e9:.3f} B multiply-adds ({source}); "
            f"ours: {sum(r.params for r in rows) / 1e6:.3f}M, {ours_macs / 1e9:.3f} B at {shape[1]}x{shape[2]}"
        )
    print(f"raw input per sample: {raw8:,} B as uint8, {raw8 * 4:,} B as float32")
    print(
        f"{'cut':>3}  {'block':<12} {'params':>11} {'MFLOPs':>9} {'edge MFLOPs':>11} {'output':<14} "
        f"{'B/sample':>10} {'x uint8':>8} {'x f32':>7}"
    )
    edge = 0
    for r in rows:
        edge += r.flops
        out = "x".join(map(str, r.out_shape))
        print(
            f"{r.index:>3}  {r.name:<12} {r.params:>11,} {r.flops / 1e6:>9.2f} {edge / 1e6:>11.2f} {out:<14} "
            f"{r.out_bytes:>10,} {r.out_bytes / raw8:>8.2f} {r.out_bytes / (raw8 * 4):>7.2f}"
        )
    return 0
