"""A source group (sources.groupSize k > 1): k sources in one process, for scale studies past
the process budget. Each source is a Source as a lone process runs it, in its own thread: its
own DEALER, routing identity (source-<i>), CURVE key, partition, event log and metrics dump,
so the record is the same; the process holds what they share: the dataset (loaded once), one
CPU quota of k times the source device's (the `limited` session and `plan` events say group,
group_size, group_cpu), one torch thread per source (torch releases the GIL while it
computes), one metrics port serving every source's series, and the signal handlers. A source
that fails records its failure and its groupmates go on; the group exits with the first
failure's code, so its executor sees that the run lost sources.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from ..data import DatasetMissing, load_dataset
from ..devices import apply_cpu_limit
from ..roleplan import RolePlan, group_name, plan_roles, source_groups
from ..spec import Experiment, load_experiment
from .runtime import terminate, raise_open_files, zmq_context
from .source import Source

SOCKETS_PER_SOURCE = 4  # a DEALER to its server, one to the aggregator, room for zmq's own
_M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
MALLOC_ARENAS = 2


def _few_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena, and an arena keeps what
    its thread freed: k source threads held ~22 MB each (32 sources, small_cnn). A few shared
    arenas hold what the sources use at once."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator's own policy


@dataclass
class Group:
    name: str
    size: int
    cpu: float | None  # the quota the group's sources share, in cores
    cpu_limit: str  # the mechanism enforcing it (devices.apply_cpu_limit)
    experiment: Experiment
    plan: RolePlan
    data: Any  # the dataset, loaded once for every source


class _Members:
    """Every source's metrics as one exposition: each family once, holding every source's
    samples (they differ by role_instance); the process_* series once, from the first source."""

    def __init__(self, registries: list[CollectorRegistry]):
        self.registries = registries

    def collect(self):
        families: dict[str, Metric] = {}
        for i, registry in enumerate(self.registries):
            for family in registry.collect():
                if family.name.startswith("process_") and i:
                    continue
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name].samples.extend(family.samples)
        return list(families.values())


def run_group(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, terminate)
    raise_open_files()
    _few_arenas()
    experiment = load_experiment(args.spec)
    spec = experiment.spec
    groups = source_groups(spec)
    if not 0 <= args.group < len(groups):
        print(f"source group {args.group} outside 0..{len(groups) - 1}", file=sys.stderr, flush=True)
        return 2
    members, name = groups[args.group], group_name(args.group)
    zmq_context(max(1024, SOCKETS_PER_SOURCE * len(members) + 64))
    plan = plan_roles(experiment)
    device = plan.device("source")
    cpu = device.cpu * len(members) if device.cpu else None
    import torch

    torch.set_num_threads(1)  # k sources are k threads: one torch thread each
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    try:
        data = load_dataset(spec.dataset, spec.seed)
    except DatasetMissing as err:
        print(f"{name}: {err}", file=sys.stderr, flush=True)
        return 2
    limit = apply_cpu_limit(
        cpu, f"{experiment.name}-{name}", getattr(args, "cpu_limit", "auto") or "auto", threads=len(members)
    )
    group = Group(name, len(members), cpu, limit, experiment, plan, data)
    sources = [Source(argparse.Namespace(**{**vars(args), "index": i, "metrics_port": None}), group) for i in members]
    if getattr(args, "metrics_port", None):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Members([s.rt.metrics.registry for s in sources]))  # type: ignore[arg-type]
        start_http_server(args.metrics_port, addr=getattr(args, "metrics_addr", "127.0.0.1"), registry=registry)
    codes: dict[int, int] = {}

    def host(source: Source) -> None:
        codes[source.index] = source.run()

    threads = [threading.Thread(target=host, args=(s,), name=s.rt.instance, daemon=True) for s in sources]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except (KeyboardInterrupt, SystemExit) as err:  # stopped: what each running source recorded stays
        code = err.code if isinstance(err, SystemExit) and isinstance(err.code, int) else 130
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for s in sources:
            if s.index not in codes:
                try:  # its thread may have closed its log since codes was read
                    s.rt.log.write("session", status="stopped", error=f"interrupted ({name} stopped)", **s.rt.limits)
                    s.rt.metrics.dump(s.rt.run_dir / f"{s.rt.instance}.prom")
                except (ValueError, OSError):
                    pass
        sys.stdout.flush()
        os._exit(code)  # the sources' threads may be blocked in a receive
    failed = [codes[i] for i in members if codes.get(i, 1)]
    return failed[0] if failed else 0
