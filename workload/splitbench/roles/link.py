"""The emulated network: a relay between sources and the server that delivers each message
when the link model (link/medium.py) says it would have arrived.

Sources connect their DEALERs here instead of to the server; for each source the relay
opens a DEALER to the server under the same routing id, so the server sees the sources
themselves. Frames are forwarded untouched (the relay only reads the header's kind byte).
Several destinations share one relay, and so one medium (--route ID=ADDRESS: hfsl's
source-k to server-k, and every device to the aggregator).
Outages (network.outages) count from the first training message; the relay records an
`outage` event (state down, then up) when each begins and ends.

Identity through the relay (transport.auth curve): sources authenticate to the relay with
their own keys; the relay accepts a routing id only if it belongs to that key ("source-1" or
"source-1>aggregator" for source-1's key) and is one the plan routes, then opens its DEALER to
the server under that routing id, authenticated with the relay's own key (link-0). A server
or aggregator therefore believes a routing id only when the connection's key is the relay's
(roles/checks.py identity_of). Bounds: at most PENDING_MAX messages / PENDING_BYTES_MAX bytes
in flight, one back socket per routed id, an idle timeout of twice the reply timeout.
"""

from __future__ import annotations

import heapq
import itertools
import time

import zmq

from ..link import Medium
from ..transport import WireError, bound_socket, decode, encode, user_id
from ..transport.wire import Kind, error_message, peek_kind, zmtp_overhead
from .checks import Limits, Rejected, Rejections, message_cap
from ..roleplan import role_name, route_target
from .peer import role_security
from .runtime import RoleFailed, Runtime, footprint, zmq_context

# Sleeps and polls overshoot by 0.1-0.2 ms on a small VM, and zmq's poll counts whole
# milliseconds: wake up _EARLY_S before a delivery is due, then spin for the rest. The spin
# stays short, so it does not starve ZeroMQ's I/O threads on a 2-core host.
_EARLY_S = 0.0003


def _timeout_ms(deadline: float | None) -> int:
    """How long to poll for new messages before the next delivery is due."""
    if deadline is None:
        return 200
    wait = deadline - time.monotonic()
    if wait > 0.001 + _EARLY_S:
        return int((wait - _EARLY_S) * 1000)
    if wait > _EARLY_S:
        time.sleep(wait - _EARLY_S)
    while time.monotonic() < deadline:
        pass
    return 0


def _nbytes(frames) -> int:
    return sum(len(f) + zmtp_overhead(len(f)) for f in frames)


def _kind(frames) -> int:
    return peek_kind(frames[0].buffer)


PENDING_MAX = 1024  # messages in flight on the emulated link
PENDING_BYTES_MAX = 256 << 20  # and their bytes; beyond either the relay stops reading sources
_UP_KINDS = (Kind.HELLO, Kind.TRAIN, Kind.EVAL, Kind.BYE)


def check_upstream(limits: Limits, routes: set[str], rid: str, user: str | None, curve: bool, frames) -> None:
    """What the relay checks before it forwards a peer's message: the routing id is one the
    plan routes and belongs to the peer's own key (with CURVE), the message is well-formed,
    for this experiment, a kind a device sends, and says it is from whom its key says."""
    owner = rid.split(">", 1)[0]
    if curve and user != owner:
        raise Rejected("identity", f"key of {user or 'nobody'} cannot speak as {rid[:64]!r}")
    try:
        msg = decode(frames, tensors=False)  # every check, no tensors: the relay runs without torch
    except WireError as err:
        raise Rejected("wire", f"malformed message: {err}") from None
    if msg.kind not in _UP_KINDS:
        raise Rejected("kind", f"{msg.kind.name} is not a message a device sends")
    if msg.experiment != limits.experiment:
        raise Rejected("experiment", f"message for experiment {msg.experiment[:64]!r}")
    if msg.sender and msg.sender != owner:
        raise Rejected("identity", f"{owner} claims to be {msg.sender[:64]!r}")
    if rid not in routes:  # last: an unknown id never gets a socket of its own (the table stays bounded)
        raise Rejected("route", f"no route for {rid[:64]!r}")


class Relay:
    """The link emulator. Its one entry point is run(): setup() binds the front socket the
    devices connect to; relay() then reads what arrives (read_front: checked, given an onward
    socket per routing id; read_back: replies), admits each message to the medium, and
    delivers what the medium says has arrived (deliver), until every peer said goodbye."""

    def __init__(self, args):
        self.args = args
        self.rt = Runtime(args, "link", role_name("link"))
        self.spec = self.rt.spec
        self.rejections = Rejections(self.rt)
        self.backs: dict[bytes, zmq.Socket] = {}  # one per allowed routing id: bounded by the plan
        self.by_sock: dict[zmq.Socket, bytes] = {}
        self.pending: list = []
        self.pending_bytes = 0
        self.seq = itertools.count()
        self.byes = 0
        self.boundaries: list[tuple[float, str]] = []  # outage starts and ends still to be recorded

    def run(self) -> int:
        return self.rt.run(self.body)

    def body(self) -> None:
        self.setup()
        self.relay()
        self.rt.log.write("session", status="relayed", auth=self.security.mode, rejected=self.rejections.total)

    def setup(self) -> None:
        rt, spec, args = self.rt, self.spec, self.args
        # one back socket per routed id: past ~1,000 sources more than ZeroMQ's default 1023
        zmq_context(len(args.route) + spec.sources.replicas + 64)
        self.security = role_security(rt, on_denied=lambda text: self.rejections("?", "auth", text))
        cfg = rt.plan.network  # resolved once, in the plan; cut faults are outages there
        self.routes = dict(r.split("=", 1) for r in args.route)
        self.allowed = set(self.routes) | {role_name("source", i) for i in range(spec.sources.replicas)}
        self.limits = Limits(rt.experiment)
        self.cap = message_cap(spec, torch_free=True)
        # contenders on a shared medium (Bianchi): every source and the access point
        self.medium = Medium(cfg, seed=spec.seed, t0=time.monotonic(), stations=spec.sources.replicas + 1)
        self.ctx = zmq.Context.instance()
        # the relay never blocks on a send: a peer that stopped reading loses what it did not read
        self.front = bound_socket(
            self.ctx, zmq.ROUTER, bind=True, security=self.security, max_msg_bytes=self.cap, sndtimeo_s=0
        )
        self.front.bind(args.bind)
        self.poller = zmq.Poller()
        self.poller.register(self.front, zmq.POLLIN)
        # every peer says BYE through here once: the sources and every other routed identity
        self.expected = len(self.allowed)
        rt.log.write(
            "session",
            status="listening",
            address=self.front.getsockopt_string(zmq.LAST_ENDPOINT),
            medium=cfg.medium,
            profile=cfg.name,
            auth=self.security.mode,
            **footprint(),
        )

    def admit(self, source: bytes, direction: str, frames) -> None:
        medium, now = self.medium, time.monotonic()
        if medium.outage_t0 is None and direction == "up" and _kind(frames) == Kind.TRAIN:
            medium.start_outages(now)
            self.boundaries.extend((t, state) for w in medium.outage_windows() for t, state in zip(w, ("down", "up")))
        n = _nbytes(frames)
        tx = medium.transmit(now, source.decode(errors="replace"), direction, n)
        self.pending_bytes += n
        heapq.heappush(self.pending, (tx.deliver, next(self.seq), source, direction, frames, tx))

    @staticmethod
    def send(sock: zmq.Socket, frames) -> bool:
        try:
            sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def relay(self) -> None:
        idle_s = self.spec.training.reply_timeout_s * 2
        last_heard = time.monotonic()
        reading = True
        while self.byes < self.expected or self.pending:
            room = len(self.pending) < PENDING_MAX and self.pending_bytes < PENDING_BYTES_MAX
            if room != reading:  # full: stop reading sources; their sockets' high-water marks hold them back
                (self.poller.register(self.front, zmq.POLLIN) if room else self.poller.unregister(self.front))
                reading = room
            due = min(
                ([self.pending[0][0]] if self.pending else []) + [b[0] for b in self.boundaries[:1]], default=None
            )
            events = dict(self.poller.poll(_timeout_ms(due)))
            if events:
                last_heard = time.monotonic()
            elif not self.pending and time.monotonic() - last_heard > idle_s:
                raise RoleFailed(
                    f"no message for {idle_s:.0f} s; {self.byes}/{self.expected} peers said goodbye", code=3
                )
            if self.front in events:
                self.read_front()
            for sock in [s for s in events if s is not self.front]:
                while sock.poll(0):
                    self.admit(self.by_sock[sock], "down", sock.recv_multipart(copy=False))
            self.deliver()

    def read_front(self) -> None:
        rt, security = self.rt, self.security
        while len(self.pending) < PENDING_MAX and self.front.poll(0):
            source, *frames = self.front.recv_multipart(copy=False)
            user = user_id(frames[-1]) if security.curve and frames else None
            source = source.bytes
            rid = source.decode("utf-8", "replace")
            try:
                check_upstream(self.limits, self.allowed, rid, user, security.curve, frames)
            except Rejected as err:
                self.rejections(user or rid, err.reason, str(err))
                self.send(self.front, [source, *encode(error_message(str(err), rt.experiment.name, rt.instance))])
                continue
            if source not in self.backs:
                back = bound_socket(
                    self.ctx,
                    zmq.DEALER,
                    bind=False,
                    security=security,
                    identity=source,
                    peer=route_target(self.spec, rid),
                    max_msg_bytes=self.cap,
                    sndtimeo_s=self.spec.training.reply_timeout_s,
                )
                back.connect(self.routes.get(rid, self.args.connect))
                self.backs[source], self.by_sock[back] = back, source
                self.poller.register(back, zmq.POLLIN)
            self.admit(source, "up", frames)

    def deliver(self) -> None:
        """Record outage boundaries that passed, and hand on every message that has arrived."""
        rt, now = self.rt, time.monotonic()
        while self.boundaries and self.boundaries[0][0] <= now:
            rt.log.write("outage", state=self.boundaries.pop(0)[1])
        while self.pending and self.pending[0][0] <= now:
            _, _, source, direction, frames, tx = heapq.heappop(self.pending)
            n = _nbytes(frames)
            self.pending_bytes -= n
            if direction == "up":
                try:
                    self.backs[source].send_multipart(frames, copy=False)
                except zmq.Again:
                    raise RoleFailed(
                        f"cannot forward to {source.decode(errors='replace')}'s peer: gone or not "
                        f"reading for {self.spec.training.reply_timeout_s:.0f} s",
                        code=3,
                    ) from None
            else:
                self.send(self.front, [source, *frames])
                if _kind(frames) == Kind.BYE:
                    self.byes += 1
            rt.metrics.add_bytes(direction, "all", n)
            rt.metrics.link_queue.labels(**rt.metrics.base, direction=direction).observe(tx.queue_s)
            rt.log.write(
                "link",
                source=source.decode(errors="replace"),
                direction=direction,
                bytes=n,
                queue_s=tx.queue_s,
                transmit_s=tx.end - tx.start,
                latency_s=now - tx.arrival,
                lost_packets=tx.lost_packets,
                msg_kind=_kind(frames),
                onair_bytes=tx.onair_bytes,
                airtime_s=tx.airtime_s,
            )


def run(args) -> int:
    return Relay(args).run()
