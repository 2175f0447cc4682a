"""Hierarchical federated split learning (HFSL paper, sec. 3.3, algorithms 1-3).

Low device k (source-k) holds W_l, runs its forward pass and sends the smashed data with
labels to medium device k (server-k), which holds W_m, computes the loss, backpropagates
and returns the gradient at the cut; the low device finishes backpropagation (alg. 1-2).
After every round (localEpochs of this), every low device sends W_l and every medium
device W_m to the high device (the aggregator), which averages each partition over its
devices weighted by n_k / n and sends it back (alg. 3). Medium devices serve their low
devices in parallel: each is its own process with its own CPU quota.

Which round is over is said by the low device: its last training message of a round
carries a one-byte `round_end` flag, so the medium device needs no count of its own.
Each round starts from the averaged partitions with a fresh optimizer [ours].

Dynamic splitting (sec. 3.2, paradigm.candidates): with its weights every device reports
its remaining computational power for the next round, a = free share x ETOPS (its load
schedule and its profile's gflops); the aggregator's Q-learning agent picks the cut, and
its reply carries the partition at that cut. A device whose cut moved rebuilds its part
of the model from the averaged weights.
"""

from __future__ import annotations

import torch

from ..models import split
from ..transport import Message, Traffic
from .base import Paradigm, make_optimizer, whole_model
from .federated import exchange, load_flat, round_ends
from .split import SplitServer, SplitSource


def _adopt(p: "Hfsl", reply: Message, partition: str, low_side: bool, current):
    """The averaged partition from the reply, at the cut the reply names (a new module when
    the cut moved); returns (module, cut)."""
    cut = int(reply.tensors["cut"][0]) if "cut" in reply.tensors else p.cut
    module = current
    if cut != p.cut:
        low, medium = split(whole_model(p.setup), cut)
        module = low if low_side else medium
    load_flat(module, reply.tensors[f"w_{partition}"])
    return module, cut


class HfslLow(SplitSource):
    def __init__(self, paradigm: "Hfsl", call, aggregate):
        super().__init__(paradigm, call)
        self.aggregate = aggregate
        self.samples = 0
        self._epoch = 0

    def train_step(self, x, y, epoch, step, ids=None):
        self._epoch, self._step = epoch, step
        out = super().train_step(x, y, epoch, step, ids)
        self.samples += len(y)
        return out

    def annotate(self, msg: Message) -> None:
        setup = self.p.setup
        last_of_epoch = (self._step + 1) % setup.steps_per_epoch == 0
        if last_of_epoch and round_ends(setup, self._epoch):
            msg.add("round_end", torch.ones(1, dtype=torch.uint8), Traffic.CONTROL)

    def after_epoch(self, epoch):
        if not round_ends(self.p.setup, epoch):
            return None
        phases, self.edge, self.opt = self.p.trade(self.aggregate, self.edge, "low", self.samples, epoch)
        self.samples = 0
        return phases

    def tags(self, epoch):
        return {"split_after": self.p.cut}


class HfslMedium(SplitServer):
    def __init__(self, paradigm: "Hfsl", aggregate):
        super().__init__(paradigm)
        self.p, self.aggregate = paradigm, aggregate
        self.samples = 0

    def train(self, msg):
        out = super().train(msg)
        self.samples += len(msg.tensors["y"])
        return out

    def after_train(self, msg):
        if "round_end" not in msg.tensors:
            return None
        phases, self.part, self.opt = self.p.trade(self.aggregate, self.part, "medium", self.samples, msg.epoch)
        self.samples = 0
        return phases

    def tags(self, epoch):
        return {"split_after": self.p.cut}


class Hfsl(Paradigm):
    name = "hfsl"
    evaluators = "first"
    aggregates = ("low", "medium")

    def __init__(self, setup):
        super().__init__(setup)
        self.cut = setup.spec.paradigm.split_after  # where the model is cut now
        self.power_of = None  # round -> this device's remaining GFLOPS, set by its role

    def trade(self, aggregate, module, partition: str, samples: int, epoch: int):
        """One round's exchange of a partition: (phases, the partition to train next, a fresh
        optimizer for it); the cut follows the aggregator's reply."""
        round_ = epoch // self.setup.spec.paradigm.local_epochs
        phases, reply = exchange(aggregate, module, partition, samples, round_, self.power(round_ + 1))
        module, self.cut = _adopt(self, reply, partition, partition == "low", module)
        return phases, module, make_optimizer(module.parameters(), self.setup.spec.training)

    def power(self, round_: int) -> float | None:
        """This device's remaining computational power for a round, when the split may move."""
        if not self.setup.spec.paradigm.candidates:
            return None
        if self.power_of is None:
            raise ValueError("hfsl candidates: the device's role did not say how to measure its power")
        return self.power_of(round_)

    def edge_blocks(self) -> int:
        return self.cut

    def source(self, call, send=None, aggregate=None):
        if aggregate is None:
            raise ValueError("hfsl needs a link to the aggregator (the high-computational device)")
        return HfslLow(self, call, aggregate)

    def server(self, aggregate=None):
        if aggregate is None:
            raise ValueError("hfsl needs a link to the aggregator (the high-computational device)")
        return HfslMedium(self, aggregate)
