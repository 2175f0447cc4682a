"""splitbench role {source,server,aggregator,link,trainer}: one process of an experiment. Executors
(local processes, Kubernetes pods) start exactly this."""

from __future__ import annotations

import importlib


def add_parser(sub) -> None:
    p = sub.add_parser("role", help="run one role of an experiment (started by executors)")
    p.add_argument("name", choices=["source", "server", "aggregator", "link", "trainer"])
    p.add_argument("--spec", required=True, help="the Experiment YAML")
    p.add_argument("--run-dir", required=True, help="where events, logs and metrics dumps go")
    p.add_argument("--index", type=int, default=0, help="source or server index")
    p.add_argument(
        "--group", type=int, default=None, help="source: host source group G's sources (sources.groupSize) in threads"
    )
    p.add_argument("--bind", default="tcp://127.0.0.1:*", help="address to listen on (server, aggregator, link)")
    p.add_argument("--connect", default=None, help="address of the next hop (source, link)")
    p.add_argument("--aggregator", default=None, help="the aggregator's address, or the link's (fedavg, hfsl)")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="ID=ADDRESS",
        help="link: forward the peer with this routing id here instead of --connect",
    )
    p.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="the experiment's CURVE keys (default: $SPLITBENCH_KEYS, else <run-dir>/keys)",
    )
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--metrics-addr", default="127.0.0.1")
    p.add_argument(
        "--cpu-limit",
        choices=["auto", "cgroup", "throttle", "off"],
        default="auto",
        help="how to enforce the device's CPU quota",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    if args.name in ("source", "link") and not args.connect:
        from .main import UsageError

        raise UsageError(f"{args.name}: --connect is required")
    module = importlib.import_module(f"splitbench.roles.{args.name}")
    return module.run(args)
