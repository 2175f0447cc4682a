"""The timing model of the emulated link: when does a message of n bytes arrive?

A channel transmits one message at a time at the configured rate; a message waits while
its channel is busy. Dedicated media give each (source, direction) its own channel;
a shared medium is one channel for every source and both directions, so Wi-Fi sources
really contend for airtime. Then one-way delay plus jitter; TCP keeps order per flow.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from .profiles import Direction, LinkConfig

MSS = 1448  # TCP payload per packet, for the loss model


@dataclass(frozen=True)
class Transmission:
    arrival: float  # the message reached the link
    start: float    # its channel became free
    end: float      # last bit sent
    deliver: float  # handed to the receiver
    lost_packets: int

    @property
    def queue_s(self) -> float:
        return self.start - self.arrival


class Medium:
    def __init__(self, cfg: LinkConfig, seed: int = 0, t0: float = 0.0):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.t0 = t0  # trace time zero
        self.busy_until: dict[object, float] = {}
        self.last_delivery: dict[tuple[str, str], float] = {}
        self._trace_t = [t for t, _ in cfg.trace]

    def _direction(self, direction: str) -> Direction:
        return self.cfg.up if direction == "up" else self.cfg.down

    def rate_at(self, t: float, direction: str) -> float | None:
        if self.cfg.trace:
            i = bisect.bisect_right(self._trace_t, t - self.t0) - 1
            return self.cfg.trace[max(i, 0)][1]
        return self._direction(direction).rate_bps

    def _finish(self, start: float, bits: float, direction: str) -> float:
        if not self.cfg.trace:
            rate = self._direction(direction).rate_bps
            return start if rate is None else start + bits / rate
        t = start
        while bits > 0:  # integrate the piecewise-constant trace rate
            rel = t - self.t0
            i = max(bisect.bisect_right(self._trace_t, rel) - 1, 0)
            rate = self.cfg.trace[i][1]
            seg_end = self.t0 + self._trace_t[i + 1] if i + 1 < len(self._trace_t) else math.inf
            can = (seg_end - t) * rate
            if can >= bits:
                return t + bits / rate
            bits -= can
            t = seg_end
        return t

    def transmit(self, now: float, source: str, direction: str, nbytes: int) -> Transmission:
        d = self._direction(direction)
        key = "air" if self.cfg.medium == "shared" else (source, direction)
        start = max(now, self.busy_until.get(key, 0.0))
        lost = 0
        if d.loss > 0:
            lost = int(self.rng.binomial(max(1, math.ceil(nbytes / MSS)), d.loss))
        end = self._finish(start, 8 * (nbytes + lost * MSS), direction)
        self.busy_until[key] = end
        latency = d.delay_s + (abs(self.rng.normal(0, d.jitter_s)) if d.jitter_s > 0 else 0.0)
        if lost:
            latency += 2 * d.delay_s  # fast retransmit costs about one round trip
        flow = (source, direction)
        deliver = max(end + latency, self.last_delivery.get(flow, 0.0))
        self.last_delivery[flow] = deliver
        return Transmission(now, start, end, deliver, lost)
