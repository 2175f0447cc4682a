import pytest

from splitbench.link import resolve_network
from splitbench.link.medium import MSS, Medium
from splitbench.link.profiles import Direction, LinkConfig, load_trace
from splitbench.spec import NetworkSpec, SpecError

MB = 1_000_000


def cfg(medium="dedicated", rate=8e6, delay=0.0, jitter=0.0, loss=0.0, trace=(), outages=()):
    d = Direction(rate, delay, jitter, loss)
    return LinkConfig("t", medium, d, d, trace, outages)


def test_rate_and_delay():
    m = Medium(cfg(rate=8e6, delay=0.01))
    tx = m.transmit(0.0, "s0", "up", MB)  # 8 Mbit at 8 Mbit/s
    assert tx.end == pytest.approx(1.0)
    assert tx.deliver == pytest.approx(1.01)


def test_shared_medium_makes_sources_contend_and_dedicated_does_not():
    shared = Medium(cfg("shared"))
    a = shared.transmit(0.0, "s0", "up", MB)
    b = shared.transmit(0.0, "s1", "up", MB)
    c = shared.transmit(0.0, "s2", "down", MB)  # half duplex: downlink waits for the air too
    assert (a.end, b.end, c.end) == pytest.approx((1.0, 2.0, 3.0))
    assert b.queue_s == pytest.approx(1.0)
    dedicated = Medium(cfg("dedicated"))
    a = dedicated.transmit(0.0, "s0", "up", MB)
    b = dedicated.transmit(0.0, "s1", "up", MB)
    c = dedicated.transmit(0.0, "s0", "down", MB)  # full duplex
    assert (a.end, b.end, c.end) == pytest.approx((1.0, 1.0, 1.0))
    d = dedicated.transmit(0.5, "s0", "up", MB)  # same source and direction: queues
    assert d.start == pytest.approx(1.0) and d.queue_s == pytest.approx(0.5)


def test_jitter_never_reorders_a_flow():
    m = Medium(cfg(rate=None, delay=0.01, jitter=0.02), seed=3)
    deliveries = [m.transmit(i * 0.001, "s0", "up", 100).deliver for i in range(500)]
    assert deliveries == sorted(deliveries)
    extra = [d - i * 0.001 - 0.01 for i, d in enumerate(deliveries)]
    assert min(extra) >= 0 and max(extra) > 0.01  # jitter is really applied


def test_loss_costs_retransmissions():
    lossless = Medium(cfg(rate=8e6, delay=0.005))
    lossy = Medium(cfg(rate=8e6, delay=0.005, loss=0.05), seed=1)
    a = lossless.transmit(0.0, "s", "up", MB)
    b = lossy.transmit(0.0, "s", "up", MB)
    assert b.lost_packets > 0
    assert b.end == pytest.approx(a.end + b.lost_packets * MSS * 8 / 8e6)
    assert b.deliver == pytest.approx(b.end + 0.005 + 0.01)


def test_trace_rate_is_integrated_over_time():
    m = Medium(cfg(trace=((0.0, 8e6), (1.0, 4e6))))
    tx = m.transmit(0.5, "s", "up", MB)  # 4 Mbit at 8 Mbit/s for 0.5 s, then 4 Mbit at 4 Mbit/s
    assert tx.end == pytest.approx(2.0)
    assert m.rate_at(10.0, "up") == 4e6


def test_an_outage_pauses_transmission_and_counts_from_training_start():
    m = Medium(cfg(rate=8e6, delay=0.01, outages=((1.0, 3.0),)))
    before = m.transmit(0.0, "s", "up", MB)  # training has not begun: no outage applies yet
    assert before.end == pytest.approx(1.0)
    m.start_outages(10.0)  # link down 11..13
    assert m.rate_at(11.5, "up") == 0.0 and m.rate_at(13.0, "up") == 8e6
    spans = m.transmit(10.5, "s", "up", MB)  # 0.5 s sent, paused 2 s, 0.5 s more
    assert spans.end == pytest.approx(13.5) and spans.deliver == pytest.approx(13.51)
    during = m.transmit(12.0, "t", "down", MB)  # sent in an outage: waits for the link
    assert during.end == pytest.approx(14.0)
    after = m.transmit(20.0, "t", "up", MB)
    assert after.end == pytest.approx(21.0)
    unlimited = Medium(cfg(rate=None, outages=((0.0, 2.0),)))
    unlimited.start_outages(5.0)
    assert unlimited.transmit(6.0, "s", "up", MB).end == pytest.approx(7.0)


def test_outages_are_checked_in_the_spec():
    spec = NetworkSpec.model_validate({"profile": "low-bitrate", "outages": [{"atS": 2, "forS": 3}]})
    assert resolve_network(spec).outages == ((2.0, 5.0),)
    with pytest.raises(ValueError, match="not overlap"):
        NetworkSpec.model_validate({"profile": "wifi6", "outages": [{"atS": 2, "forS": 3}, {"atS": 4, "forS": 1}]})
    with pytest.raises(SpecError, match="no emulated link"):
        resolve_network(NetworkSpec.model_validate({"profile": "unconstrained", "outages": [{"atS": 1, "forS": 1}]}))


def test_profiles_resolve_and_override(tmp_path):
    wifi = resolve_network(NetworkSpec(profile="wifi6"))
    assert wifi.medium == "shared" and wifi.up.rate_bps == 1201e6 and wifi.up.delay_s == pytest.approx(0.002)
    assert not resolve_network(NetworkSpec(profile="unconstrained")).emulated
    slower = resolve_network(NetworkSpec(profile="wifi6", uplink={"rateMbit": 50}))
    assert slower.up.rate_bps == 50e6 and slower.down.rate_bps == 1201e6 and slower.medium == "shared"
    with pytest.raises(ValueError, match="unknown profile 'nope'"):  # the spec checks the registry
        NetworkSpec(profile="nope")
    with pytest.raises(SpecError, match="unknown profile 'nope'"):  # and so does resolving, for specs built unchecked
        resolve_network(NetworkSpec.model_construct(profile="nope"))
    for name in ("ethernet-1g", "ethernet-100m", "wifi6", "wifi4", "lte", "low-bitrate"):
        assert resolve_network(NetworkSpec(profile=name)).emulated


def test_trace_files(tmp_path, monkeypatch):
    assert load_trace("wifi-fading.trace")[0] == (0.0, 600e6)
    bad = tmp_path / "bad.trace"
    bad.write_text("0 10\n5 secret-content\n")
    with pytest.raises(SpecError, match="is not a file in") as err:  # outside the allowed folders: not read
        load_trace(bad)
    assert "secret" not in str(err.value)
    with pytest.raises(SpecError, match="is not a file in"):
        load_trace("/etc/passwd")
    with pytest.raises(SpecError, match="is not a file in"):
        load_trace("../../../../etc/passwd")
    (tmp_path / "escape.trace").symlink_to("/etc/hostname")
    monkeypatch.setenv("SPLITBENCH_TRACE_DIR", str(tmp_path))  # what --trace-dir sets
    with pytest.raises(SpecError, match="is not a file in"):
        load_trace(tmp_path / "escape.trace")  # a link out of the named folder stays outside
    with pytest.raises(SpecError, match="bad.trace:2: expected 'time_s Mbit/s'") as err:
        load_trace(bad)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)
    bad.write_text("1 10\n")
    with pytest.raises(SpecError, match="first point must be at time 0"):
        load_trace("bad.trace")
