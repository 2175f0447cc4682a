"""Which tensors an endpoint copies into ZeroMQ's message and which it lends zero-copy
(endpoint.COPY_BELOW): below the threshold the sender's tensor is free to change the moment
send() returns; above it ZeroMQ reads the tensor's own memory until the message is gone."""

import torch
import zmq

from splitbench.transport import Endpoint, Kind, Message, Traffic
from splitbench.transport.endpoint import COPY_BELOW


def _sent_then_overwritten(numel: int) -> torch.Tensor:
    """Send a tensor of ones over inproc (where a zero-copy frame reaches the receiver as the very
    same memory), overwrite it with zeros, and return what arrived."""
    ctx = zmq.Context()
    try:
        a = Endpoint(ctx, zmq.DEALER, "inproc://copies", bind=True)
        b = Endpoint(ctx, zmq.DEALER, "inproc://copies", bind=False)
        act = torch.ones(numel)
        a.send(Message(Kind.TRAIN, "exp", "source-0").add("act", act, Traffic.ACTIVATION))
        act.zero_()
        return b.recv(5)[1].tensors["act"].clone()
    finally:
        ctx.destroy(linger=0)


def test_a_tensor_below_the_threshold_is_copied_at_send():
    # 256 KiB: above pyzmq's own 64 KiB default, so this fails if the endpoint's threshold is lost
    numel = (256 << 10) // 4
    assert numel * 4 < COPY_BELOW
    assert bool((_sent_then_overwritten(numel) == 1).all())


def test_a_tensor_above_the_threshold_is_lent_zero_copy():
    numel = 2 * COPY_BELOW // 4
    assert bool((_sent_then_overwritten(numel) == 0).all())
