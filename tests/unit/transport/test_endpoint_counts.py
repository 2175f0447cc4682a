"""An endpoint counts messages per layout and turns them into bytes when read: the totals must
be exactly the per-message bytes summed, however many layouts came and whatever was refused."""

from collections import Counter

import pytest
import torch
import zmq

from splitbench.transport import Endpoint, Kind, Message, Traffic, WireError
from splitbench.transport import endpoint as endpoint_module
from splitbench.transport.wire import encode, frame_len, wire_bytes, zmtp_overhead


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a = Endpoint(ctx, zmq.DEALER, "inproc://counts", bind=True)
    b = Endpoint(ctx, zmq.DEALER, "inproc://counts", bind=False)
    yield a, b
    ctx.destroy(linger=0)


def _message(i: int) -> Message:
    return (
        Message(Kind.TRAIN, "exp", "source-0", 0, i)
        .add("act", torch.ones(1 + i % 7, 3), Traffic.ACTIVATION)
        .add("y", torch.zeros(1 + i % 7, dtype=torch.int64), Traffic.LABEL)
    )


def test_totals_are_the_messages_bytes_summed_across_many_layouts(pair, monkeypatch):
    monkeypatch.setattr(endpoint_module, "_TALLY_MAX", 3)  # 7 layouts: folded into totals twice
    a, b = pair
    want: Counter = Counter()
    framing = 0
    for i in range(40):
        msg = _message(i)
        frames = encode(msg)
        want.update(wire_bytes(frames, msg))
        framing += sum(frame_len(f) + zmtp_overhead(frame_len(f)) for f in frames)
        returned = a.send(msg)
        assert dict(returned) == wire_bytes(frames, msg)
        b.recv(5)
    assert a.tx == want and b.rx == want
    assert a.rx == Counter() and b.tx == Counter()
    assert a.transport == Counter({"tx": framing}) and b.transport == Counter({"rx": framing})
    assert len(a._tally) <= 3


def test_a_refused_message_counts_on_the_wire_only(pair):
    a, b = pair
    a.sock.send_multipart([b"not a header", b"x" * 10])
    with pytest.raises(WireError):
        b.recv(5)
    assert b.rx == Counter()
    assert b.transport["rx"] == 12 + 2 + 10 + 2  # both frames and their ZMTP framing
    a.send(_message(0))
    b.recv(5)
    assert b.rx == a.tx and b.transport["rx"] == 26 + a.transport["tx"]


def test_a_read_is_a_copy(pair):
    a, b = pair
    a.send(_message(1))
    before = a.tx
    before[Traffic.ACTIVATION] += 10**6
    assert a.tx[Traffic.ACTIVATION] < 10**6
