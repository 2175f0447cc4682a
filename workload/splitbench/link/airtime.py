"""What a medium carries besides the payload, and for how long: the on-air model.

A message of n payload bytes (what the transport wrote: ZMTP frames) travels as a TCP byte
stream: ceil(n / MSS) segments, each with TCP/IP headers (20 + 20 + 12 bytes of timestamp
option; MSS = MTU - 52 = 1448 at 1500), and one TCP ACK per two segments in the other
direction (delayed ACKs, RFC 1122 4.2.3.2 / RFC 5681 4.2).

Ethernet (IEEE 802.3): each packet becomes a frame of 14 bytes of header, payload padded to
46 bytes, 4 bytes FCS, sent after 8 bytes of preamble and SFD and followed by a 12-byte
inter-frame gap. On a full-duplex link the ACKs use the other direction. TCP goodput at MTU
1500: 1448 / 1538 = 94.1% of the line rate.

802.11n/ac/ax (EDCA, best effort, A-MPDU with a compressed BlockAck): segments become
MPDUs (QoS MAC header 26 + LLC/SNAP 8 + IP packet + FCS 4, a 4-byte delimiter, padded to 4
bytes) aggregated up to the BlockAck window, the A-MPDU length limit and the 5.484 ms PPDU
limit. Each aggregate costs a transmit opportunity: AIFS, the backoff, the PHY preamble,
the data symbols (16 service and 6 tail bits), SIFS and a BlockAck at the 24 Mbit/s legacy
rate. TCP ACKs are MPDUs too, sent by the receiver in TXOPs of their own, one per data
TXOP. Contention follows Bianchi (IEEE JSAC 18(3), 2000): with `stations` saturated
stations the fixed point of tau (transmit probability per slot) and p (collision
probability) gives the mean idle slots and collisions per successful transmission; with one
station it is the mean backoff CWmin/2 slots. MPDUs lost at the profile's loss rate are sent
again (1 / (1 - loss) transmissions each), in further aggregates.

On-air bytes are the bits the interfaces send, over 8: frames with their headers, FCS, preambles
(Ethernet) or delimiters (802.11), BlockAcks, TCP ACKs and retransmissions, both directions.
PHY training fields, gaps and idle slots are time, not bytes: they are in the airtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

IP_TCP_HEADERS = 20 + 20 + 12  # IPv4, TCP, timestamp option (Linux default)


@dataclass(frozen=True)
class OnAir:
    payload_bytes: int
    onair_bytes: int  # both directions, everything the interfaces sent
    airtime_s: float  # time the message holds its channel (direction of travel; shared media: both)
    reverse_airtime_s: float = 0.0  # ACK time on the other direction of a full-duplex link

    @property
    def efficiency(self) -> float:
        return self.payload_bytes / self.onair_bytes if self.onair_bytes else 1.0


def segments(n: int, mss: int) -> list[int]:
    """TCP payload sizes of the segments carrying n bytes (an empty message still sends one)."""
    full, rest = divmod(max(n, 0), mss)
    return [mss] * full + ([rest] if rest or not full else [])


def delayed_acks(n_segments: int) -> int:
    return max(1, math.ceil(n_segments / 2))


@dataclass(frozen=True)
class Ethernet:
    rate_bps: float
    mtu: int = 1500
    PREAMBLE_SFD = 8
    HEADER = 14
    FCS = 4
    IFG = 12
    MIN_PAYLOAD = 46

    @property
    def mss(self) -> int:
        return self.mtu - IP_TCP_HEADERS

    def frame_bytes(self, ip_bytes: int) -> int:
        """Bytes sent for one IP packet, preamble and SFD included (the gap is idle time)."""
        return self.PREAMBLE_SFD + self.HEADER + max(ip_bytes, self.MIN_PAYLOAD) + self.FCS

    def message(self, n: int, loss: float = 0.0) -> OnAir:
        segs = segments(n, self.mss)
        tries = 1 / (1 - loss) if loss < 1 else math.inf
        data = sum(self.frame_bytes(s + IP_TCP_HEADERS) for s in segs) * tries
        acks = delayed_acks(len(segs)) * self.frame_bytes(IP_TCP_HEADERS)
        wire = lambda b, frames: (b + frames * self.IFG) * 8 / self.rate_bps  # noqa: E731
        return OnAir(n, round(data + acks), wire(data, len(segs) * tries), wire(acks, delayed_acks(len(segs))))

    def tcp_goodput_bps(self) -> float:
        """Long-transfer goodput: MSS bytes per frame and gap."""
        return self.rate_bps * self.mss / (self.frame_bytes(self.mtu) + self.IFG)


# 802.11 OFDM timing (5 GHz): slot 9 us, SIFS 16 us, AIFS[BE] = SIFS + 3 slots (AIFSN 3).
SLOT, SIFS = 9e-6, 16e-6
AIFS_BE = SIFS + 3 * SLOT
LEGACY_PREAMBLE = 20e-6  # L-STF + L-LTF + L-SIG
BASIC_RATE_BPS = 24e6  # control responses (BlockAck) at a mandatory OFDM rate
MAC_HEADER, LLC_SNAP, MAC_FCS, DELIMITER = 26, 8, 4, 4
PPDU_MAX_S = 5.484e-3  # aPPDUMaxTime (HT-mixed / VHT / HE)


@dataclass(frozen=True)
class WifiStandard:
    name: str
    symbol_s: float  # data OFDM symbol with its guard interval
    preamble_base_s: float  # legacy part and the standard's SIG/STF fields
    ltf_s: float  # one long training field per spatial stream
    ba_window: int  # MPDUs one BlockAck acknowledges
    max_ampdu_bytes: int
    ba_bytes: int  # compressed BlockAck frame

    def preamble_s(self, streams: int) -> float:
        return self.preamble_base_s + streams * self.ltf_s


STANDARDS = {
    # HT-mixed: L-part 20 + HT-SIG 8 + HT-STF 4, HT-LTF 4 us each; 400 ns GI symbols (3.6 us)
    "n": WifiStandard("802.11n", 3.6e-6, 32e-6, 4e-6, 64, 65_535, 32),
    # VHT: L-part 20 + VHT-SIG-A 8 + VHT-STF 4 + VHT-SIG-B 4, VHT-LTF 4 us each; short GI
    "ac": WifiStandard("802.11ac", 3.6e-6, 36e-6, 4e-6, 64, 1_048_575, 32),
    # HE SU: L-part 20 + RL-SIG 4 + HE-SIG-A 8 + HE-STF 4, HE-LTF (2x, 1.6 us GI) 8 us each;
    # 12.8 us symbols + 0.8 us GI; 256-MPDU BlockAck window (bitmap of 32 bytes: frame 56)
    "ax": WifiStandard("802.11ax", 13.6e-6, 36e-6, 8e-6, 256, 6_500_631, 56),
}


@lru_cache(maxsize=64)
def bianchi(stations: int, cw_min: int = 15, cw_max: int = 1023) -> tuple[float, float]:
    """(tau, p) of Bianchi's saturated DCF model: tau = 2(1-2p) / ((1-2p)(W+1) + pW(1-(2p)^m)),
    p = 1 - (1-tau)^(n-1), W = CWmin+1, m = log2((CWmax+1)/W); solved by bisection on p."""
    w, m = cw_min + 1, round(math.log2((cw_max + 1) / (cw_min + 1)))

    def tau_of(p: float) -> float:
        if abs(1 - 2 * p) < 1e-12:
            return 2 / (w + 1 + p * w * sum((2 * p) ** k for k in range(m)))  # the limit at p = 1/2
        return 2 * (1 - 2 * p) / ((1 - 2 * p) * (w + 1) + p * w * (1 - (2 * p) ** m))

    if stations <= 1:
        return tau_of(0.0), 0.0
    lo, hi = 0.0, 1.0
    for _ in range(100):  # bounded: bisection to double precision
        p = (lo + hi) / 2
        if 1 - (1 - tau_of(p)) ** (stations - 1) > p:
            lo = p
        else:
            hi = p
    p = (lo + hi) / 2
    return tau_of(p), p


@dataclass(frozen=True)
class Wifi:
    standard: str
    phy_rate_bps: float
    streams: int = 2
    stations: int = 1  # saturated contenders for Bianchi's model (sources + AP that have traffic)
    mtu: int = 1500
    std: WifiStandard = field(init=False, repr=False)

    def __post_init__(self):
        if self.standard not in STANDARDS:
            raise ValueError(f"unknown 802.11 standard {self.standard!r}; known: {', '.join(STANDARDS)}")
        object.__setattr__(self, "std", STANDARDS[self.standard])

    @property
    def mss(self) -> int:
        return self.mtu - IP_TCP_HEADERS

    @staticmethod
    def mpdu_bytes(ip_bytes: int) -> int:
        """MPDU in an A-MPDU: delimiter, QoS header, LLC/SNAP, packet, FCS, padded to 4."""
        raw = DELIMITER + MAC_HEADER + LLC_SNAP + ip_bytes + MAC_FCS
        return raw + (-raw) % 4

    def ppdu_s(self, nbytes: int) -> float:
        bits_per_symbol = self.phy_rate_bps * self.std.symbol_s
        return (
            self.std.preamble_s(self.streams) + math.ceil((16 + 8 * nbytes + 6) / bits_per_symbol) * self.std.symbol_s
        )

    def block_ack_s(self) -> float:
        return LEGACY_PREAMBLE + math.ceil((16 + 8 * self.std.ba_bytes + 6) / (BASIC_RATE_BPS * 4e-6)) * 4e-6

    def per_ampdu(self, mpdu: int) -> int:
        """MPDUs of this size one A-MPDU may carry."""
        by_time = int(
            (PPDU_MAX_S - self.std.preamble_s(self.streams))
            / self.std.symbol_s
            * self.phy_rate_bps
            * self.std.symbol_s
            / 8
            // mpdu
        )
        return max(1, min(self.std.ba_window, self.std.max_ampdu_bytes // mpdu, by_time))

    def access_s(self, busy_s: float) -> float:
        """Channel time per successful TXOP whose exchange takes busy_s: Bianchi's idle slots
        and collisions around it (for one station: AIFS + CWmin/2 slots)."""
        tau, _ = bianchi(max(self.stations, 1))
        n = max(self.stations, 1)
        p_tr = 1 - (1 - tau) ** n
        p_s = n * tau * (1 - tau) ** (n - 1) / p_tr
        ts = AIFS_BE + busy_s
        tc = AIFS_BE + busy_s  # a collision holds the channel as long (then the ACK timeout)
        return ((1 - p_tr) * SLOT + p_tr * p_s * ts + p_tr * (1 - p_s) * tc) / (p_tr * p_s)

    def _burst(self, mpdus: list[int]) -> tuple[float, int]:
        """(channel time, bytes) of sending these MPDUs, aggregated, each with its BlockAck."""
        t, sent, i = 0.0, 0, 0
        while i < len(mpdus):  # bounded: every pass consumes at least one MPDU
            k = self.per_ampdu(max(mpdus[i : i + self.std.ba_window]))
            chunk = mpdus[i : i + k]
            t += self.access_s(self.ppdu_s(sum(chunk)) + SIFS + self.block_ack_s())
            sent += sum(chunk) + self.std.ba_bytes
            i += k
        return t, sent

    def message(self, n: int, loss: float = 0.0) -> OnAir:
        segs = segments(n, self.mss)
        tries = 1 / (1 - loss) if loss < 1 else math.inf
        mpdus = [self.mpdu_bytes(s + IP_TCP_HEADERS) for s in segs]
        extra = round(len(mpdus) * (tries - 1))  # expected retransmissions, in later aggregates
        data_t, data_b = self._burst(mpdus + mpdus[:1] * extra if extra else mpdus)
        # the receiver's TCP ACKs: one TXOP answering each data aggregate
        per = self.per_ampdu(max(mpdus))
        ack_t, ack_b = 0.0, 0
        for start in range(0, len(mpdus), per):
            acks = delayed_acks(len(mpdus[start : start + per]))
            t, b = self._burst([self.mpdu_bytes(IP_TCP_HEADERS)] * acks)
            ack_t, ack_b = ack_t + t, ack_b + b
        return OnAir(n, data_b + ack_b, data_t + ack_t)

    def tcp_goodput_bps(self, transfer_bytes: int = 4 << 20) -> float:
        """Goodput of a long single-flow TCP transfer over this channel (ACKs share it)."""
        return transfer_bytes * 8 / self.message(transfer_bytes).airtime_s


def medium_model(spec: dict | None, rate_bps: float | None, stations: int = 1):
    """The on-air model a profile's `phy` block describes (None: payload only)."""
    if not spec:
        return None
    kind = spec.get("kind")
    if kind == "ethernet":
        return Ethernet(float(spec.get("lineMbit", 0)) * 1e6 or rate_bps, int(spec.get("mtu", 1500)))
    if kind == "wifi":
        return Wifi(
            str(spec["standard"]),
            float(spec["phyMbit"]) * 1e6,
            int(spec.get("streams", 2)),
            max(1, stations),
            int(spec.get("mtu", 1500)),
        )
    raise ValueError(f"phy.kind must be ethernet or wifi, got {kind!r}")
