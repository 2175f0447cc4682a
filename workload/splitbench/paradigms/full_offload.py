"""Full offload: sources send raw inputs and labels; the server trains the whole model and
never sends an input gradient.

delivery (spec): `acknowledged` - the server answers every batch with its loss and the source
waits for it; `stream` - the source sends and goes on with its next batch, and nothing comes
back during training, as the early-exit paper's full-cloud baseline (and early exit itself)
works. ZeroMQ queues what the link has not carried yet.

How inputs travel is the spec's inputEncoding: uint8 pixels as captured (1 byte per pixel
value) or normalized float32 (4 bytes). It decides which paradigm wins on bytes.
"""

from __future__ import annotations

import time

import torch

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


class FullOffloadSource(SourceWorker):
    def __init__(self, paradigm: "FullOffload", call, send=None):
        self.p, self.call, self.send = paradigm, call, send
        self.stream = paradigm.setup.spec.paradigm.delivery == "stream"
        if self.stream and send is None:
            raise ValueError("full_offload with delivery stream needs a send-only link")
        self.cache = paradigm.setup.spec.paradigm.cache_inputs
        self.sent: set[int] = set()  # samples the server holds (cacheInputs)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.p.setup.spec.paradigm.input_encoding == "uint8":
            return x
        return self.p.setup.meta.normalize(x)

    def train_step(self, x, y, epoch, step, ids=None):
        t0 = time.perf_counter()
        msg = Message(Kind.TRAIN, epoch=epoch, step=step)
        new = torch.ones(len(y), dtype=torch.bool)
        if self.cache:
            if ids is None:
                raise ValueError("cacheInputs needs the samples' ids")
            new = torch.tensor([int(i) not in self.sent for i in ids], dtype=torch.bool)
            msg.add("ids", ids.to(torch.int32), Traffic.INPUT)  # a reference to the input, as input bytes
        if bool(new.any()):
            msg.add("x", self._inputs(x[new]), Traffic.INPUT)
            msg.add("y", y[new].to(label_dtype(self.p.setup.meta.num_classes)), Traffic.LABEL)
        encode_s = time.perf_counter() - t0
        if self.stream:
            self.send(msg)
        else:
            self.call(msg)
        if self.cache:
            self.sent.update(int(i) for i in ids)
        return StepOutcome(float("nan"), 0, len(y), {"encode": encode_s})

    def eval_batch(self, x, y, epoch):
        msg = Message(Kind.EVAL, epoch=epoch)
        msg.add("x", self._inputs(x), Traffic.EVAL).add(
            "y", y.to(label_dtype(self.p.setup.meta.num_classes)), Traffic.EVAL
        )
        return ask_evaluation(self.call, msg)


class FullOffloadServer(ServerWorker):
    def __init__(self, paradigm: "FullOffload"):
        self.p = paradigm
        self.model = whole_model(paradigm.setup)
        self.opt = make_optimizer(self.model.parameters(), paradigm.setup.spec.training)
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # sample id -> (input, label)

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.p.setup.meta.normalize(x) if x.dtype == torch.uint8 else x

    def _batch(self, msg: Message) -> tuple[torch.Tensor, torch.Tensor]:
        if "ids" not in msg.tensors:
            return self._normalized(msg.tensors["x"]), msg.tensors["y"].long()
        ids = msg.tensors["ids"].tolist()
        new = [i for i in ids if i not in self.cache]
        x, y = msg.tensors.get("x"), msg.tensors.get("y")
        if len(new) != (0 if x is None else len(x)) or (x is not None and (y is None or len(y) != len(x))):
            raise ValueError(f"{len(new)} samples are new to the server but {0 if x is None else len(x)} inputs came")
        for k, i in enumerate(new):  # copies: the received frames are not kept
            self.cache[i] = (x[k].clone(), y[k].clone())
        return (
            self._normalized(torch.stack([self.cache[i][0] for i in ids])),
            torch.stack([self.cache[i][1] for i in ids]).long(),
        )

    def train(self, msg):
        x, y = self._batch(msg)
        follow_schedule(self.opt, self.p.setup.spec.training, msg.epoch)
        outcome = train_on_server(self.model, self.opt, x, y, Message(Kind.TRAIN_REPLY))
        if self.p.setup.spec.paradigm.delivery == "stream":
            outcome.reply = None  # the source is not waiting
        return outcome

    def evaluate(self, msg):
        return evaluation_reply(self.model, self._normalized(msg.tensors["x"]), msg.tensors["y"].long())


class FullOffload(Paradigm):
    name = "full_offload"
    evaluators = "first"  # one model, on the server

    def source(self, call, send=None, aggregate=None):
        return FullOffloadSource(self, call, send)

    def server(self, aggregate=None):
        return FullOffloadServer(self)
