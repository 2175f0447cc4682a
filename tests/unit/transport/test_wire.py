import random
import struct

import pytest
import torch

from splitbench.transport.wire import (
    Kind,
    experiment_id,
    Message,
    Traffic,
    WireError,
    decode,
    encode,
    error_message,
    wire_bytes,
    zmtp_overhead,
)

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
]


def _frames(msg):
    return [bytes(f) for f in encode(msg)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(dtype):
    t = (torch.randn(3, 5, 2) * 10).to(dtype)
    msg = Message(Kind.TRAIN, experiment_id("exp").hex(), "source-1", 2, 99).add("t", t, Traffic.ACTIVATION)
    back = decode(_frames(msg))
    assert (back.kind, back.experiment, back.sender, back.epoch, back.step) == (
        Kind.TRAIN,
        experiment_id("exp").hex(),
        "source-1",
        2,
        99,
    )
    assert back.tensors["t"].dtype == dtype and torch.equal(back.tensors["t"], t)
    assert back.traffic["t"] is Traffic.ACTIVATION


def test_scalars_empty_and_noncontiguous_tensors():
    base = torch.arange(12.0).reshape(3, 4)
    msg = (
        Message(Kind.TRAIN_REPLY)
        .add("s", torch.tensor(3.5, dtype=torch.float64), Traffic.CONTROL)
        .add("e", torch.empty(0, 7), Traffic.GRADIENT)
        .add("nc", base.t(), Traffic.GRADIENT)
    )
    back = decode(_frames(msg))
    assert back.tensors["s"].item() == 3.5 and back.tensors["s"].shape == ()
    assert back.tensors["e"].shape == (0, 7)
    assert torch.equal(back.tensors["nc"], base.t())


def test_byte_count_is_exact_and_deterministic():
    act = torch.zeros(32, 64, 7, 7)
    y = torch.zeros(32, dtype=torch.uint8)
    frames = encode(
        Message(Kind.TRAIN, "e", "source-0", 0, 1).add("act", act, Traffic.ACTIVATION).add("y", y, Traffic.LABEL)
    )
    counts = wire_bytes(frames, decode([bytes(f) for f in frames]))
    assert counts[Traffic.ACTIVATION] == 32 * 64 * 7 * 7 * 4
    assert counts[Traffic.LABEL] == 32
    header = len(bytes(frames[0]))
    assert counts[Traffic.CONTROL] == header + zmtp_overhead(header) + zmtp_overhead(act.numel() * 4) + zmtp_overhead(
        32
    )
    # a later step or epoch number costs the same bytes: headers are fixed-width
    frames2 = encode(
        Message(Kind.TRAIN, "e", "source-0", 7, 123456).add("act", act, Traffic.ACTIVATION).add("y", y, Traffic.LABEL)
    )
    assert len(bytes(frames2[0])) == header


def test_eval_messages_are_accounted_apart():
    frames = encode(Message(Kind.EVAL).add("act", torch.zeros(4, 4), Traffic.ACTIVATION))
    counts = wire_bytes(frames, decode([bytes(f) for f in frames]))
    assert set(counts) == {Traffic.EVAL}


def test_error_message_carries_text():
    msg = decode(_frames(error_message("no such tensor 'act'")))
    assert msg.kind is Kind.ERROR and msg.error_text() == "no such tensor 'act'"


@pytest.mark.parametrize(
    "frames, match",
    [
        ([], "empty message"),
        ([b"SB"], "shorter than the fixed"),
        ([b"XX" + bytes(33)], "bad magic"),
        ([b"SB\x09" + bytes(32)], "protocol version 9"),
        ([b"SB\x02\x63" + bytes(31)], "unknown message kind 99"),
    ],
)
def test_bad_headers_are_named(frames, match):
    with pytest.raises(WireError, match=match):
        decode(frames)


def test_frame_count_and_size_mismatches():
    good = _frames(Message(Kind.TRAIN).add("a", torch.zeros(2, 3), Traffic.ACTIVATION))
    with pytest.raises(WireError, match="declares 1 tensors but 0 data frames"):
        decode(good[:1])
    with pytest.raises(WireError, match="header says 24 bytes, frame has 20"):
        decode([good[0], good[1][:20]])
    # a header whose shape and byte count disagree
    h = bytearray(good[0])
    struct.pack_into("<Q", h, len(h) - 8 - 1 - 4 - 4, 25)  # nbytes field of the only tensor
    with pytest.raises(WireError, match="is not 25 bytes"):
        decode([bytes(h), good[1]])
    with pytest.raises(WireError, match="trailing bytes"):
        decode([good[0] + b"zz", good[1]])


def test_random_and_truncated_frames_only_ever_raise_wire_error():
    rng = random.Random(1234)
    good = _frames(
        Message(Kind.TRAIN, "exp", "s", 1, 2)
        .add("a", torch.randn(4, 4), Traffic.ACTIVATION)
        .add("y", torch.zeros(4, dtype=torch.uint8), Traffic.LABEL)
    )
    cases = 0
    for _ in range(2000):  # bounded fuzz: flips, truncations and random frames
        frames = [bytearray(f) for f in good]
        choice = rng.random()
        if choice < 0.4:
            f = rng.randrange(len(frames))
            if frames[f]:
                frames[f][rng.randrange(len(frames[f]))] = rng.randrange(256)
        elif choice < 0.7:
            f = rng.randrange(len(frames))
            frames[f] = frames[f][: rng.randrange(len(frames[f]) + 1)]
        else:
            frames = [bytearray(rng.randbytes(rng.randrange(64))) for _ in range(rng.randrange(4))]
        try:
            decode([bytes(f) for f in frames])
        except WireError:
            cases += 1
    assert cases > 500  # most mutations must be caught; the rest decoded to valid messages
