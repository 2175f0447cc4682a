"""A role's side of a conversation with one peer (a server, or the aggregator): one request,
one reply, timed and counted into the role's metrics. Also what every role needs to speak
at all: its transport security (role_security) and the instances whose keys it expects."""

from __future__ import annotations

import time

import zmq

from ..roleplan import routing_id
from ..transport import (
    Endpoint,
    Kind,
    KeysMissing,
    Message,
    PeerGone,
    PeerTimeout,
    Security,
    Traffic,
    keys_dir_for,
    load_keyring,
)
from .runtime import RoleFailed, Runtime

RESTARTED = "restarted_at"  # the tensor that makes a WELCOME a restart notice
CLOCK_SKEW_S = 1.0  # a request sent this soon after a peer's restart (by the clocks) is re-sent all the same
NOTICE_EVERY_S = 0.5  # how often a restarted role repeats its notice to a peer not yet heard from

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
    # a group's sources only connect: no ZAP handler (and a context has room for one)
    if getattr(rt, "group", None) is None:
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
        self.ep = Endpoint(
            self.ctx,
            zmq.DEALER,
            address,
            bind=False,
            identity=identity,
            on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "tx" else "down", t.label, n),
            security=role_security(rt),
            peer=rt.plan.first_hop(rt.instance, peer if second else None),
            max_msg_bytes=message_cap(rt.spec),
            sndtimeo_s=self.timeout,
        )
        self.last: dict[str, float] = {}
        self.resends = 0
        self.seen_restart: float | None = None  # the peer restart last acted on

    def _send(self, msg: Message) -> None:
        try:
            self.ep.send(msg)
        except PeerGone as err:
            raise RoleFailed(f"{self.peer}: {err}", code=3) from None

    def call(self, msg: Message) -> tuple[Message, float, float]:
        """Send and wait for the reply to this request. A restart notice from the peer
        (restart_notice) while waiting means the request may have died with it: it is sent
        again, same epoch and step, and the peer answers it once (a copy it already served
        is dropped and answered from its record). Replies to an earlier copy are skipped."""
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        t_send = time.time()
        self._send(msg)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                _, reply, _ = self.ep.recv(max(0.0, deadline - time.monotonic()))
            except PeerTimeout:
                raise RoleFailed(
                    f"no reply from the {self.peer} ({self.ep.address}) to {msg.kind.name} of step "
                    f"{msg.step} within {self.timeout:.0f} s: {self.peer} or link down",
                    code=3,
                ) from None
            if reply.kind == Kind.WELCOME and RESTARTED in reply.tensors:
                restarted = float(reply.tensors[RESTARTED][0])
                if restarted != self.seen_restart and t_send < restarted + CLOCK_SKEW_S:
                    self.seen_restart = restarted
                    self.resends += 1
                    self.rt.log.write(
                        "resend",
                        peer=self.peer,
                        kind=msg.kind.name,
                        epoch=msg.epoch,
                        step=msg.step,
                        peer_restarted=restarted,
                    )
                    t_send = time.time()
                    self._send(msg)
                    deadline = time.monotonic() + self.timeout
                continue
            if reply.kind == Kind.BYE and msg.kind == Kind.BYE:
                break  # the goodbye answered, or the peer's own farewell (either ends the talk)
            if reply.kind == Kind.BYE:
                raise RoleFailed(
                    f"the {self.peer} finished without this role while waiting for its reply to "
                    f"{msg.kind.name} of step {msg.step}: it had stopped waiting for this role",
                    code=3,
                )
            if reply.kind != Kind.ERROR and (reply.epoch, reply.step) != (msg.epoch, msg.step):
                continue  # the answer to an earlier copy of a re-sent request
            break
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
        return {
            "uplink": max(0.0, s["t_arrival"] - s["t_send"]),
            "server_wait": s["t_start"] - s["t_arrival"],
            "server_forward": s["forward_s"],
            "server_backward": s["backward_s"],
            "downlink": max(0.0, s["t_recv"] - s["t_reply"]),
        }


def restart_notice() -> Message:
    """What a restarted server or aggregator tells each peer: requests sent before now may
    be lost, send them again."""
    import torch  # here: the relay imports this module and never holds torch

    return Message(Kind.WELCOME).add(RESTARTED, torch.tensor([time.time()], dtype=torch.float64), Traffic.CONTROL)


class Notices:
    """A restarted role's notice to every peer (by routing id) until each has been heard from,
    repeated every NOTICE_EVERY_S (a peer reconnecting is not reachable at once), for at most
    `for_s` seconds."""

    def __init__(self, peers: dict[str, bytes], send, for_s: float):
        self.todo, self.send = dict(peers), send  # instance -> routing id
        self.msg = restart_notice()
        self.until = time.monotonic() + for_s
        self.next = 0.0

    def heard(self, instance: str) -> None:
        self.todo.pop(instance, None)

    def tick(self) -> None:
        now = time.monotonic()
        if not self.todo or now < self.next or now > self.until:
            return
        self.next = now + NOTICE_EVERY_S
        for rid in self.todo.values():
            self.send(rid, self.msg)
