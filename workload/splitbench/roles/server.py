"""The server: one model part, many sources (hfsl: one of K medium devices, serving one
source, and trading its partition with the aggregator after every round).

An I/O thread owns the ROUTER socket: it receives and checks every message as soon as it
arrives (stamping its arrival, so time queued behind other sources is measured) and sends
replies. The main thread computes, one request at a time, as one accelerator would.
A malformed or unexpected message gets an ERROR reply and a counted metric; serving goes on.
"""
from __future__ import annotations

import collections
import queue
import threading
import time

import torch
import zmq

from ..devices import resolve_device
from ..data import dataset_meta
from ..paradigms import Setup, get_paradigm
from ..transport import Endpoint, Kind, Message, Traffic, WireError
from ..transport.wire import error_message
from ..record import byte_fields
from ..roleplan import role_name
from .peer import PeerLink
from .runtime import RoleFailed, Runtime


class ServerIO(threading.Thread):
    def __init__(self, rt: Runtime, address: str):
        super().__init__(name="server-io", daemon=True)
        self.rt = rt
        self.ctx = zmq.Context.instance()
        self.ep = Endpoint(self.ctx, zmq.ROUTER, address, bind=True,
                           on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "rx" else "down", t.label, n))
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: collections.deque = collections.deque()
        wake_addr = f"inproc://wake-{id(self)}"
        self._wake_rx = self.ctx.socket(zmq.PAIR)
        self._wake_rx.bind(wake_addr)
        self._wake_tx = self.ctx.socket(zmq.PAIR)
        self._wake_tx.connect(wake_addr)
        self._wake_lock = threading.Lock()
        self.stopping = threading.Event()

    def reply(self, to: bytes, msg: Message) -> None:
        self.outbox.append((to, msg))
        with self._wake_lock:
            self._wake_tx.send(b"", zmq.NOBLOCK)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.ep.sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        while not (self.stopping.is_set() and not self.outbox):
            events = dict(poller.poll(100))
            if self.ep.sock in events:
                while self.ep.sock.poll(0):
                    try:
                        sender, msg, _ = self.ep.recv()
                        self.inbox.put((sender, msg, time.time()))
                    except WireError as err:
                        self.inbox.put((getattr(err, "sender", None), err, time.time()))
            if self._wake_rx in events:
                while self._wake_rx.poll(0):
                    self._wake_rx.recv()
            while self.outbox:
                to, msg = self.outbox.popleft()
                self.ep.send(msg, to=to)


def run(args) -> int:
    index = args.index
    rt = Runtime(args, "server", role_name("server", index))
    spec = rt.spec

    def body():
        rt.limit(resolve_device(spec.server.device))
        if spec.server.gpu and not torch.cuda.is_available():
            rt.log.write("session", status="note", error="spec asks for a GPU but CUDA is not available; using CPU")
        paradigm = get_paradigm(Setup(rt.experiment, dataset_meta(spec.dataset), rt.run_dir, rt.instance))
        rt.load_for_round(spec.server.device.load, 0)
        if hasattr(paradigm, "power_of"):
            paradigm.power_of = rt.power_meter(spec.server.device.load)
        if not 0 <= index < paradigm.servers():
            raise RoleFailed(f"server index {index} outside 0..{paradigm.servers() - 1}", code=2)
        agg = None
        if paradigm.aggregates:
            if not args.aggregator:
                raise RoleFailed(f"{paradigm.name} needs --aggregator (the aggregator's address)", code=2)
            agg = PeerLink(rt, args.aggregator, "aggregator", second=True)
            agg.call(Message(Kind.HELLO))
            hello_tx, hello_rx = agg.ep.tx.copy(), agg.ep.rx.copy()
        worker = paradigm.server(aggregate=agg.call if agg else None)
        io = ServerIO(rt, args.bind)
        io.start()
        rt.log.write("session", status="listening", address=io.ep.address)
        expected = spec.sources.replicas // paradigm.servers()  # hfsl: one source per medium device
        said_bye: set[bytes] = set()
        idle_limit = spec.training.reply_timeout_s * 2
        try:
            while len(said_bye) < expected:
                try:
                    sender, msg, t_arrival = io.inbox.get(timeout=idle_limit)
                except queue.Empty:
                    raise RoleFailed(f"no message from any source for {idle_limit:.0f} s; "
                                     f"{len(said_bye)}/{expected} sources finished", code=3) from None
                if isinstance(msg, WireError):
                    reject(rt, io, sender, "wire", f"malformed message: {msg}")
                    continue
                t_start = time.time()
                try:
                    out = handle(worker, msg)
                except (KeyError, ValueError, RuntimeError, TypeError) as err:
                    reject(rt, io, sender, "content", f"cannot use {msg.kind.name} from {msg.sender!r}: "
                                                      f"{type(err).__name__}: {err}")
                    continue
                if out is None:
                    reject(rt, io, sender, "unexpected", f"unexpected message kind {msg.kind.name} at the server")
                    continue
                reply, loss, correct, fwd, bwd = out
                if msg.kind == Kind.BYE:
                    said_bye.add(sender)
                if reply is not None:
                    stats = torch.tensor([loss, correct, t_arrival, t_start, fwd, bwd, time.time()],
                                         dtype=torch.float64)
                    reply.add("stats", stats, Traffic.CONTROL)
                    reply.experiment, reply.sender = rt.experiment.name, "server-0"
                    reply.epoch, reply.step = msg.epoch, msg.step
                    io.reply(sender, reply)
                if msg.kind == Kind.TRAIN:
                    rt.log.write("server", source=msg.sender, epoch=msg.epoch, step=msg.step, loss=loss,
                                 wait_s=t_start - t_arrival, phase_server_forward_s=fwd, phase_server_backward_s=bwd)
                    if agg is not None:
                        exchange_round(rt, worker, agg, msg)
            worker.finish()
            if agg is not None:
                tx, rx = agg.ep.tx.copy(), agg.ep.rx.copy()
                agg.call(Message(Kind.BYE))
                rt.log.write("control", **byte_fields(hello_tx + (agg.ep.tx - tx), hello_rx + (agg.ep.rx - rx)))
        finally:
            io.stopping.set()
            io.join(timeout=10)
            rt.log.write("session", status="served", sources=len(said_bye),
                         up_bytes=sum(io.ep.rx.values()), down_bytes=sum(io.ep.tx.values()))

    return rt.run(body)


def exchange_round(rt: Runtime, worker, agg: PeerLink, msg: Message) -> None:
    """After a training request: the worker's weight exchange with the aggregator, if this
    request ended a round, recorded as a `round` event with its bytes."""
    up0, down0 = agg.ep.tx.copy(), agg.ep.rx.copy()
    t0 = time.perf_counter()
    try:
        phases = worker.after_train(msg)
    except ValueError as err:
        raise RoleFailed(f"round after step {msg.step}: {err}", code=4) from None
    if phases is not None:
        rt.log.write("round", source=msg.sender, epoch=msg.epoch, step=msg.step,
                     duration_s=time.perf_counter() - t0, **{f"phase_{k}_s": v for k, v in phases.items()},
                     **worker.tags(msg.epoch), **byte_fields(agg.ep.tx - up0, agg.ep.rx - down0))
        rt.load_for_round(rt.spec.server.device.load, msg.epoch // rt.spec.paradigm.local_epochs + 1)


def handle(worker, msg: Message):
    """(reply, loss, correct, forward_s, backward_s), or None for a kind the server does not take."""
    if msg.kind == Kind.HELLO:
        return Message(Kind.WELCOME), float("nan"), 0, 0.0, 0.0
    if msg.kind == Kind.BYE:
        return Message(Kind.BYE), float("nan"), 0, 0.0, 0.0
    if msg.kind == Kind.TRAIN:
        o = worker.train(msg)
        return o.reply, o.loss, o.correct, o.forward_s, o.backward_s
    if msg.kind == Kind.EVAL:
        o = worker.evaluate(msg)
        return o.reply, float("nan"), 0, 0.0, 0.0
    return None


def reject(rt: Runtime, io: ServerIO, sender: bytes | None, reason: str, text: str) -> None:
    rt.metrics.malformed.labels(**rt.metrics.base, reason=reason).inc()
    rt.log.write("session", status="rejected", reason=reason, error=text)
    if sender is not None:
        io.reply(sender, error_message(text, rt.experiment.name, "server-0"))
