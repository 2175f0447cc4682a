"""The role plan: the pure list of roles an experiment needs, and the one home of role names,
routing ids and ports.

Every executor translates this plan and nothing else: the local executor into processes on
loopback, the docker executor into containers on one network per experiment, the operator's
builders into Pods, Services and an Indexed Job. Addresses are the one thing a translation
decides (a loopback port, a container name, a Service's DNS name); the plan names peers by
role name and each translation renders them through its `address` function.

Pure: no sockets, no processes, no torch (the CLI's --help and the operator import it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from .devices import Device, resolve_device
from .link.profiles import LinkConfig, resolve_network
from .registry import PARADIGMS
from .spec import Experiment, ExperimentSpec, SpecError

PORT = 5555  # the experiment port, in a container or pod (local runs pick free ports)
METRICS_PORT = 9100  # the metrics port, likewise
SPEC_FILE = "spec.yaml"
DEFAULT_MEMORY = "4Gi"  # a role whose device states no memory: a bound, far above what one uses
LINK_MEMORY = "2Gi"  # the link emulator: its queue is bounded to 256 MiB (roles/link.py)
MEMORY_REQUEST = "1Gi"  # what such a role asks the scheduler for (a process with torch: under 1 GiB)
KEYS_DIR = "keys"  # in the run folder: one CURVE keypair per role (transport/keys.py)
MAX_BACKOFF_S = 300.0  # a kubelet's cap on its restart back-off
KINDS = ("source", "server", "aggregator", "link", "trainer")
# A role that dies is started again this many times, then the run gives it up: a server or
# the aggregator restarts in place (restart "OnFailure"; past the limit the run fails), a
# source's pod is retried by its Job (backoffLimitPerIndex; past it the run goes on without it)
RESTART_LIMIT = 3
RESTARTS_IN_PLACE = "OnFailure"
# Every role's environment (all executors: processes, the fork server, containers, pods).
# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep at a barrier instead of spinning. Roles
# share cores (a source and its server on one host, or many sources): a spinning thread holds a
# core its peer needs, and a 2-thread role descheduled mid-barrier spins for its whole slice.
# Measured (benchmarks/omp_wait_bench.py, 2 cores, 4 rounds): a split step's edge part 4.3x
# [1.9, 6.3] slower spinning than passive beside two busy processes, 1.2x [0.9, 1.3] on an
# idle machine. The whole-model baseline (trainer role) runs under the same policy.
# GLIBC_TUNABLES: glibc's malloc keeps buffers under 32 MiB on its heap and 64 MiB of free heap
# top before trimming, fixed instead of its adaptive threshold. ZeroMQ allocates every received
# multi-MiB frame; with the adaptive threshold, whether a frame's buffer came from reused heap or
# fresh pages (a page fault per 4 KiB) depended on the sizes of the small allocations around it:
# a 4 MiB round trip after a 62-byte header frame took 4.5 ms against 2.9 ms after a 40- or 70-
# byte one (benchmarks/transport_bench.py: ours/raw 0.73 at 4 MiB). Fixed, every size ran alike.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864"
ROLE_ENV: tuple[tuple[str, str], ...] = (
    ("PYTHONUNBUFFERED", "1"),
    ("OMP_WAIT_POLICY", "PASSIVE"),
    ("GLIBC_TUNABLES", MALLOC_TUNABLES),
)


def role_environ(base: Mapping[str, str], env: tuple[tuple[str, str], ...] = ROLE_ENV) -> dict[str, str]:
    """An executor's environment with a role's variables set. GLIBC_TUNABLES is prepended to,
    not replaced: tunables the user set (e.g. glibc.rtld.optional_static_tls for libgomp on
    aarch64) stay, and win where they name the same tunable (glibc reads left to right)."""
    out = dict(base)
    for k, v in env:
        mine = out.get(k)
        if k == "GLIBC_TUNABLES" and mine and mine != v:
            out[k] = mine if mine.startswith(v + ":") else f"{v}:{mine}"
        else:
            out[k] = v
    return out


def role_name(kind: str, index: int = 0) -> str:
    """A role's instance name: `source-3`, `server-0`, `aggregator-0`, `link-0`, `trainer-0`."""
    return f"{kind}-{index}"


def group_name(index: int) -> str:
    """A source group's process name: `source-group-2` (its sources keep their own names)."""
    return f"source-group-{index}"


def source_groups(spec: ExperimentSpec) -> list[tuple[int, ...]]:
    """The source indices each source process hosts: one each, or sources.groupSize in a row."""
    n, k = spec.sources.replicas, spec.sources.group_size
    return [tuple(range(first, min(first + k, n))) for first in range(0, n, k)]


def one_process_per_source(spec: ExperimentSpec, executor: str) -> None:
    """Executors that run a source per container or pod do not host source groups (yet)."""
    if spec.sources.group_size > 1:
        raise SpecError(
            f"sources.groupSize {spec.sources.group_size}: source groups run on the local executor only; "
            f"the {executor} executor runs one source per container (set groupSize 1)"
        )


def routing_id(instance: str, peer: str | None = None) -> str:
    """The routing id of a connection: the instance itself for its first peer, and
    `instance>peer` for a second one (a source or server that also talks to the aggregator).
    The link emulator forwards each routing id to its peer."""
    return f"{instance}>{peer}" if peer else instance


@dataclass(frozen=True)
class Volume:
    name: str  # "spec" (the experiment, read-only), "run" (the record, read-write)
    read_only: bool


VOLUMES = (Volume("spec", True), Volume("run", False))


@dataclass(frozen=True)
class Role:
    """One process of an experiment: what it runs, whom it talks to, what it may use."""

    name: str  # instance name, also its routing id
    kind: str  # one of KINDS
    index: int
    image: str  # "edge" (CPU) or "gpu"
    listens: bool  # binds the experiment port
    connect: str | None = None  # role name of its first peer
    aggregator: str | None = None  # role name through which it reaches the aggregator
    routes: tuple[tuple[str, str], ...] = ()  # link only: routing id -> role name of that peer
    cpu: float | None = None  # cores; None: no quota
    memory: str | None = None  # Kubernetes quantity, e.g. "1Gi": the limit
    memory_request: str | None = None  # what to reserve (the limit where the device states one)
    gpu: int = 0
    env: tuple[tuple[str, str], ...] = ROLE_ENV
    volumes: tuple[Volume, ...] = VOLUMES
    restart: str = "Never"  # Kubernetes restartPolicy: RESTARTS_IN_PLACE or Never
    restart_limit: int = 0  # restarts before its failure fails the run
    backoff_s: float = 10.0  # delay before the first restart, doubling (a kubelet's)
    members: tuple[int, ...] = ()  # a source group: the source indices it hosts (threads, one socket each)

    def args(
        self,
        address: Callable[[str], str],
        *,
        bind: str,
        spec_path: str,
        run_dir: str,
        metrics_port: int | None = None,
        metrics_addr: str | None = None,
        extra: Iterable[str] = (),
    ) -> list[str]:
        """The `splitbench ...` arguments of this role, with peers rendered by `address`."""
        out = ["role", self.kind]
        if self.members:
            out += ["--group", str(self.index)]
        elif self.kind in ("source", "server"):
            out += ["--index", str(self.index)]
        if self.listens:
            out += ["--bind", bind]
        if self.connect:
            out += ["--connect", address(self.connect)]
        if self.aggregator:
            out += ["--aggregator", address(self.aggregator)]
        out += [f"--route={rid}={address(peer)}" for rid, peer in self.routes]
        out += ["--spec", spec_path, "--run-dir", run_dir]
        if metrics_port is not None:
            out += ["--metrics-port", str(metrics_port)]
        if metrics_addr is not None:
            out += ["--metrics-addr", metrics_addr]
        return out + list(extra)

    def restart_delay(self, attempt: int) -> float:
        """Seconds before restart number `attempt` (0 first): doubling from backoff_s, at
        most 300 s, as a kubelet backs off a crashing container."""
        return min(MAX_BACKOFF_S, self.backoff_s * 2**attempt)

    @property
    def peers(self) -> list[str]:
        """Role names this role connects to."""
        return [p for p in (self.connect, self.aggregator, *(peer for _, peer in self.routes)) if p]


@dataclass(frozen=True)
class Profiles:
    """The experiment's network and device profiles, resolved once (plan_roles): every role
    and executor reads them from the plan instead of resolving the spec again."""

    network: LinkConfig | None  # None: the paradigm uses no network (cut faults included as outages)
    devices: dict[str, Device]  # by role kind: source, server, aggregator, trainer (the server's device)

    @property
    def emulated(self) -> bool:
        return self.network is not None and self.network.emulated


def resolve_profiles(spec: ExperimentSpec) -> Profiles:
    """The one place a spec's profiles are resolved (benchmarks/networks.yaml, devices.yaml)."""
    network = resolve_network(spec.network_with_faults()) if spec.uses_network else None
    server = resolve_device(spec.server.device)
    return Profiles(
        network,
        {
            "source": resolve_device(spec.sources.device),
            "server": server,
            "aggregator": resolve_device(spec.aggregator.device),
            "trainer": server,
        },
    )


@dataclass(frozen=True)
class RolePlan:
    experiment: str
    roles: tuple[Role, ...] = field(default_factory=tuple)
    profiles: Profiles | None = None
    spec: ExperimentSpec | None = field(default=None, compare=False, repr=False)

    def __iter__(self):
        return iter(self.roles)

    def __len__(self) -> int:
        return len(self.roles)

    def __getitem__(self, name: str) -> Role:
        for r in self.roles:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.roles]

    def of_kind(self, kind: str) -> list[Role]:
        return [r for r in self.roles if r.kind == kind]

    @property
    def network(self) -> LinkConfig | None:
        return self.profiles.network if self.profiles else None

    def device(self, kind: str) -> Device:
        """The device a role of this kind runs on (its quota, memory, tier)."""
        assert self.profiles is not None
        return self.profiles.devices[kind]

    def first_hop(self, instance: str, peer: str | None = None) -> str:
        """The role whose listening socket a connection of `instance` (to its first peer, or to
        `peer` as a second one) reaches: the link emulator where the network is emulated."""
        assert self.profiles is not None and self.spec is not None
        if self.profiles.emulated:
            return role_name("link")
        return route_target(self.spec, routing_id(instance, peer))


def plan_roles(exp: Experiment) -> RolePlan:
    """Every role of the experiment, in start order (listeners before those who connect), with
    its profiles resolved once."""
    profiles = resolve_profiles(exp.spec)
    return RolePlan(exp.name, tuple(_roles(exp.spec, profiles)), profiles, exp.spec)


def role_names(spec: ExperimentSpec) -> list[str]:
    """Every role instance of an experiment (one CURVE keypair each: a group's sources each
    have their own, the group process none)."""
    out: list[str] = []
    for r in _roles(spec, resolve_profiles(spec)):
        out += [role_name("source", i) for i in r.members] if r.members else [r.name]
    return out


def route_target(spec: ExperimentSpec, rid: str) -> str:
    """The role a routing id's messages are for: its source's server (hfsl: its own medium
    device), or the aggregator (second peers, and paradigms without a server)."""
    return _direct_routes(spec, *_shape_of(spec))[rid]


def _shape_of(spec: ExperimentSpec) -> tuple[int, str | None, bool]:
    """(servers, the aggregator's name or None, whether sources and servers also talk to it)."""
    shape = PARADIGMS[spec.paradigm.name]
    servers = spec.server_count if shape.uses_server else 0
    agg = role_name("aggregator") if shape.aggregates else None
    return servers, agg, bool(agg and servers)


def _roles(spec: ExperimentSpec, profiles: Profiles) -> list[Role]:
    sources = profiles.devices["source"]
    if not spec.uses_network:  # one process trains the whole model on all the data
        server = profiles.devices["trainer"]
        return [
            Role(
                role_name("trainer"),
                "trainer",
                0,
                "edge",
                False,
                cpu=server.cpu,
                memory=server.memory or DEFAULT_MEMORY,
                memory_request=server.memory or MEMORY_REQUEST,
            )
        ]
    servers, agg, second_peer = _shape_of(spec)
    gpu_image = "gpu" if spec.server.gpu else "edge"
    relay = role_name("link") if profiles.emulated else None
    roles: list[Role] = []
    # the server and the aggregator hold state every source depends on: restarted, they resume
    # from their checkpoints (a source that dies is its executor's or Job's business)
    resume = dict(
        restart=RESTARTS_IN_PLACE, restart_limit=spec.checkpoint.restarts, backoff_s=spec.checkpoint.backoff_s
    )
    if agg:  # the high-computational device: the CUDA image where the experiment has GPUs
        device = profiles.devices["aggregator"]
        roles.append(
            Role(
                agg,
                "aggregator",
                0,
                gpu_image,
                True,
                cpu=device.cpu,
                memory=device.memory or DEFAULT_MEMORY,
                memory_request=device.memory or MEMORY_REQUEST,
                **resume,
            )
        )
    direct = _direct_routes(spec, servers, agg, second_peer)
    if relay:
        first_hop = role_name("server") if servers else agg
        roles.append(
            Role(
                relay,
                "link",
                0,
                "edge",
                True,
                connect=first_hop,
                routes=tuple(direct.items()),
                memory=LINK_MEMORY,
                memory_request=MEMORY_REQUEST,
            )
        )
    server_device = profiles.devices["server"]
    for j in range(servers):
        roles.append(
            Role(
                role_name("server", j),
                "server",
                j,
                gpu_image,
                True,
                aggregator=(relay or agg) if agg else None,
                cpu=server_device.cpu,
                memory=server_device.memory or DEFAULT_MEMORY,
                memory_request=server_device.memory or MEMORY_REQUEST,
                gpu=spec.server.gpu,
                **resume,
            )
        )
    grouped = spec.sources.group_size > 1
    for g, members in enumerate(source_groups(spec)):
        # a group's sources share their first hop (hfsl, a server per source, is not grouped)
        name = role_name("source", members[0])
        roles.append(
            Role(
                group_name(g) if grouped else name,
                "source",
                g,
                "edge",
                False,
                connect=relay or direct[name],
                aggregator=(relay or agg) if second_peer else None,
                cpu=sources.cpu * len(members) if sources.cpu and grouped else sources.cpu,
                memory=sources.memory or DEFAULT_MEMORY,
                memory_request=sources.memory or MEMORY_REQUEST,
                members=members if grouped else (),
            )
        )
    return roles


def _direct_routes(spec: ExperimentSpec, servers: int, agg: str | None, second_peer: bool) -> dict[str, str]:
    """routing id -> role name of the peer it reaches: a source's server (hfsl: its own
    medium device), or the aggregator where there is no server; second peers to the aggregator."""
    k = spec.sources.replicas
    out: dict[str, str] = {}
    for i in range(k):
        peer = role_name("server", i * servers // k) if servers else agg
        assert peer is not None
        out[role_name("source", i)] = peer
    if second_peer and agg:
        out.update({routing_id(role_name("source", i), "aggregator"): agg for i in range(k)})
        out.update({routing_id(role_name("server", j), "aggregator"): agg for j in range(servers)})
    return out
