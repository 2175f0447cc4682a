"""A data source: holds its partition, runs the paradigm's edge work, talks to the server
(through the link emulator when there is one) and records every step."""
from __future__ import annotations

import math
import time

import torch
import zmq

from ..data import DatasetMissing, load_dataset
from ..devices import resolve_device
from ..paradigms import Setup, get_paradigm
from ..record import byte_fields
from ..schedule import batches, evaluation_due, source_indices, steps_per_epoch, test_subset
from ..transport import Endpoint, Kind, Message, PeerTimeout, Traffic
from .runtime import RoleFailed, Runtime

EVAL_BATCH = 256
_STATS = ("loss", "correct", "t_arrival", "t_start", "forward_s", "backward_s", "t_reply")


class ServerLink:
    """The source's side of the conversation: one request, one reply, timed and counted."""

    def __init__(self, rt: Runtime, address: str):
        self.rt = rt
        self.ctx = zmq.Context.instance()
        self.ep = Endpoint(self.ctx, zmq.DEALER, address, bind=False, identity=rt.instance,
                           on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "tx" else "down", t.label, n))
        self.timeout = rt.spec.training.reply_timeout_s
        self.last: dict[str, float] = {}

    def call(self, msg: Message) -> tuple[Message, float, float]:
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        t_send = time.time()
        self.ep.send(msg)
        try:
            _, reply, _ = self.ep.recv(self.timeout)
        except PeerTimeout:
            raise RoleFailed(f"no reply from the server ({self.ep.address}) to {msg.kind.name} of step "
                             f"{msg.step} within {self.timeout:.0f} s: server or link down", code=3) from None
        t_recv = time.time()
        if reply.kind == Kind.ERROR:
            raise RoleFailed(f"server rejected {msg.kind.name} of step {msg.step}: {reply.error_text()}", code=4)
        stats = reply.tensors.pop("stats", None)
        self.last = dict(zip(_STATS, stats.tolist())) if stats is not None else {}
        self.last.update(t_send=t_send, t_recv=t_recv)
        return reply, t_send, t_recv

    def send(self, msg: Message) -> None:
        """Send without waiting for a reply (the edge goes on with its next batch)."""
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        self.last = {}
        self.ep.send(msg)

    def phases(self) -> dict[str, float]:
        """Network and server phases of the last round trip, from both sides' wall clocks."""
        s = self.last
        if "t_arrival" not in s:
            return {}
        return {"uplink": max(0.0, s["t_arrival"] - s["t_send"]), "server_wait": s["t_start"] - s["t_arrival"],
                "server_forward": s["forward_s"], "server_backward": s["backward_s"],
                "downlink": max(0.0, s["t_recv"] - s["t_reply"])}


def run(args) -> int:
    index = args.index
    rt = Runtime(args, "source", f"source-{index}")
    spec = rt.spec

    def body():
        if not 0 <= index < spec.sources.replicas:
            raise RoleFailed(f"source index {index} outside 0..{spec.sources.replicas - 1}", code=2)
        try:
            data = load_dataset(spec.dataset, spec.seed)
        except DatasetMissing as err:
            raise RoleFailed(str(err), code=2) from None
        mine = source_indices(spec, data)[index]
        try:
            steps = steps_per_epoch(len(mine), spec)
        except ValueError as err:
            raise RoleFailed(f"source-{index}: {err}", code=2) from None
        paradigm = get_paradigm(Setup(rt.experiment, data.meta, rt.run_dir, rt.instance))
        rt.limit(resolve_device(spec.sources.device))
        link = ServerLink(rt, args.connect)
        link.call(Message(Kind.HELLO).add("samples", torch.tensor([len(mine)], dtype=torch.int64), Traffic.CONTROL))
        worker = paradigm.source(link.call, send=link.send)
        evaluates = paradigm.evaluators == "all" or index == 0
        test_x, test_y = test_subset(spec, data)
        rt.log.write("plan", planned_steps=steps * spec.training.epochs, samples=len(mine),
                     epochs=spec.training.epochs, edge_blocks=paradigm.edge_blocks())
        step = 0
        start_tx, start_rx = link.ep.tx.copy(), link.ep.rx.copy()  # HELLO/WELCOME so far
        for epoch in range(spec.training.epochs):
            rt.metrics.epoch.labels(**rt.metrics.base).set(epoch)
            for s, idx in batches(mine, spec, epoch, index, steps):
                x, y = data.train_x[idx], data.train_y[idx]
                up0, down0 = link.ep.tx.copy(), link.ep.rx.copy()
                t0 = time.perf_counter()
                out = worker.train_step(x, y, epoch, step, ids=torch.from_numpy(idx))
                duration = time.perf_counter() - t0
                phases = {**out.phases, **link.phases()}
                loss = link.last.get("loss", out.loss)
                correct = int(link.last.get("correct", out.correct))
                rt.metrics.step(out.samples, phases, None if math.isnan(loss) else loss)
                rt.log.write("step", epoch=epoch, step=step, samples=out.samples, loss=loss, **worker.tags(epoch),
                             accuracy=correct / out.samples, duration_s=duration,
                             **{f"phase_{k}_s": v for k, v in phases.items()},
                             **byte_fields(link.ep.tx - up0, link.ep.rx - down0))
                step += 1
            if evaluates and evaluation_due(spec, epoch):
                evaluate(rt, worker, link, test_x, test_y, epoch, step)
        worker.finish()
        end_tx, end_rx = link.ep.tx.copy(), link.ep.rx.copy()
        link.call(Message(Kind.BYE))
        # bytes of the session messages, so that the record's totals equal the counters'
        rt.log.write("control", **byte_fields(start_tx + (link.ep.tx - end_tx), start_rx + (link.ep.rx - end_rx)))

    return rt.run(body)


def evaluate(rt: Runtime, worker, link: ServerLink, x, y, epoch: int, step: int) -> None:
    """The source's own exit first (it needs no link, so it is recorded even while the
    link is down), then the final exit."""
    t0 = time.perf_counter()
    local = [worker.eval_local(x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]) for i in range(0, len(y), EVAL_BATCH)]
    if local[0] is not None:  # an exit on the source itself: no bytes on the wire
        acc = sum(c for _, c in local) / len(y)
        rt.metrics.accuracy.labels(**rt.metrics.base, exit="early").set(acc)
        rt.log.write("eval", epoch=epoch, step=step, samples=len(y), loss=sum(l for l, _ in local) / len(y),
                     accuracy=acc, exit="early", duration_s=time.perf_counter() - t0, **worker.tags(epoch))
    t0 = time.perf_counter()
    up0, down0 = link.ep.tx.copy(), link.ep.rx.copy()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), EVAL_BATCH):
        l, c = worker.eval_batch(x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH], epoch)
        loss_sum += l
        correct += c
    acc = correct / len(y)
    rt.metrics.accuracy.labels(**rt.metrics.base, exit="final").set(acc)
    rt.log.write("eval", epoch=epoch, step=step, samples=len(y), loss=loss_sum / len(y), accuracy=acc,
                 **worker.tags(epoch),
                 exit="final", duration_s=time.perf_counter() - t0,
                 **byte_fields(link.ep.tx - up0, link.ep.rx - down0))
