"""A data source: holds its partition, runs the paradigm's edge work, talks to the server
and/or the aggregator (through the link emulator when there is one) and records every
step, every round's weight exchange, and every evaluation."""
from __future__ import annotations

import math
import time
from collections import Counter

import torch

from ..data import DatasetMissing, load_dataset
from ..devices import resolve_device
from ..paradigms import Setup, get_paradigm
from ..record import byte_fields
from ..roleplan import role_name
from ..schedule import batches, evaluation_due, source_indices, steps_per_epoch, test_subset
from ..transport import Kind, Message, Traffic
from .peer import PeerLink
from .runtime import RoleFailed, Runtime

EVAL_BATCH = 256


def run(args) -> int:
    index = args.index
    rt = Runtime(args, "source", role_name("source", index))
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
            raise RoleFailed(f"{rt.instance}: {err}", code=2) from None
        paradigm = get_paradigm(Setup(rt.experiment, data.meta, rt.run_dir, rt.instance, steps_per_epoch=steps))
        rt.limit(resolve_device(spec.sources.device))
        load = spec.sources.device.load
        rt.load_for_round(load, 0)
        if hasattr(paradigm, "power_of"):
            paradigm.power_of = rt.power_meter(load)
        # the primary peer: the server, or the aggregator itself where there is no server
        link = PeerLink(rt, args.connect, "server" if paradigm.uses_server else "aggregator")
        links = [link]
        if paradigm.aggregates and paradigm.uses_server:
            if not args.aggregator:
                raise RoleFailed(f"{paradigm.name} needs --aggregator (the aggregator's address)", code=2)
            links.append(PeerLink(rt, args.aggregator, "aggregator", second=True))
        aggregate = links[-1].call if paradigm.aggregates else None
        hello = Message(Kind.HELLO).add("samples", torch.tensor([len(mine)], dtype=torch.int64), Traffic.CONTROL)
        for peer in links:
            peer.call(hello)
        worker = paradigm.source(link.call, send=link.send, aggregate=aggregate)
        evaluates = paradigm.evaluators == "all" or index == 0
        test_x, test_y = test_subset(spec, data)
        rt.log.write("plan", planned_steps=steps * spec.training.epochs, samples=len(mine),
                     epochs=spec.training.epochs, edge_blocks=paradigm.edge_blocks())

        def moved() -> tuple[Counter, Counter]:
            return sum((p.ep.tx for p in links), Counter()), sum((p.ep.rx for p in links), Counter())

        step = 0
        start_tx, start_rx = moved()  # HELLO/WELCOME so far
        for epoch in range(spec.training.epochs):
            rt.metrics.epoch.labels(**rt.metrics.base).set(epoch)
            rt.load_for_round(load, epoch // getattr(spec.paradigm, "local_epochs", 1))
            for s, idx in batches(mine, spec, epoch, index, steps):
                x, y = data.train_x[idx], data.train_y[idx]
                up0, down0 = moved()
                t0 = time.perf_counter()
                out = worker.train_step(x, y, epoch, step, ids=torch.from_numpy(idx))
                duration = time.perf_counter() - t0
                phases = {**out.phases, **link.phases()}
                loss = link.last.get("loss", out.loss)
                correct = int(link.last.get("correct", out.correct))
                rt.metrics.step(out.samples, phases, None if math.isnan(loss) else loss)
                up1, down1 = moved()
                rt.log.write("step", epoch=epoch, step=step, samples=out.samples, loss=loss, **worker.tags(epoch),
                             accuracy=correct / out.samples, duration_s=duration,
                             **{f"phase_{k}_s": v for k, v in phases.items()},
                             **byte_fields(up1 - up0, down1 - down0))
                step += 1
            up0, down0 = moved()
            t0 = time.perf_counter()
            round_phases = worker.after_epoch(epoch)
            if round_phases is not None:
                up1, down1 = moved()
                rt.log.write("round", epoch=epoch, step=step, duration_s=time.perf_counter() - t0,
                             **{f"phase_{k}_s": v for k, v in round_phases.items()},
                             **byte_fields(up1 - up0, down1 - down0))
            if evaluates and evaluation_due(spec, epoch):
                evaluate(rt, worker, link, test_x, test_y, epoch, step)
        worker.finish()
        end_tx, end_rx = moved()
        for peer in links:
            peer.call(Message(Kind.BYE))
        # bytes of the session messages, so that the record's totals equal the counters'
        after_tx, after_rx = moved()
        rt.log.write("control", **byte_fields(start_tx + (after_tx - end_tx), start_rx + (after_rx - end_rx)))

    return rt.run(body)


def evaluate(rt: Runtime, worker, link: PeerLink, x, y, epoch: int, step: int) -> None:
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
