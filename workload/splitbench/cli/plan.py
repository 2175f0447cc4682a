"""splitbench plan SPEC: predicted time per epoch for every candidate cut (hierarchical
training with an early exit, sequential and pipelined; split learning) against full-cloud
training, and the best cut that fits the edge's memory. The model is [ours]: see
planning/runtime.py."""
from __future__ import annotations

from ..devices import resolve_device
from ..planning.inputs import build_inputs
from ..planning.runtime import choose, full_cloud_s, memory_bytes
from ..spec import load_suite


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="predict time per epoch for each cut and choose the separation point")
    p.add_argument("spec", help="an Experiment (or a Suite: its first run)")
    p.add_argument("--memory", default=None, help="edge memory budget, e.g. 256Mi (default: the device's memory)")
    p.set_defaults(func=run)


def run(args) -> int:
    exp = load_suite(args.spec).experiments()[0]
    spec = exp.spec
    budget = memory_bytes(args.memory or resolve_device(spec.sources.device).memory)
    print(f"{exp.name}: {spec.model.name}, batch {spec.training.batch_size}, "
          f"{spec.sources.replicas} source(s), network {spec.network.profile or spec.network.medium}; "
          "measuring block times here ...", flush=True)
    inputs = build_inputs(exp)
    rows, best = choose(inputs, budget)
    print(f"{'cut':>3} {'feat B/smp':>10} {'edge params':>11} {'edge MiB':>8} {'fits':>4} "
          f"{'hier s/ep':>9} {'pipe s/ep':>9} {'split s/ep':>10}")
    for r in rows:
        fits = "yes" if budget is None or r.edge_memory_bytes <= budget else "no"
        print(f"{r.cut:>3} {r.feature_bytes:>10,} {r.edge_params:>11,} {r.edge_memory_bytes / 2**20:>8.1f} {fits:>4} "
              f"{r.hierarchical_s:>9.2f} {r.hierarchical_pipelined_s:>9.2f} {r.split_s:>10.2f}")
    print("full-cloud training per epoch:")
    for enc, width in (("uint8", 1), ("float32", 4)):
        for resend in (True, False):
            print(f"  inputs as {enc:<7} {'sent every epoch' if resend else 'sent once':<16} "
                  f"{full_cloud_s(inputs, width, resend):9.2f} s")
    if best is None:
        print(f"no cut fits an edge memory of {args.memory or resolve_device(spec.sources.device).memory}")
        return 1
    fc = full_cloud_s(inputs, 1, True)
    print(f"best cut (pipelined, fits memory): after block {best.cut}: {best.hierarchical_pipelined_s:.2f} s/epoch, "
          f"{100 * (1 - best.hierarchical_pipelined_s / fc):+.0f}% vs full cloud with uint8 inputs sent every epoch "
          "(negative = slower)")
    return 0
