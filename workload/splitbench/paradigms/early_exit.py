"""Hierarchical training with an early exit (Sepehri et al., TNNLS 2024). The full paper was
not available; ../shared/papers/hierarchical-training-early-exit-method.md tags what is the
paper's, inferred, or ours, and so do the comments here.

Edge (source): its blocks plus an early-exit head; it trains both on the early-exit loss
alone [inferred]. Per step it sends the features at the cut and the labels [paper/inferred],
without waiting: it runs its backward pass while they upload [paper], and goes on with its
next batch. Cloud (server): the remaining blocks and the final exit, trained on the
received features as leaves [inferred]. Nothing comes back during training [paper].

The early-exit head is ours (the paper's is not known): a 3x3 conv with batch norm and ReLU
at the cut's width, global average pooling and one linear layer.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..models import split
from ..transport import Kind, Message, Traffic
from .base import (
    Paradigm,
    ServerOutcome,
    ServerWorker,
    SourceWorker,
    StepOutcome,
    ask_evaluation,
    correct_count,
    evaluation_reply,
    follow_schedule,
    label_dtype,
    make_optimizer,
    train_on_server,
    whole_model,
)
from .compressed_split import cut_shape


def early_exit_head(channels: int, num_classes: int) -> nn.Sequential:
    """[ours] BranchyNet-like: conv3x3-BN-ReLU, global average pooling, linear."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


class EarlyExitSource(SourceWorker):
    def __init__(self, paradigm: "EarlyExit", call, send):
        if send is None:
            raise ValueError("early_exit needs a send-only link: the edge never waits for the cloud")
        setup = paradigm.setup
        self.setup, self.call, self.send = setup, call, send
        self.edge, _ = split(whole_model(setup), paradigm.edge_blocks())
        channels, _, _ = cut_shape(setup, self.edge)
        torch.manual_seed(setup.spec.seed + 1)
        self.head = early_exit_head(channels, setup.meta.num_classes)
        self.opt = make_optimizer([*self.edge.parameters(), *self.head.parameters()], setup.spec.training)
        self.ydtype = label_dtype(setup.meta.num_classes)

    def train_step(self, x, y, epoch, step, ids=None):
        follow_schedule(self.opt, self.setup.spec.training, epoch)
        t0 = time.perf_counter()
        feats = self.edge(self.setup.meta.normalize(x))
        logits = self.head(feats)
        loss = F.cross_entropy(logits, y)
        t1 = time.perf_counter()
        msg = Message(Kind.TRAIN, epoch=epoch, step=step)
        self.send(msg.add("act", feats.detach(), Traffic.ACTIVATION).add("y", y.to(self.ydtype), Traffic.LABEL))
        t2 = time.perf_counter()  # the upload goes on in ZeroMQ's I/O thread during the backward pass
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        t3 = time.perf_counter()
        return StepOutcome(
            float(loss.detach()),
            correct_count(logits, y),
            len(y),
            {"edge_forward": t1 - t0, "send": t2 - t1, "edge_backward": t3 - t2},
        )

    def _features(self, x):
        self.edge.eval()
        self.head.eval()
        with torch.no_grad():
            feats = self.edge(self.setup.meta.normalize(x))
            logits = self.head(feats)
        self.edge.train()
        self.head.train()
        return feats, logits

    def eval_batch(self, x, y, epoch):
        """The final exit: features to the cloud, which answers (evaluation only)."""
        feats, _ = self._features(x)
        msg = Message(Kind.EVAL, epoch=epoch).add("act", feats, Traffic.EVAL).add("y", y.to(self.ydtype), Traffic.EVAL)
        return ask_evaluation(self.call, msg)

    def eval_local(self, x, y):
        """The early exit, on the edge alone."""
        _, logits = self._features(x)
        return float(F.cross_entropy(logits, y, reduction="sum")), correct_count(logits, y)

    def tags(self, epoch):
        return {"loss_exit": "early"}  # the loss a source records is its early-exit loss


class EarlyExitServer(ServerWorker):
    def __init__(self, paradigm: "EarlyExit"):
        _, self.part = split(whole_model(paradigm.setup), paradigm.edge_blocks())
        self.training = paradigm.setup.spec.training
        self.opt = make_optimizer(self.part.parameters(), self.training)

    def train(self, msg) -> ServerOutcome:
        follow_schedule(self.opt, self.training, msg.epoch)
        outcome = train_on_server(self.part, self.opt, msg.tensors["act"], msg.tensors["y"].long())
        outcome.reply = None  # no gradient, no ack: the edge is not waiting
        return outcome

    def evaluate(self, msg):
        return evaluation_reply(self.part, msg.tensors["act"], msg.tensors["y"].long())


class EarlyExit(Paradigm):
    name = "early_exit"

    def edge_blocks(self) -> int:
        return self.setup.spec.paradigm.split_after

    def source(self, call, send=None, aggregate=None):
        return EarlyExitSource(self, call, send)

    def server(self, aggregate=None):
        return EarlyExitServer(self)
