"""The timing model of the emulated link: when does a message of n bytes arrive?

A channel transmits one message at a time at the configured rate; a message waits while
its channel is busy. Dedicated media give each (source, direction) its own channel;
a shared medium is one channel for every source and both directions, so Wi-Fi sources
really contend for airtime. Then one-way delay plus jitter; TCP keeps order per flow.
During an outage no bit moves: a message being sent pauses and resumes when the link
returns (as a TCP connection that outlives the outage would); bits already on their way
are delivered.

On-air model (link/airtime.py): where the profile has a `phy` block (Ethernet framing, or
802.11n/ac/ax with aggregation, BlockAcks and Bianchi's contention), a message holds its
channel for its airtime - TCP/IP headers, framing, the receiver's TCP ACKs (on the shared
medium: the same channel; on a full-duplex link: the other direction), retransmissions at
the profile's loss rate - instead of payload bits over a goodput. The profile's rateMbit is
then the line or PHY rate, and a trace or an override scales the airtime by (profile PHY
rate / current rate). Each Transmission carries its on-air bytes and airtime; without a phy
block they are the payload and its time at the rate.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from ..resources import load_profiles
from .airtime import Ethernet, medium_model
from .profiles import Direction, LinkConfig

MSS = 1448  # TCP payload per packet, for the loss model


@dataclass(frozen=True)
class Transmission:
    arrival: float  # the message reached the link
    start: float  # its channel became free
    end: float  # last bit sent
    deliver: float  # handed to the receiver
    lost_packets: int
    onair_bytes: int = 0  # what the interfaces sent for it (link/airtime.py); payload when not modelled
    airtime_s: float = 0.0  # its time on the channel at the nominal rate

    @property
    def queue_s(self) -> float:
        return self.start - self.arrival


class Medium:
    def __init__(self, cfg: LinkConfig, seed: int = 0, t0: float = 0.0, stations: int = 1, phy: dict | None = None):
        """stations: contenders on a shared medium (sources + access point) for Bianchi's
        model; phy: the profile's phy block (default: looked up by the profile's name)."""
        self.cfg = cfg
        if phy is None and cfg.medium != "none":
            phy = (load_profiles("networks.yaml").get(cfg.name) or {}).get("phy")
        self.phy = phy
        self.model = medium_model(phy, None, stations if cfg.medium == "shared" else 1) if phy else None
        self.nominal_bps = (
            (self.model.rate_bps if isinstance(self.model, Ethernet) else self.model.phy_rate_bps)
            if self.model
            else None
        )
        self.rng = np.random.default_rng(seed)
        self.t0 = t0  # trace time zero
        self.busy_until: dict[object, float] = {}
        self.last_delivery: dict[tuple[str, str], float] = {}
        self._trace_t = [t for t, _ in cfg.trace]
        self.outage_t0: float | None = None  # set when training begins; outages count from there

    def start_outages(self, now: float) -> None:
        if self.outage_t0 is None:
            self.outage_t0 = now

    def outage_windows(self) -> list[tuple[float, float]]:
        """Outages in this medium's clock (empty until training begins)."""
        if self.outage_t0 is None:
            return []
        return [(self.outage_t0 + a, self.outage_t0 + b) for a, b in self.cfg.outages]

    def _direction(self, direction: str) -> Direction:
        return self.cfg.up if direction == "up" else self.cfg.down

    def rate_at(self, t: float, direction: str) -> float | None:
        return self._rate_segment(t, direction)[0]

    def _rate_segment(self, t: float, direction: str) -> tuple[float | None, float]:
        """(rate in bits/s, None = unlimited, 0 = down) at time t, and when that rate next changes."""
        for start, end in self.outage_windows():
            if start <= t < end:
                return 0.0, end
        nxt = min((s for s, _ in self.outage_windows() if s > t), default=math.inf)
        if not self.cfg.trace:
            return self._direction(direction).rate_bps, nxt
        i = max(bisect.bisect_right(self._trace_t, t - self.t0) - 1, 0)
        seg_end = self.t0 + self._trace_t[i + 1] if i + 1 < len(self._trace_t) else math.inf
        return self.cfg.trace[i][1], min(seg_end, nxt)

    def _finish(self, start: float, bits: float, direction: str) -> float:
        """When the last of `bits` leaves, integrating the piecewise-constant rate (trace,
        outages) from `start`."""
        t = start
        while True:
            rate, seg_end = self._rate_segment(t, direction)
            if rate is None:
                return t
            if rate > 0:
                if bits <= (seg_end - t) * rate:
                    return t + bits / rate
                bits -= (seg_end - t) * rate
            t = seg_end

    def transmit(self, now: float, source: str, direction: str, nbytes: int) -> Transmission:
        d = self._direction(direction)
        key = "air" if self.cfg.medium == "shared" else (source, direction)
        start = max(now, self.busy_until.get(key, 0.0))
        lost = 0
        if d.loss > 0:
            lost = int(self.rng.binomial(max(1, math.ceil(nbytes / MSS)), d.loss))
        if self.model is not None:
            air = self.model.message(nbytes, d.loss)
            onair, airtime = air.onair_bytes, air.airtime_s
            # the channel's time at the nominal rate, scaled by traces, outages and overrides
            end = self._finish(start, airtime * self.nominal_bps, direction)
            if air.reverse_airtime_s and self.cfg.medium != "shared":
                back = (source, "down" if direction == "up" else "up")  # TCP ACKs on the other direction
                self.busy_until[back] = max(self.busy_until.get(back, 0.0), start) + air.reverse_airtime_s
        else:
            onair = nbytes + lost * MSS
            end = self._finish(start, 8 * onair, direction)
            airtime = 8 * onair / d.rate_bps if d.rate_bps else 0.0
        self.busy_until[key] = end
        latency = d.delay_s + (abs(self.rng.normal(0, d.jitter_s)) if d.jitter_s > 0 else 0.0)
        if lost and not (self.phy and self.phy.get("kind") == "wifi"):
            latency += 2 * d.delay_s  # TCP's fast retransmit costs about one round trip (802.11 retries at the MAC)
        flow = (source, direction)
        deliver = max(end + latency, self.last_delivery.get(flow, 0.0))
        self.last_delivery[flow] = deliver
        return Transmission(now, start, end, deliver, lost, int(onair), float(airtime))
