"""A role's side of a conversation with one peer (a server, or the aggregator): one request,
one reply, timed and counted into the role's metrics. Also what every role needs to speak
at all: its transport security (role_security) and the instances whose keys it expects."""
from __future__ import annotations

import time

import zmq

from ..roleplan import first_hop, routing_id
from ..transport import (
    Endpoint, Kind, KeysMissing, Message, PeerGone, PeerTimeout, Security, keys_dir_for, load_keyring,
)
from .runtime import RoleFailed, Runtime

_STATS = ("loss", "correct", "t_arrival", "t_start", "forward_s", "backward_s", "t_reply")


def role_security(rt: Runtime, on_denied=None) -> Security:
    """The process's transport security from the spec (one per process, kept on rt)."""
    sec = getattr(rt, "security", None)
    if sec is not None:
        return sec
    mode = rt.spec.transport.auth
    keyring = None
    if mode == "curve":
        try:
            keyring = load_keyring(keys_dir_for(rt.args, rt.run_dir), rt.instance)
        except (KeysMissing, OSError) as err:
            raise RoleFailed(f"{rt.instance}: {err}", code=2) from None
    sec = Security(mode, keyring, domain=rt.experiment.name, on_denied=on_denied)
    sec.start_authenticator(zmq.Context.instance())
    rt.security = sec
    rt.log.write("session", status="transport", auth=mode)
    return sec


class PeerLink:
    """One DEALER to one peer (named in errors). Its routing id is the role's instance, or
    "instance>peer" for a second peer (roleplan.routing_id; the link emulator routes on it)."""

    def __init__(self, rt: Runtime, address: str, peer: str, second: bool = False):
        from .checks import message_cap  # late: checks imports models
        self.rt = rt
        self.ctx = zmq.Context.instance()
        self.peer = peer
        identity = routing_id(rt.instance, peer if second else None)
        self.timeout = rt.spec.training.reply_timeout_s
        if peer == "aggregator":  # it may hold a round open for sources.deadline, waiting for stragglers
            self.timeout += rt.spec.sources.deadline
        self.ep = Endpoint(self.ctx, zmq.DEALER, address, bind=False, identity=identity,
                           on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "tx" else "down", t.label, n),
                           security=role_security(rt), peer=first_hop(rt.spec, rt.instance, peer if second else None),
                           max_msg_bytes=message_cap(rt.spec), sndtimeo_s=self.timeout)
        self.last: dict[str, float] = {}

    def _send(self, msg: Message) -> None:
        try:
            self.ep.send(msg)
        except PeerGone as err:
            raise RoleFailed(f"{self.peer}: {err}", code=3) from None

    def call(self, msg: Message) -> tuple[Message, float, float]:
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        t_send = time.time()
        self._send(msg)
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
        self._send(msg)

    def phases(self) -> dict[str, float]:
        """Network and server phases of the last round trip, from both sides' wall clocks."""
        s = self.last
        if "t_arrival" not in s:
            return {}
        return {"uplink": max(0.0, s["t_arrival"] - s["t_send"]), "server_wait": s["t_start"] - s["t_arrival"],
                "server_forward": s["forward_s"], "server_backward": s["backward_s"],
                "downlink": max(0.0, s["t_recv"] - s["t_reply"])}
