"""The on-air model (link/airtime.py) against published figures, and the link emulator
timing messages by it."""

import math

import pytest

from splitbench.link import resolve_network
from splitbench.link.airtime import Ethernet, Wifi, bianchi
from splitbench.link.medium import Medium
from splitbench.spec import NetworkSpec


def test_ethernet_tcp_efficiency_at_1500_mtu_is_94_1_percent():
    """1448 bytes of TCP payload (MTU 1500 less IPv4, TCP and the timestamp option) per
    1538 bytes of wire time (preamble+SFD 8, header 14, FCS 4, gap 12): 94.1%, the figure
    iperf shows on gigabit Ethernet (941 Mbit/s; e.g. Wikipedia, "Ethernet frame",
    Efficiency)."""
    assert Ethernet(1e9).tcp_goodput_bps() / 1e9 == pytest.approx(0.941, abs=0.0005)
    assert Ethernet(100e6).tcp_goodput_bps() / 1e6 == pytest.approx(94.1, abs=0.05)
    # a long message on the wire: the same efficiency, ACKs on the other direction
    air = Ethernet(1e9).message(1448 * 1000)
    assert 1448 * 1000 * 8 / air.airtime_s / 1e9 == pytest.approx(0.9415, abs=0.0005)
    assert air.reverse_airtime_s == pytest.approx(500 * (8 + 14 + 52 + 4 + 12) * 8 / 1e9)  # 500 delayed ACKs


# Meter, "WiFi throughput expectations and limitations" (meter.dev/resources/wifi-throughput-
# expectations-and-limitations): in ideal conditions a single client reaches about 65-70% of
# its PHY rate, with a peak of up to 80%; its worked example, 2x2 256-QAM 5/6 short GI at
# 400 Mbit/s (VHT40 MCS 9), gives about 400 x 70% = 280 Mbit/s.
@pytest.mark.parametrize(
    "standard, phy_mbit, streams",
    [
        ("n", 300, 2),  # 802.11n 2x2 40 MHz MCS 15, short GI
        ("ac", 400, 2),  # 802.11ac 2x2 40 MHz MCS 9, short GI
        ("ac", 866.7, 2),  # 802.11ac 2x2 80 MHz MCS 9, short GI
        ("ax", 1201, 2),  # 802.11ax 2x2 80 MHz HE-MCS 11, 0.8 us GI
    ],
)
def test_wifi_single_client_tcp_goodput_is_in_the_published_band(standard, phy_mbit, streams):
    share = Wifi(standard, phy_mbit * 1e6, streams, stations=2).tcp_goodput_bps() / (phy_mbit * 1e6)
    assert 0.60 <= share <= 0.80, share


def test_wifi_worked_example_400_mbit():
    goodput = Wifi("ac", 400e6, 2, stations=2).tcp_goodput_bps() / 1e6
    assert goodput == pytest.approx(280, rel=0.1)


def test_bianchi_fixed_point():
    tau, p = bianchi(1)
    assert p == 0 and tau == pytest.approx(2 / 17)  # one station: mean backoff CWmin/2 slots
    previous = 0.0
    for n in (2, 5, 10, 20):
        tau, p = bianchi(n)
        assert p == pytest.approx(1 - (1 - tau) ** (n - 1), abs=1e-9)
        assert p > previous
        previous = p
    # more contenders: more airtime for the same message
    times = [Wifi("ax", 1201e6, 2, stations=n).message(500_000).airtime_s for n in (1, 5, 9)]
    assert times == sorted(times) and times[-1] > 1.1 * times[0]


def test_retransmissions_cost_bytes_and_airtime():
    clean, lossy = Wifi("n", 300e6).message(1_000_000), Wifi("n", 300e6).message(1_000_000, loss=0.1)
    assert lossy.onair_bytes > 1.08 * clean.onair_bytes and lossy.airtime_s > 1.08 * clean.airtime_s
    assert Ethernet(1e9).message(100_000, loss=0.1).onair_bytes > Ethernet(1e9).message(100_000).onair_bytes


def test_small_messages_pay_more_overhead_on_wifi_than_on_ethernet():
    """The compressed-split paper's Wi-Fi reduction (~25x) is smaller than its Ethernet one
    (~30x): a per-aggregate cost (BlockAck, the receiver's ACK aggregate) weighs more on a
    budget-4 message than on an uncompressed one, more so on 802.11 than on Ethernet."""
    small, large = 16_600, 524_600  # VGG11 cut after block 4, batch 16: budget 4 of 128 vs all 128 channels
    wifi, eth = Wifi("ax", 1201e6, 2, stations=5), Ethernet(1e9)
    wifi_ratio = wifi.message(large).onair_bytes / wifi.message(small).onair_bytes
    eth_ratio = eth.message(large).onair_bytes / eth.message(small).onair_bytes
    assert wifi_ratio < eth_ratio < large / small
    # in airtime the difference is large: each aggregate's fixed time (access, preamble, BlockAck)
    assert (
        wifi.message(large).airtime_s / wifi.message(small).airtime_s
        < 0.5 * eth.message(large).airtime_s / eth.message(small).airtime_s
    )


def test_the_emulator_times_messages_by_airtime():
    wifi = Medium(resolve_network(NetworkSpec(profile="wifi6")), stations=3)
    n = 2_000_000
    tx = wifi.transmit(0.0, "source-0", "up", n)
    expected = Wifi("ax", 1201e6, 2, stations=3).message(n)
    assert tx.end - tx.start == pytest.approx(expected.airtime_s, rel=1e-9)
    assert tx.onair_bytes == expected.onair_bytes > n and tx.airtime_s == pytest.approx(expected.airtime_s)
    assert tx.end - tx.start > n * 8 / 1201e6 * 1.2  # slower than payload bits at the PHY rate
    # the shared channel: the next message waits for this one's airtime, ACKs included
    assert wifi.transmit(0.0, "source-1", "down", 1000).start == pytest.approx(tx.end)
    eth = Medium(resolve_network(NetworkSpec(profile="ethernet-1g")))
    tx = eth.transmit(0.0, "source-0", "up", n)
    assert n * 8 / (tx.end - tx.start) / 1e9 == pytest.approx(0.941, abs=0.002)
    # an override of the rate scales the airtime (the profile's PHY rate / the current one)
    slow = Medium(resolve_network(NetworkSpec(profile="wifi6", uplink={"rateMbit": 120.1})), stations=3)
    tx_slow = slow.transmit(0.0, "source-0", "up", n)
    assert tx_slow.end - tx_slow.start == pytest.approx(10 * expected.airtime_s, rel=1e-6)
    assert math.isclose(tx_slow.airtime_s, expected.airtime_s)
