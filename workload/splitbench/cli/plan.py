"""splitbench plan SPEC: predicted time per epoch for every candidate cut (hierarchical
training with an early exit, sequential and pipelined; split learning) against full-cloud
training, and the best cut that fits the edge's memory. The model is [ours]: see
planning/epoch_time.py.

splitbench plan --paradigm hfsl SPEC (the default for an hfsl spec): the HFSL paper's split
selection (planning/hfsl.py): Grad-CAM candidates on the spec's model after a short
warm-up training on its data, the Q-learning agent's table, and its choice per state and
for the spec's devices. Deterministic for a given seed."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DatasetMissing, load_dataset
from ..models import build_model
from ..models.cost import profile_model
from ..paradigms.base import make_optimizer
from ..planning.hfsl import QAgent, candidates
from ..planning.inputs import build_inputs
from ..planning.epoch_time import choose, full_cloud_s, memory_bytes
from ..roleplan import plan_roles
from ..spec import load_suite


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="predict time per epoch for each cut and choose the separation point")
    p.add_argument("spec", help="an Experiment (or a Suite: its first run)")
    p.add_argument("--memory", default=None, help="edge memory budget, e.g. 256Mi (default: the device's memory)")
    p.add_argument(
        "--paradigm",
        choices=["hierarchical", "hfsl"],
        default=None,
        help="what to plan (default: hfsl for an hfsl spec, else hierarchical/split)",
    )
    p.add_argument("--warmup-steps", type=int, default=100, help="hfsl: training steps before Grad-CAM")
    p.add_argument("--per-class", type=int, default=8, help="hfsl: Grad-CAM samples per class")
    p.add_argument("--q-steps", type=int, default=20000, help="hfsl: Q-learning updates")
    from .main import add_set_arg, add_format_arg

    add_format_arg(p, "the tables")
    add_set_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    exp = load_suite(args.spec, args.overrides).experiments()[0]
    spec = exp.spec
    if (args.paradigm or ("hfsl" if spec.paradigm.name == "hfsl" else "hierarchical")) == "hfsl":
        return plan_hfsl(exp, args)
    edge = plan_roles(exp).device("source")  # the profiles, resolved as the run would
    budget = memory_bytes(args.memory or edge.memory)
    if args.format == "json":
        inputs = build_inputs(exp)
        rows, best = choose(inputs, budget)
        print(
            json.dumps(
                {
                    "experiment": exp.name,
                    "model": spec.model.name,
                    "memory_budget_bytes": budget,
                    "cuts": [{**asdict(r), "fits": budget is None or r.edge_memory_bytes <= budget} for r in rows],
                    "full_cloud_s": {
                        f"{enc}_{'every_epoch' if resend else 'once'}": full_cloud_s(inputs, width, resend)
                        for enc, width in (("uint8", 1), ("float32", 4))
                        for resend in (True, False)
                    },
                    "best_cut": best.cut if best else None,
                },
                indent=1,
            )
        )
        return 0 if best else 1
    print(
        f"{exp.name}: {spec.model.name}, batch {spec.training.batch_size}, "
        f"{spec.sources.replicas} source(s), network {spec.network.profile or spec.network.medium}; "
        "measuring block times here ...",
        flush=True,
    )
    inputs = build_inputs(exp)
    rows, best = choose(inputs, budget)
    print(
        f"{'cut':>3} {'feat B/smp':>10} {'edge params':>11} {'edge MiB':>8} {'fits':>4} "
        f"{'hier s/ep':>9} {'pipe s/ep':>9} {'split s/ep':>10}"
    )
    for r in rows:
        fits = "yes" if budget is None or r.edge_memory_bytes <= budget else "no"
        print(
            f"{r.cut:>3} {r.feature_bytes:>10,} {r.edge_params:>11,} {r.edge_memory_bytes / 2**20:>8.1f} {fits:>4} "
            f"{r.hierarchical_s:>9.2f} {r.hierarchical_pipelined_s:>9.2f} {r.split_s:>10.2f}"
        )
    print("full-cloud training per epoch:")
    for enc, width in (("uint8", 1), ("float32", 4)):
        for resend in (True, False):
            print(
                f"  inputs as {enc:<7} {'sent every epoch' if resend else 'sent once':<16} "
                f"{full_cloud_s(inputs, width, resend):9.2f} s"
            )
    if best is None:
        print(f"no cut fits an edge memory of {args.memory or edge.memory}")
        return 1
    fc = full_cloud_s(inputs, 1, True)
    print(
        f"best cut (pipelined, fits memory): after block {best.cut}: {best.hierarchical_pipelined_s:.2f} s/epoch, "
        f"{100 * (1 - best.hierarchical_pipelined_s / fc):+.0f}% vs full cloud with uint8 inputs sent every epoch "
        "(negative = slower)"
    )
    return 0


def plan_hfsl(exp, args) -> int:
    spec = exp.spec
    # --format json: the tables as JSON on stdout, the progress lines on stderr
    say = functools.partial(print, file=sys.stderr if args.format == "json" else sys.stdout)
    torch.manual_seed(spec.seed)
    try:
        data = load_dataset(spec.dataset, spec.seed)
    except DatasetMissing as err:
        print(f"plan: {err}", file=sys.stderr)
        return 2
    model = build_model(spec.model.name, spec.model.num_classes, data.meta.input_shape)
    say(f"{exp.name}: {spec.model.name}; warm-up: {args.warmup_steps} steps on {spec.dataset.name} ...", flush=True)
    opt = make_optimizer(model.parameters(), spec.training)
    rng = np.random.default_rng(spec.seed)
    for _ in range(args.warmup_steps):
        idx = rng.choice(len(data.train_y), spec.training.batch_size, replace=False)
        loss = F.cross_entropy(model(data.meta.normalize(data.train_x[idx])), data.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    picks = np.concatenate(
        [np.flatnonzero(data.test_y.numpy() == c)[: args.per_class] for c in range(spec.model.num_classes)]
    )
    x, y = data.meta.normalize(data.test_x[picks]), data.test_y[picks]
    curve, cands = candidates(model, data.meta.input_shape, x, y)
    names = [r.name for r in profile_model(model, data.meta.input_shape)]
    say(
        f"Grad-CAM importance per block ({len(y)} samples, {len(torch.unique(y))} classes), normalized; "
        "* = a local maximum of the CUI curve, a candidate cut:"
    )
    for i, (name, v) in enumerate(zip(names, curve), 1):
        mark = "*" if any(c.cut == i for c in cands) else " "
        say(f"  {i:>3} {name:<12} {'-' if v != v else f'{v:.3f}':>6} {mark}")
    plan = plan_roles(exp)  # the profiles, resolved as the run would
    link = plan.network
    assert link is not None  # hfsl uses the network
    rate = (link.up.rate_bps or 50e6) / 8
    agent = QAgent(cands, rate_bytes_s=rate, seed=spec.seed).train(args.q_steps)
    say(
        "candidates: "
        + ", ".join(
            f"after {c.cut} ({c.name}: W_l {c.low_gflop:.3f} / W_m {c.medium_gflop:.3f} GFLOP, {c.out_bytes:,} B)"
            for c in cands
        )
    )
    say(
        f"Q-table (rows: remaining power of the low device, GFLOPS; columns: of the medium device); "
        f"each cell: the chosen cut and its Q value; link {rate * 8 / 1e6:g} Mbit/s"
    )
    header = "".join(f"{agent.bin_centre(j, agent.medium_range):>14.1f}" for j in range(agent.bins))
    corner = "a_l|a_m"
    say(f"{corner:>10}{header}")
    for i in range(agent.bins):
        cells = "".join(
            f"{agent.cands[int(np.argmax(agent.q[i, j]))].cut:>6} ({agent.q[i, j].max():+.2f})"
            for j in range(agent.bins)
        )
        say(f"{agent.bin_centre(i, agent.low_range):>10.2f}{cells}")
    low, medium = plan.device("source"), plan.device("server")
    best = agent.choose(low.gflops, medium.gflops) if low.gflops and medium.gflops else None
    if args.format == "json":
        print(
            json.dumps(
                {
                    "experiment": exp.name,
                    "model": spec.model.name,
                    "importance": [
                        {"cut": i, "block": n, "value": None if v != v else float(v)}
                        for i, (n, v) in enumerate(zip(names, curve), 1)
                    ],
                    "candidates": [
                        {
                            "cut": c.cut,
                            "block": c.name,
                            "low_gflop": c.low_gflop,
                            "medium_gflop": c.medium_gflop,
                            "bytes_per_sample": c.out_bytes,
                        }
                        for c in cands
                    ],
                    "q_table": {
                        "low_gflops": [agent.bin_centre(i, agent.low_range) for i in range(agent.bins)],
                        "medium_gflops": [agent.bin_centre(j, agent.medium_range) for j in range(agent.bins)],
                        "cut": [
                            [agent.cands[int(np.argmax(agent.q[i, j]))].cut for j in range(agent.bins)]
                            for i in range(agent.bins)
                        ],
                    },
                    "chosen_cut": best.cut if best else None,
                },
                indent=1,
            )
        )
        return 0
    if best is not None:
        say(
            f"for this spec's devices (low {low.gflops:g}, medium {medium.gflops:g} GFLOPS): split after "
            f"block {best.cut} ({best.name})"
            + (f"; the spec says {spec.paradigm.split_after}" if spec.paradigm.name == "hfsl" else "")
        )
    else:
        say("the spec's device profiles give no gflops (use the low/medium tiers) for a choice of their own")
    return 0
