"""A ZeroMQ socket that speaks the wire protocol and counts every byte it moves.

Sources use a DEALER (one peer: the server, or the link in between); the server uses a
ROUTER (many sources, told apart by their routing id). Counting happens here, the one
place every message passes, so the run record and the Prometheus counters cannot drift.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import zmq

from .wire import Message, Traffic, WireError, decode, encode, wire_bytes

ByteHook = Callable[[str, Traffic, int], None]  # (direction "tx"|"rx", traffic, bytes)


class PeerTimeout(TimeoutError):
    """No message arrived within the reply timeout: the peer is dead or the link is cut."""


class Endpoint:
    def __init__(self, ctx: zmq.Context, kind: int, address: str, *, bind: bool, identity: str | None = None,
                 on_bytes: ByteHook | None = None):
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 2000)
        if identity:
            self.sock.setsockopt(zmq.ROUTING_ID, identity.encode())
        (self.sock.bind if bind else self.sock.connect)(address)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else address
        self.router = kind == zmq.ROUTER
        self.tx: Counter[Traffic] = Counter()
        self.rx: Counter[Traffic] = Counter()
        self.on_bytes = on_bytes

    def _count(self, direction: str, frames, msg: Message) -> dict[Traffic, int]:
        counts = wire_bytes(frames, msg)
        total = self.tx if direction == "tx" else self.rx
        for t, n in counts.items():
            total[t] += n
            if self.on_bytes:
                self.on_bytes(direction, t, n)
        return counts

    def send(self, msg: Message, to: bytes | None = None) -> dict[Traffic, int]:
        frames = encode(msg)
        if self.router:
            if to is None:
                raise ValueError("a ROUTER endpoint needs a destination routing id")
            self.sock.send_multipart([to, *frames], copy=False)
        else:
            self.sock.send_multipart(frames, copy=False)
        return self._count("tx", frames, msg)

    def recv(self, timeout_s: float | None = None) -> tuple[bytes | None, Message, dict[Traffic, int]]:
        """(sender routing id or None, message, bytes by kind). Raises WireError for a bad
        message (already counted as received) and PeerTimeout when nothing came."""
        if timeout_s is not None and not self.sock.poll(int(timeout_s * 1000)):
            raise PeerTimeout(f"nothing from {self.address} in {timeout_s:.0f} s")
        frames = self.sock.recv_multipart(copy=False)
        sender = None
        if self.router:
            sender, frames = frames[0].bytes, frames[1:]
        try:
            msg = decode(frames)
        except WireError as err:
            err.sender = sender  # type: ignore[attr-defined]
            err.nbytes = sum(len(f) for f in frames)  # type: ignore[attr-defined]
            raise
        return sender, msg, self._count("rx", frames, msg)

    def close(self) -> None:
        self.sock.close()
