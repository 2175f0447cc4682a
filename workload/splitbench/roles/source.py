"""A data source: holds its partition, runs the paradigm's edge work, talks to the server
and/or the aggregator (through the link emulator when there is one) and records every
step, every round's weight exchange, and every evaluation."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import torch

from ..checkpoint import Checkpointer, worker_state
from ..data import DatasetMissing, load_dataset
from ..paradigms import Setup, get_paradigm
from ..record import byte_fields, last_step
from ..roleplan import role_name
from ..schedule import batches, evaluation_due, source_indices, steps_per_epoch, test_subset
from ..transport import Kind, Message, Traffic
from .peer import PeerLink
from .runtime import RoleFailed, Runtime

EVAL_BATCH = 256
# The sources of a group (roles/source_group.py) build their workers in threads of one process:
# seeding torch's one generator and drawing a model's initial weights must not interleave, or a
# source starts from other weights than its server's (and than a lone source's).
_BUILD = threading.Lock()


class Source:
    """One data source. Its one entry point is run(); setup() loads the partition and
    connects, train() runs every epoch, finish() says goodbye and records the session bytes."""

    def __init__(self, args, group=None):
        self.args, self.index = args, args.index
        # in a source group (roles/source_group.py) the group holds the data and the CPU quota
        self.rt = Runtime(args, "source", role_name("source", args.index), group=group)
        self.spec = self.rt.spec

    def run(self) -> int:
        return self.rt.run(self.body)

    def body(self) -> None:
        self.setup()
        self.train()
        self.finish()

    def setup(self) -> None:
        rt, spec, index, args = self.rt, self.spec, self.index, self.args
        if not 0 <= index < spec.sources.replicas:
            raise RoleFailed(f"source index {index} outside 0..{spec.sources.replicas - 1}", code=2)
        try:
            self.data = rt.group.data if rt.group else load_dataset(spec.dataset, spec.seed)
        except DatasetMissing as err:
            raise RoleFailed(str(err), code=2) from None
        self.mine = source_indices(spec, self.data)[index]
        try:
            self.steps = steps_per_epoch(len(self.mine), spec)
        except ValueError as err:
            raise RoleFailed(f"{rt.instance}: {err}", code=2) from None
        paradigm = get_paradigm(
            Setup(rt.experiment, self.data.meta, rt.run_dir, rt.instance, steps_per_epoch=self.steps)
        )
        rt.limit(rt.plan.device("source"))
        self.load = spec.sources.device.load
        rt.load_for_round(self.load, 0)
        if hasattr(paradigm, "power_of"):
            paradigm.power_of = rt.power_meter(self.load)
        # the primary peer: the server, or the aggregator itself where there is no server
        self.link = PeerLink(rt, args.connect, "server" if paradigm.uses_server else "aggregator")
        self.links = [self.link]
        if paradigm.aggregates and paradigm.uses_server:
            if not args.aggregator:
                raise RoleFailed(f"{paradigm.name} needs --aggregator (the aggregator's address)", code=2)
            self.links.append(PeerLink(rt, args.aggregator, "aggregator", second=True))
        aggregate = self.links[-1].call if paradigm.aggregates else None
        hello = Message(Kind.HELLO).add("samples", torch.tensor([len(self.mine)], dtype=torch.int64), Traffic.CONTROL)
        for peer in self.links:
            peer.call(hello)
        with _BUILD:
            self.worker = paradigm.source(self.link.call, send=self.link.send, aggregate=aggregate)
        self.evaluates = paradigm.evaluators == "all" or index == 0
        self.test_x, self.test_y = test_subset(spec, self.data)
        rt.log.write(
            "plan",
            planned_steps=self.steps * spec.training.epochs,
            samples=len(self.mine),
            epochs=spec.training.epochs,
            edge_blocks=paradigm.edge_blocks(),
            **rt.group_fields(),
        )
        self.start_tx, self.start_rx = self.moved()  # HELLO/WELCOME so far
        self.ckpt = Checkpointer(rt, spec.checkpoint.every)
        self.cursor = (0, 0, 0)  # (epoch, step in epoch, step) to train next
        self.recorded = last_step(rt.log.path)  # steps this source recorded before a restart
        self.resume(self.ckpt.load())

    def resume(self, state: dict | None) -> None:
        """Continue where the last checkpoint left: its model and optimizer, and its place
        in the partition (batches are a function of seed, source and epoch, so the cursor is
        enough to draw the same ones)."""
        if state is None:
            return
        self.ckpt.restore(self.worker, state)
        self.cursor = (state["epoch"], state["next"], state["step"])
        self.rt.log.write("session", status="checkpoint", epoch=state["epoch"], step=state["step"])

    def save(self, epoch: int, next_: int, step: int) -> None:
        self.ckpt.save(
            {"worker": worker_state(self.worker), "epoch": epoch, "next": next_, "step": step}, epoch=epoch, step=step
        )

    def moved(self) -> tuple[Counter, Counter]:
        return sum((p.ep.tx for p in self.links), Counter()), sum((p.ep.rx for p in self.links), Counter())

    def train(self) -> None:
        rt, spec, worker, link, data = self.rt, self.spec, self.worker, self.link, self.data
        first_epoch, first_step, step = self.cursor
        for epoch in range(first_epoch, spec.training.epochs):
            rt.metrics.epoch.labels(**rt.metrics.base).set(epoch)
            rt.load_for_round(self.load, epoch // getattr(spec.paradigm, "local_epochs", 1))
            for s, idx in batches(self.mine, spec, epoch, self.index, self.steps):
                if epoch == first_epoch and s < first_step:
                    continue  # trained before the checkpoint this run resumed from
                x, y = data.train_x[idx], data.train_y[idx]
                up0, down0 = self.moved()
                t0 = time.perf_counter()
                out = worker.train_step(x, y, epoch, step, ids=torch.from_numpy(idx))
                duration = time.perf_counter() - t0
                phases = {**out.phases, **link.phases()}
                loss = link.last.get("loss", out.loss)
                correct = int(link.last.get("correct", out.correct))
                first_time = step > self.recorded  # else: recorded before the restart, counted once
                if first_time:
                    rt.metrics.step(out.samples, phases, None if math.isnan(loss) else loss)
                up1, down1 = self.moved()
                rt.log.write(
                    "step" if first_time else "redo",
                    epoch=epoch,
                    step=step,
                    samples=out.samples,
                    loss=loss,
                    **worker.tags(epoch),
                    accuracy=correct / out.samples,
                    duration_s=duration,
                    **lr_field(worker),
                    **{f"phase_{k}_s": v for k, v in phases.items()},
                    **byte_fields(up1 - up0, down1 - down0),
                )
                step += 1
                if self.ckpt.due(step, False):
                    self.save(epoch, s + 1, step)
            up0, down0 = self.moved()
            t0 = time.perf_counter()
            round_phases = worker.after_epoch(epoch)
            if round_phases is not None:
                up1, down1 = self.moved()
                rt.log.write(
                    "round",
                    epoch=epoch,
                    step=step,
                    duration_s=time.perf_counter() - t0,
                    **{f"phase_{k}_s": v for k, v in round_phases.items()},
                    **byte_fields(up1 - up0, down1 - down0),
                )
            if self.evaluates and evaluation_due(spec, epoch):
                evaluate(rt, worker, link, self.test_x, self.test_y, epoch, step)
            # at an epoch's end, and after every round's exchange: a resumed source never sends a round twice
            every = self.ckpt.every
            if (every == "epoch" or every != "none" and round_phases is not None) and epoch + 1 < spec.training.epochs:
                self.save(epoch + 1, 0, step)

    def finish(self) -> None:
        self.worker.finish()
        end_tx, end_rx = self.moved()
        for peer in self.links:
            peer.call(Message(Kind.BYE))
        # bytes of the session messages, so that the record's totals equal the counters'
        after_tx, after_rx = self.moved()
        self.rt.log.write(
            "control", **byte_fields(self.start_tx + (after_tx - end_tx), self.start_rx + (after_rx - end_rx))
        )
        # what the wire carried besides the payload (framing; CURVE's per-frame overhead)
        wire = sum((p.ep.transport for p in self.links), Counter())
        self.rt.log.write(
            "session",
            status="transport",
            auth=self.spec.transport.auth,
            transport_tx_bytes=wire["tx"],
            transport_rx_bytes=wire["rx"],
        )


def lr_field(worker) -> dict:
    lr = worker.lr()
    return {} if lr is None else {"lr": lr}


def run(args) -> int:
    if getattr(args, "group", None) is not None:
        from .source_group import run_group

        return run_group(args)
    return Source(args).run()


def evaluate(rt: Runtime, worker, link: PeerLink, x, y, epoch: int, step: int) -> None:
    """The source's own exit first (it needs no link, so it is recorded even while the
    link is down), then the final exit."""
    t0 = time.perf_counter()
    local = [worker.eval_local(x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]) for i in range(0, len(y), EVAL_BATCH)]
    if local[0] is not None:  # an exit on the source itself: no bytes on the wire
        acc = sum(c for _, c in local) / len(y)
        rt.metrics.accuracy.labels(**rt.metrics.base, exit="early").set(acc)
        rt.log.write(
            "eval",
            epoch=epoch,
            step=step,
            samples=len(y),
            loss=sum(l for l, _ in local) / len(y),
            accuracy=acc,
            exit="early",
            duration_s=time.perf_counter() - t0,
            **worker.tags(epoch),
        )
    t0 = time.perf_counter()
    up0, down0 = link.ep.tx.copy(), link.ep.rx.copy()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), EVAL_BATCH):
        l, c = worker.eval_batch(x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH], epoch)
        loss_sum += l
        correct += c
    acc = correct / len(y)
    rt.metrics.accuracy.labels(**rt.metrics.base, exit="final").set(acc)
    rt.log.write(
        "eval",
        epoch=epoch,
        step=step,
        samples=len(y),
        loss=loss_sum / len(y),
        accuracy=acc,
        **worker.tags(epoch),
        exit="final",
        duration_s=time.perf_counter() - t0,
        **byte_fields(link.ep.tx - up0, link.ep.rx - down0),
    )
