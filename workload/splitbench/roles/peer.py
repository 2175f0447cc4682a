"""A role's side of a conversation with one peer (a server, or the aggregator): one request,
one reply, timed and counted into the role's metrics."""
from __future__ import annotations

import time

import zmq

from ..roleplan import routing_id
from ..transport import Endpoint, Kind, Message, PeerTimeout
from .runtime import RoleFailed, Runtime

_STATS = ("loss", "correct", "t_arrival", "t_start", "forward_s", "backward_s", "t_reply")


class PeerLink:
    """One DEALER to one peer (named in errors). Its routing id is the role's instance, or
    "instance>peer" for a second peer (roleplan.routing_id; the link emulator routes on it)."""

    def __init__(self, rt: Runtime, address: str, peer: str, second: bool = False):
        self.rt = rt
        self.ctx = zmq.Context.instance()
        self.peer = peer
        identity = routing_id(rt.instance, peer if second else None)
        self.ep = Endpoint(self.ctx, zmq.DEALER, address, bind=False, identity=identity,
                           on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "tx" else "down", t.label, n))
        self.timeout = rt.spec.training.reply_timeout_s
        self.last: dict[str, float] = {}

    def call(self, msg: Message) -> tuple[Message, float, float]:
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        t_send = time.time()
        self.ep.send(msg)
        try:
            _, reply, _ = self.ep.recv(self.timeout)
        except PeerTimeout:
            raise RoleFailed(f"no reply from the {self.peer} ({self.ep.address}) to {msg.kind.name} of step "
                             f"{msg.step} within {self.timeout:.0f} s: {self.peer} or link down", code=3) from None
        t_recv = time.time()
        if reply.kind == Kind.ERROR:
            raise RoleFailed(f"{self.peer} rejected {msg.kind.name} of step {msg.step}: {reply.error_text()}", code=4)
        stats = reply.tensors.pop("stats", None)
        self.last = dict(zip(_STATS, stats.tolist())) if stats is not None else {}
        self.last.update(t_send=t_send, t_recv=t_recv)
        return reply, t_send, t_recv

    def send(self, msg: Message) -> None:
        """Send without waiting for a reply (the edge goes on with its next batch)."""
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        self.last = {}
        self.ep.send(msg)

    def phases(self) -> dict[str, float]:
        """Network and server phases of the last round trip, from both sides' wall clocks."""
        s = self.last
        if "t_arrival" not in s:
            return {}
        return {"uplink": max(0.0, s["t_arrival"] - s["t_send"]), "server_wait": s["t_start"] - s["t_arrival"],
                "server_forward": s["forward_s"], "server_backward": s["backward_s"],
                "downlink": max(0.0, s["t_recv"] - s["t_reply"])}
