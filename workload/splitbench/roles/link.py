"""The emulated network: a relay between sources and the server that delivers each message
when the link model (link/medium.py) says it would have arrived.

Sources connect their DEALERs here instead of to the server; for each source the relay
opens a DEALER to the server under the same routing id, so the server sees the sources
themselves. Frames are forwarded untouched (the relay only reads the header's kind byte).
"""
from __future__ import annotations

import heapq
import itertools
import time

import zmq

from ..link import Medium, resolve_network
from ..transport.wire import _FIXED, Kind, zmtp_overhead
from .runtime import Runtime

_SPIN_S = 0.002  # below this, busy-wait: zmq's poll has millisecond granularity


def _nbytes(frames) -> int:
    return sum(len(f.buffer) + zmtp_overhead(len(f.buffer)) for f in frames)


def _kind(frames) -> int:
    head = frames[0].buffer
    return head[3] if len(head) >= _FIXED.size else -1


def run(args) -> int:
    rt = Runtime(args, "link", "link-0")
    spec = rt.spec

    def body():
        cfg = resolve_network(spec.network)
        medium = Medium(cfg, seed=spec.seed, t0=time.monotonic())
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
        byes, expected = 0, spec.sources.replicas
        rt.log.write("session", status="listening", address=front.getsockopt_string(zmq.LAST_ENDPOINT),
                     medium=cfg.medium, profile=cfg.name)

        def admit(source: bytes, direction: str, frames) -> None:
            now = time.monotonic()
            n = _nbytes(frames)
            tx = medium.transmit(now, source.decode(errors="replace"), direction, n)
            heapq.heappush(pending, (tx.deliver, next(seq), source, direction, frames, tx))

        while byes < expected or pending:
            wait = max(0.0, pending[0][0] - time.monotonic()) if pending else 0.2
            events = dict(poller.poll(0 if wait < _SPIN_S else int(wait * 1000)))
            if front in events:
                while front.poll(0):
                    source, *frames = front.recv_multipart(copy=False)
                    source = source.bytes
                    if source not in backs:
                        back = ctx.socket(zmq.DEALER)
                        back.setsockopt(zmq.ROUTING_ID, source)
                        back.setsockopt(zmq.LINGER, 2000)
                        back.connect(args.connect)
                        backs[source], by_sock[back] = back, source
                        poller.register(back, zmq.POLLIN)
                    admit(source, "up", frames)
            for sock in [s for s in events if s is not front]:
                while sock.poll(0):
                    admit(by_sock[sock], "down", sock.recv_multipart(copy=False))
            now = time.monotonic()
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
                             lost_packets=tx.lost_packets)

    return rt.run(body)
