"""FedAvg (McMahan et al., 2017): each source trains the whole model on its own data for
localEpochs; then every source sends its weights to the aggregator, which averages them
weighted by sample count and sends the average back (bytes: weights up and down, once per
round). Sources start every round from the global model with a fresh optimizer [ours: the
survey and the HFSL paper do not say what happens to momentum between rounds]."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .base import Paradigm, SourceWorker, StepOutcome, correct_count, follow_schedule, make_optimizer, whole_model
from .federated import exchange, load_flat, round_ends


class FedAvgSource(SourceWorker):
    def __init__(self, paradigm: "FedAvg", aggregate):
        self.setup, self.aggregate = paradigm.setup, aggregate
        self.model = whole_model(paradigm.setup)
        self.opt = make_optimizer(self.model.parameters(), self.setup.spec.training)
        self.samples = 0  # trained on since the last aggregation: this source's n_k

    def train_step(self, x, y, epoch, step, ids=None):
        follow_schedule(self.opt, self.setup.spec.training, epoch)
        t0 = time.perf_counter()
        out = self.model(self.setup.meta.normalize(x))
        loss = F.cross_entropy(out, y)
        t1 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.samples += len(y)
        return StepOutcome(
            float(loss.detach()),
            correct_count(out, y),
            len(y),
            {"forward": t1 - t0, "backward": time.perf_counter() - t1},
        )

    def after_epoch(self, epoch):
        if not round_ends(self.setup, epoch):
            return None
        phases, reply = exchange(
            self.aggregate, self.model, "whole", self.samples, epoch // self.setup.spec.paradigm.local_epochs
        )
        load_flat(self.model, reply.tensors["w_whole"])
        self.samples = 0
        self.opt = make_optimizer(self.model.parameters(), self.setup.spec.training)
        return phases

    def eval_batch(self, x, y, epoch):
        """The global model, on this source (no bytes: every source holds it after a round)."""
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.setup.meta.normalize(x))
        self.model.train()
        return float(F.cross_entropy(out, y, reduction="sum")), correct_count(out, y)


class FedAvg(Paradigm):
    name = "fedavg"
    evaluators = "first"
    aggregates = ("whole",)

    def source(self, call, send=None, aggregate=None):
        return FedAvgSource(self, aggregate or call)

    def server(self, aggregate=None):
        raise NotImplementedError("fedavg has no server: sources talk to the aggregator")
