"""Split learning: each source runs the first blocks and sends the cut activations with
labels; the server runs the rest, backpropagates and returns the gradient at the cut; the
source finishes backpropagation and steps its optimizer.

Each source keeps its own edge part; the server part is shared and serves requests in
arrival order (split learning with several clients and one server model).
"""

from __future__ import annotations

import time

import torch

from ..models import split
from ..transport import Kind, Message, Traffic
from .base import (
    Paradigm,
    ServerWorker,
    SourceWorker,
    StepOutcome,
    ask_evaluation,
    evaluation_reply,
    label_dtype,
    follow_schedule,
    make_optimizer,
    train_on_server,
    whole_model,
)


class SplitSource(SourceWorker):
    def __init__(self, paradigm: "Split", call):
        self.p, self.call = paradigm, call
        self.edge, _ = split(whole_model(paradigm.setup), paradigm.edge_blocks())
        self.opt = make_optimizer(self.edge.parameters(), paradigm.setup.spec.training)
        self.ydtype = label_dtype(paradigm.setup.meta.num_classes)

    def train_step(self, x, y, epoch, step, ids=None):
        follow_schedule(self.opt, self.p.setup.spec.training, epoch)
        t0 = time.perf_counter()
        act = self.edge(self.p.setup.meta.normalize(x))
        t1 = time.perf_counter()
        msg = Message(Kind.TRAIN, epoch=epoch, step=step)
        msg.add("act", act.detach(), Traffic.ACTIVATION).add("y", y.to(self.ydtype), Traffic.LABEL)
        self.annotate(msg)
        reply, _, _ = self.call(msg)
        grad = reply.tensors["grad"]
        if grad.shape != act.shape:
            raise ValueError(f"server sent a gradient of shape {list(grad.shape)} for activations {list(act.shape)}")
        t2 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        act.backward(grad)
        self.opt.step()
        t3 = time.perf_counter()
        return StepOutcome(float("nan"), 0, len(y), {"edge_forward": t1 - t0, "edge_backward": t3 - t2})

    def annotate(self, msg: Message) -> None:
        """Room for what a variant adds to a training message (hfsl: the end of a round)."""

    def eval_batch(self, x, y, epoch):
        self.edge.eval()
        with torch.no_grad():
            act = self.edge(self.p.setup.meta.normalize(x))
        self.edge.train()
        msg = Message(Kind.EVAL, epoch=epoch).add("act", act, Traffic.EVAL).add("y", y.to(self.ydtype), Traffic.EVAL)
        return ask_evaluation(self.call, msg)


class SplitServer(ServerWorker):
    def __init__(self, paradigm: "Split"):
        _, self.part = split(whole_model(paradigm.setup), paradigm.edge_blocks())
        self.training = paradigm.setup.spec.training
        self.opt = make_optimizer(self.part.parameters(), self.training)

    def train(self, msg):
        follow_schedule(self.opt, self.training, msg.epoch)
        act = msg.tensors["act"].requires_grad_()
        reply = Message(Kind.TRAIN_REPLY)
        outcome = train_on_server(self.part, self.opt, act, msg.tensors["y"].long(), reply)
        reply.add("grad", act.grad, Traffic.GRADIENT)  # filled by the backward pass above
        return outcome

    def evaluate(self, msg):
        return evaluation_reply(self.part, msg.tensors["act"], msg.tensors["y"].long())


class Split(Paradigm):
    name = "split"

    def edge_blocks(self) -> int:
        return self.setup.spec.paradigm.split_after

    def source(self, call, send=None, aggregate=None):
        return SplitSource(self, call)

    def server(self, aggregate=None):
        return SplitServer(self)
