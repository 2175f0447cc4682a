"""A ZeroMQ socket that speaks the wire protocol and counts every byte it moves.

Sources use a DEALER (one peer: the server, or the link in between); the server uses a
ROUTER (many sources, told apart by their routing id). Counting happens here, the one
place every message passes, so the run record and the Prometheus counters cannot drift.

Security (transport.auth: curve, the default): every socket is a CurveZMQ socket with the
role's own keypair; sockets that bind are CURVE servers whose ZAP handler (one per process,
Security.start_authenticator) accepts only the experiment's public keys and names the
client by the instance its key belongs to. That name reaches each received message as the
frame property "User-Id" (Endpoint.last_user). Every socket is bounded: MAXMSGSIZE,
send/receive high-water marks and a send timeout (PeerGone when it expires).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable, Mapping

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from .keys import Keyring, curve_wire_bytes
from .wire import Layout, Message, Traffic, WireError, decode_layout, encode_layout, frame_len, zmtp_overhead

ByteHook = Callable[[str, Traffic, int], None]  # (direction "tx"|"rx", traffic, bytes)

_SNDMORE = zmq.SNDMORE
# pyzmq's own send, under its Python wrapper (which only adds the draft routing_id and group
# arguments this project never uses): one Python call less per frame on the hot path
_send_frame = zmq.backend.Socket.send
DEFAULT_HWM = 64  # messages queued per peer and direction before senders wait
DEFAULT_SNDTIMEO_S = 30.0
# Frames smaller than this are copied into ZeroMQ's message even when sent "zero-copy": a
# zero-copy frame costs pyzmq a tracker and a wake-up of its garbage-collector thread when
# libzmq lets go of it, more than a memcpy of a few hundred KiB. pyzmq copies below 64 KiB by
# default; measured here (raw pyzmq round trips, interleaved, 95% intervals) copying ran 1.13x
# [1.12, 1.15] as fast at 64 KiB, 1.06x at 256 KiB, 1.01x at 512 KiB and 0.95x at 1 MiB.
COPY_BELOW = 512 << 10
_TALLY_MAX = 256  # layouts an endpoint counts apart before folding them into byte totals


class PeerTimeout(TimeoutError):
    """No message arrived within the reply timeout: the peer is dead or the link is cut."""


class PeerGone(ConnectionError):
    """A send could not be queued within the send timeout: the peer is gone or not reading."""


class _KeyAuthenticator(ThreadAuthenticator):
    """ZAP for one experiment: a key is allowed if it is one of the experiment's; the
    User-Id handed to the socket is that key's instance, never anything the client says."""

    def __init__(self, ctx: zmq.Context, security: "Security"):
        super().__init__(ctx)
        self.security = security

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.security.keys.owner(z85.encode(client_public_key)) or ""


class Security:
    """The transport security of one role process: 'curve' (with its keyring) or 'none'."""

    def __init__(
        self,
        mode: str = "none",
        keyring: Keyring | None = None,
        domain: str = "",
        on_denied: Callable[[str], None] | None = None,
    ):
        if mode == "curve" and keyring is None:
            raise ValueError("transport.auth curve needs a keyring")
        self.mode, self.keyring, self.domain = mode, keyring, domain or "splitbench"
        self.on_denied = on_denied
        self.auth: _KeyAuthenticator | None = None

    @property
    def keys(self) -> Keyring:
        """The keyring; only curve mode has one (the constructor insists)."""
        if self.keyring is None:
            raise RuntimeError("transport.auth none has no keyring")
        return self.keyring

    @property
    def curve(self) -> bool:
        return self.mode == "curve"

    def start_authenticator(self, ctx: zmq.Context) -> None:
        """Run the process's ZAP handler (once, before any CURVE server socket binds)."""
        if not self.curve or self.auth is not None:
            return
        self.auth = _KeyAuthenticator(ctx, self)
        self.auth.start()
        self.auth.configure_curve_callback(domain=self.domain, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:  # zmq.auth credentials provider
        ok = domain == self.domain and self.keys.owner(key) is not None
        if not ok and self.on_denied:
            self.on_denied(f"CURVE key {key[:8].decode(errors='replace')}... is not one of this experiment's")
        return ok

    def apply(self, sock: zmq.Socket, bind: bool, peer: str | None) -> None:
        if not self.curve:
            return
        k = self.keys
        sock.curve_secretkey, sock.curve_publickey = k.secret, k.public
        if bind:
            if self.auth is None:
                raise RuntimeError("start_authenticator() before binding a CURVE server socket")
            sock.curve_server = True
            sock.zap_domain = self.domain.encode()
        else:
            if peer is None:
                raise ValueError("a CURVE client needs the instance it connects to (for its public key)")
            sock.curve_serverkey = k.public_of(peer)

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


NO_SECURITY = Security()


def bound_socket(
    ctx: zmq.Context,
    kind: int,
    *,
    bind: bool,
    security: Security = NO_SECURITY,
    peer: str | None = None,
    identity: bytes | None = None,
    max_msg_bytes: int | None = None,
    hwm: int = DEFAULT_HWM,
    sndtimeo_s: float | None = DEFAULT_SNDTIMEO_S,
) -> zmq.Socket:
    """A socket with every bound this project sets: linger, message size, queues, send timeout,
    and the role's CURVE keys (set before bind/connect, as ZeroMQ requires)."""
    sock = ctx.socket(kind)
    sock.copy_threshold = COPY_BELOW
    sock.setsockopt(zmq.LINGER, 2000)
    if max_msg_bytes:
        sock.setsockopt(zmq.MAXMSGSIZE, int(max_msg_bytes))
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if sndtimeo_s is not None:
        sock.setsockopt(zmq.SNDTIMEO, int(sndtimeo_s * 1000))
    if identity:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    security.apply(sock, bind, peer)
    return sock


def user_id(frame) -> str | None:
    """The ZAP User-Id of the connection a received frame came on (None without CURVE)."""
    try:
        uid = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError):
        return None
    return uid or None


class Endpoint:
    def __init__(
        self,
        ctx: zmq.Context,
        kind: int,
        address: str,
        *,
        bind: bool,
        identity: str | None = None,
        on_bytes: ByteHook | None = None,
        security: Security = NO_SECURITY,
        peer: str | None = None,
        max_msg_bytes: int | None = None,
        hwm: int = DEFAULT_HWM,
        sndtimeo_s: float | None = DEFAULT_SNDTIMEO_S,
    ):
        self.security = security
        self.curve = security.curve
        self.sock = bound_socket(
            ctx,
            kind,
            bind=bind,
            security=security,
            peer=peer,
            identity=identity.encode() if identity else None,
            max_msg_bytes=max_msg_bytes,
            hwm=hwm,
            sndtimeo_s=sndtimeo_s,
        )
        (self.sock.bind if bind else self.sock.connect)(address)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else address
        self.router = kind == zmq.ROUTER
        # Messages counted per layout and direction, turned into bytes when read (tx, rx,
        # transport): a message costs one dict increment, not one per traffic kind and total.
        self._tally: dict[tuple[str, Layout], int] = {}
        self._folded: dict[str, Counter] = {"tx": Counter(), "rx": Counter(), "transport": Counter()}
        self._fold_lock = threading.Lock()
        self.on_bytes = on_bytes
        self.sndtimeo_s = sndtimeo_s
        self.last_user: str | None = None  # the authenticated sender of the last received message
        self._rcvtimeo = -1  # the socket's receive timeout now (ms; -1: none)

    @property
    def tx(self) -> Counter[Traffic]:
        """Payload and framing bytes sent, by traffic kind (a new Counter at each read)."""
        return self._totals()["tx"]

    @property
    def rx(self) -> Counter[Traffic]:
        """Payload and framing bytes received, by traffic kind."""
        return self._totals()["rx"]

    @property
    def transport(self) -> Counter[str]:
        """All bytes on the wire by direction ("tx", "rx"), CURVE's per-frame overhead included."""
        return self._totals()["transport"]

    def _totals(self) -> dict[str, Counter]:
        # under the fold's lock: a read from another thread (a server's main thread while its
        # I/O thread receives) sees the tally and the folded totals of one moment, never a
        # layout in both or in neither; counting a message itself takes no lock
        with self._fold_lock:
            tally = list(self._tally.items())
            out = {k: c.copy() for k, c in self._folded.items()}
        self._add(out, tally)
        return out

    def _add(self, into: dict[str, Counter], tally) -> None:
        curve = self.curve
        for (direction, layout), k in tally:
            wire = layout.transport
            if wire is None:
                wire = layout.transport = (
                    sum(n + zmtp_overhead(n) for n in layout.lengths),
                    curve_wire_bytes(layout.lengths),
                )
            into["transport"][direction] += k * wire[1 if curve else 0]
            total = into[direction]
            for t, n in layout.counts.items():
                total[t] += k * n

    def _transport(self, direction: str, frames) -> None:
        lengths = [frame_len(f) for f in frames]
        n = curve_wire_bytes(lengths) if self.curve else sum(n + zmtp_overhead(n) for n in lengths)
        with self._fold_lock:
            self._folded["transport"][direction] += n

    def _count(self, direction: str, layout: Layout) -> Mapping[Traffic, int]:
        """Count one message of a layout; return its bytes by traffic kind (read-only: shared
        by every message of the layout)."""
        key = (direction, layout)
        tally = self._tally
        k = tally.get(key)
        if k is None:
            if len(tally) >= _TALLY_MAX:  # ever new layouts (a peer sending odd shapes): keep it small
                with self._fold_lock:
                    self._add(self._folded, list(tally.items()))
                    tally.clear()
            k = 0
        tally[key] = k + 1
        hook = self.on_bytes
        if hook is not None:
            for t, n in layout.counts.items():
                hook(direction, t, n)
        return layout.counts

    def send(self, msg: Message, to: bytes | None = None) -> Mapping[Traffic, int]:
        frames, layout = encode_layout(msg)
        sock = self.sock
        try:
            if self.router:
                if to is None:
                    raise ValueError("a ROUTER endpoint needs a destination routing id")
                _send_frame(sock, to, _SNDMORE)
            # as send_multipart, without its per-frame type checks; the header is small and copied
            # (a zero-copy frame costs more to set up and free than the copy of ~60 bytes)
            last = len(frames) - 1
            _send_frame(sock, frames[0], _SNDMORE if last else 0)
            for i in range(1, last + 1):
                _send_frame(sock, frames[i], _SNDMORE if i < last else 0, False)
        except zmq.Again:
            raise PeerGone(
                f"cannot send {msg.kind.name} to {self.address}: the peer is gone or has not read "
                f"for {self.sndtimeo_s:.0f} s"
            ) from None
        return self._count("tx", layout)

    def recv(self, timeout_s: float | None = None) -> tuple[bytes | None, Message, Mapping[Traffic, int]]:
        """(sender routing id or None, message, bytes by kind); the authenticated sender is in
        last_user. Raises WireError for a bad message (already counted as received) and
        PeerTimeout when nothing came."""
        sock = self.sock
        ms = -1 if timeout_s is None else int(timeout_s * 1000)
        if ms != self._rcvtimeo:  # the wait is the socket's receive timeout: no poller per message
            sock.setsockopt(zmq.RCVTIMEO, ms)
            self._rcvtimeo = ms
        try:
            frame = sock.recv(0, copy=False)
        except zmq.Again:
            raise PeerTimeout(f"nothing from {self.address} in {timeout_s:.0f} s") from None
        frames = [frame]
        while frame.more:  # the rest of a multipart message is there once its first frame is
            frame = sock.recv(0, copy=False)
            frames.append(frame)
        sender = None
        self.last_user = user_id(frame) if self.curve else None
        if self.router:
            sender, frames = frames[0].bytes, frames[1:]
        try:
            msg, layout = decode_layout(frames)
        except WireError as err:
            err.sender = sender  # type: ignore[attr-defined]
            err.user = self.last_user  # type: ignore[attr-defined]
            err.nbytes = sum(len(f) for f in frames)  # type: ignore[attr-defined]
            self._transport("rx", frames)
            raise
        return sender, msg, self._count("rx", layout)

    def close(self) -> None:
        self.sock.close()
