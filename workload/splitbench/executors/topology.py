"""Who talks to whom: one definition for every executor (local processes, Kubernetes).

Each peer connection has a routing id: a source's first peer is `source-i` (its server, or
the aggregator where there is no server); a second peer is `<instance>>aggregator`. The
link emulator forwards each routing id to the address of that peer."""
from __future__ import annotations

from dataclasses import dataclass

from ..paradigms import PARADIGMS
from ..spec import ExperimentSpec


@dataclass(frozen=True)
class Topology:
    servers: int                  # server processes (0: none)
    aggregator: bool              # an aggregator role exists
    second_peer: bool             # sources and servers also talk to the aggregator

    def routes(self, sources: int, server_at: list[str], aggregator_at: str | None) -> dict[str, str]:
        """routing id -> the address the peer listens on."""
        out = {f"source-{i}": server_at[i * self.servers // sources] if self.servers else aggregator_at
               for i in range(sources)}
        if self.second_peer:
            out.update({f"source-{i}>aggregator": aggregator_at for i in range(sources)})
            out.update({f"server-{j}>aggregator": aggregator_at for j in range(self.servers)})
        return out


def topology(spec: ExperimentSpec) -> Topology:
    paradigm = PARADIGMS[spec.paradigm.name]
    servers = spec.server_count if paradigm.uses_server else 0
    aggregator = bool(paradigm.aggregates)
    return Topology(servers, aggregator, aggregator and servers > 0)
