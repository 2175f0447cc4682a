"""The emulated network: a relay between sources and the server that delivers each message
when the link model (link/medium.py) says it would have arrived.

Sources connect their DEALERs here instead of to the server; for each source the relay
opens a DEALER to the server under the same routing id, so the server sees the sources
themselves. Frames are forwarded untouched (the relay only reads the header's kind byte).
Several destinations share one relay, and so one medium (--route ID=ADDRESS: hfsl's
source-k to server-k, and every device to the aggregator).
Outages (network.outages) count from the first training message; the relay records an
`outage` event (state down, then up) when each begins and ends.
"""
from __future__ import annotations

import heapq
import itertools
import time

import zmq

from ..link import Medium, resolve_network
from ..transport.wire import _FIXED, Kind, zmtp_overhead
from .runtime import Runtime

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
    head = frames[0].buffer
    return head[3] if len(head) >= _FIXED.size else -1


def run(args) -> int:
    rt = Runtime(args, "link", "link-0")
    spec = rt.spec

    def body():
        cfg = resolve_network(spec.network)
        routes = dict(r.split("=", 1) for r in args.route)
        # contenders on a shared medium (Bianchi): every source and the access point
        medium = Medium(cfg, seed=spec.seed, t0=time.monotonic(), stations=spec.sources.replicas + 1)
        ctx = zmq.Context.instance()
        front = ctx.socket(zmq.ROUTER)
        front.setsockopt(zmq.LINGER, 2000)
        front.bind(args.bind)
        backs: dict[bytes, zmq.Socket] = {}
        by_sock: dict[zmq.Socket, bytes] = {}
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        pending: list = []
        seq = itertools.count()
        # every peer says BYE through here once: the sources and every other routed identity
        byes, expected = 0, len({f"source-{i}" for i in range(spec.sources.replicas)} | set(routes))
        rt.log.write("session", status="listening", address=front.getsockopt_string(zmq.LAST_ENDPOINT),
                     medium=cfg.medium, profile=cfg.name)

        boundaries: list[tuple[float, str]] = []  # outage starts and ends still to be recorded

        def admit(source: bytes, direction: str, frames) -> None:
            now = time.monotonic()
            if medium.outage_t0 is None and direction == "up" and _kind(frames) == Kind.TRAIN:
                medium.start_outages(now)
                boundaries.extend((t, state) for w in medium.outage_windows() for t, state in zip(w, ("down", "up")))
            n = _nbytes(frames)
            tx = medium.transmit(now, source.decode(errors="replace"), direction, n)
            heapq.heappush(pending, (tx.deliver, next(seq), source, direction, frames, tx))

        while byes < expected or pending:
            due = min(([pending[0][0]] if pending else []) + [b[0] for b in boundaries[:1]], default=None)
            events = dict(poller.poll(_timeout_ms(due)))
            if front in events:
                while front.poll(0):
                    source, *frames = front.recv_multipart(copy=False)
                    source = source.bytes
                    if source not in backs:
                        back = ctx.socket(zmq.DEALER)
                        back.setsockopt(zmq.ROUTING_ID, source)
                        back.setsockopt(zmq.LINGER, 2000)
                        back.connect(routes.get(source.decode(errors="replace"), args.connect))
                        backs[source], by_sock[back] = back, source
                        poller.register(back, zmq.POLLIN)
                    admit(source, "up", frames)
            for sock in [s for s in events if s is not front]:
                while sock.poll(0):
                    admit(by_sock[sock], "down", sock.recv_multipart(copy=False))
            now = time.monotonic()
            while boundaries and boundaries[0][0] <= now:
                rt.log.write("outage", state=boundaries.pop(0)[1])
            while pending and pending[0][0] <= now:
                _, _, source, direction, frames, tx = heapq.heappop(pending)
                if direction == "up":
                    backs[source].send_multipart(frames, copy=False)
                else:
                    front.send_multipart([source, *frames], copy=False)
                    if _kind(frames) == Kind.BYE:
                        byes += 1
                n = _nbytes(frames)
                rt.metrics.add_bytes(direction, "all", n)
                rt.metrics.link_queue.labels(**rt.metrics.base, direction=direction).observe(tx.queue_s)
                rt.log.write("link", source=source.decode(errors="replace"), direction=direction, bytes=n,
                             queue_s=tx.queue_s, transmit_s=tx.end - tx.start, latency_s=now - tx.arrival,
                             lost_packets=tx.lost_packets, msg_kind=_kind(frames), onair_bytes=tx.onair_bytes,
                             airtime_s=tx.airtime_s)

    return rt.run(body)
