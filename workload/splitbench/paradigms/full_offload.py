"""Full offload: sources send raw inputs and labels; the server trains the whole model and
answers with the loss only (an ack) - never an input gradient.

How inputs travel is the spec's inputEncoding: uint8 pixels as captured (1 byte per pixel
value) or normalized float32 (4 bytes). It decides which paradigm wins on bytes.
"""
from __future__ import annotations

import time

import torch

from ..transport import Kind, Message, Traffic
from .base import Paradigm, ServerWorker, SourceWorker, StepOutcome, \
    evaluation_reply, label_dtype, make_optimizer, train_on_server, whole_model


class FullOffloadSource(SourceWorker):
    def __init__(self, paradigm: "FullOffload", call):
        self.p, self.call = paradigm, call

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.p.setup.spec.paradigm.input_encoding == "uint8":
            return x
        return self.p.setup.meta.normalize(x)

    def train_step(self, x, y, epoch, step):
        t0 = time.perf_counter()
        msg = Message(Kind.TRAIN, epoch=epoch, step=step)
        msg.add("x", self._inputs(x), Traffic.INPUT)
        msg.add("y", y.to(label_dtype(self.p.setup.meta.num_classes)), Traffic.LABEL)
        encode_s = time.perf_counter() - t0
        reply, _, _ = self.call(msg)
        return StepOutcome(float("nan"), 0, len(y), {"encode": encode_s})

    def eval_batch(self, x, y, epoch):
        msg = Message(Kind.EVAL, epoch=epoch)
        msg.add("x", self._inputs(x), Traffic.EVAL).add("y", y.to(label_dtype(self.p.setup.meta.num_classes)),
                                                        Traffic.EVAL)
        reply, _, _ = self.call(msg)
        loss_sum, correct = reply.tensors["result"].tolist()
        return loss_sum, int(correct)


class FullOffloadServer(ServerWorker):
    def __init__(self, paradigm: "FullOffload"):
        self.p = paradigm
        self.model = whole_model(paradigm.setup)
        self.opt = make_optimizer(self.model.parameters(), paradigm.setup.spec.training)

    def _x(self, msg: Message) -> torch.Tensor:
        x = msg.tensors["x"]
        return self.p.setup.meta.normalize(x) if x.dtype == torch.uint8 else x

    def train(self, msg):
        return train_on_server(self.model, self.opt, self._x(msg), msg.tensors["y"].long(), Message(Kind.TRAIN_REPLY))

    def evaluate(self, msg):
        return evaluation_reply(self.model, self._x(msg), msg.tensors["y"].long())


class FullOffload(Paradigm):
    name = "full_offload"
    evaluators = "first"  # one model, on the server

    def source(self, call, send=None):
        return FullOffloadSource(self, call)

    def server(self):
        return FullOffloadServer(self)
