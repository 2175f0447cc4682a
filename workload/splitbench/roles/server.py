"""The server: one model part, many sources (hfsl: one of K medium devices, serving one
source, and trading its partition with the aggregator after every round).

An I/O thread owns the ROUTER socket: it receives and checks every message as soon as it
arrives (stamping its arrival, so time queued behind other sources is measured) and sends
replies. The main thread computes, one request at a time, as one accelerator would.
Every message is checked before use (roles/checks.py): its sender is the authenticated key's
instance, never the name it claims; a refused message gets an ERROR reply, a counted
splitbench_rejected_messages_total{reason} and a rate-limited log line; serving goes on.
The inbox is bounded (INBOX_MAX): when it is full the I/O thread stops reading and the
socket's high-water mark holds the senders back.
"""

from __future__ import annotations

import collections
import json
import queue
import threading
import time

import torch
import zmq

from ..atomic import write_atomic
from ..data import dataset_meta
from ..paradigms import Setup, get_paradigm
from ..transport import Endpoint, Kind, Message, PeerGone, Security, Traffic, WireError
from ..transport.wire import error_message
from ..checkpoint import Checkpointer, worker_state
from ..record import byte_fields
from ..roleplan import role_name, routing_id
from .checks import Limits, Rejected, Rejections, SourceStream, check_server_message, identity_of, message_cap
from .peer import NOTICE_EVERY_S, Notices, PeerLink, role_security
from .runtime import RoleFailed, Runtime


INBOX_MAX = 64  # requests waiting for the compute thread; beyond it the socket's HWM holds senders back


class ServerIO(threading.Thread):
    def __init__(self, rt: Runtime, address: str, security: Security, max_msg_bytes: int):
        super().__init__(name="server-io", daemon=True)
        self.rt = rt
        self.ctx = zmq.Context.instance()
        # replies to a peer that stopped reading are dropped by the ROUTER, never block it
        self.ep = Endpoint(
            self.ctx,
            zmq.ROUTER,
            address,
            bind=True,
            security=security,
            max_msg_bytes=max_msg_bytes,
            on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "rx" else "down", t.label, n),
        )
        self.inbox: queue.Queue = queue.Queue(maxsize=INBOX_MAX)
        self.outbox: collections.deque = collections.deque()
        wake_addr = f"inproc://wake-{id(self)}"
        self._wake_rx = self.ctx.socket(zmq.PAIR)
        self._wake_rx.bind(wake_addr)
        self._wake_tx = self.ctx.socket(zmq.PAIR)
        self._wake_tx.connect(wake_addr)
        self._wake_lock = threading.Lock()
        self.stopping = threading.Event()
        self.send_errors = 0

    def reply(self, to: bytes, msg: Message) -> None:
        self.outbox.append((to, msg))
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass  # wake-ups already queued: the I/O thread will find this reply too

    def run(self) -> None:
        # readiness inside the loop is read off ZMQ_EVENTS: Socket.poll(0) builds a Poller per call
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        reading = False
        while not (self.stopping.is_set() and not self.outbox):
            room = not self.inbox.full()  # a full inbox: stop reading, let the socket's HWM push back
            if room != reading:
                (poller.register(self.ep.sock, zmq.POLLIN) if room else poller.unregister(self.ep.sock))
                reading = room
            events = dict(poller.poll(100 if room else 20))
            if self.ep.sock in events:
                while not self.inbox.full() and self.ep.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    try:
                        sender, msg, _ = self.ep.recv()
                        self.inbox.put((sender, self.ep.last_user, msg, time.time()))
                    except WireError as err:
                        self.inbox.put((getattr(err, "sender", None), getattr(err, "user", None), err, time.time()))
            if self._wake_rx in events:
                while self._wake_rx.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    self._wake_rx.recv()
            while self.outbox:
                to, msg = self.outbox.popleft()
                try:
                    self.ep.send(msg, to=to)
                except PeerGone:
                    self.send_errors += 1


class Server:
    """One server (or one of hfsl's medium devices). Its one entry point is run(): setup()
    limits the device, builds the paradigm's worker and starts listening; serve() answers
    every source until each has said BYE, refusing (and counting) what it cannot use;
    finish() ends the aggregator session and records the transport totals."""

    def __init__(self, args):
        self.args, self.index = args, args.index
        self.rt = Runtime(args, "server", role_name("server", args.index))
        self.spec = self.rt.spec
        self.rejections = self.rt.rejections = Rejections(self.rt)
        self.agg: PeerLink | None = None
        self.io: ServerIO | None = None
        self.said_bye: set[str] = set()
        self.replies: dict[str, Message] = {}  # per source: the last training reply (a re-sent step gets it again)
        self.served = 0  # training requests answered, over every run of this role
        self.duplicates = 0
        self.resumed: dict[str, int] | None = None  # restarted: each source's last step in the checkpoint
        self.notices_done: set[str] = set()  # sources whose first step since the restart was recorded
        self.departed: dict[str, int | None] = {}  # who said goodbye, and its last step trained here
        self.notices: Notices | None = None

    def run(self) -> int:
        return self.rt.run(self.body)

    def body(self) -> None:
        self.setup()
        try:
            self.serve()
            self.worker.finish()
            self.leave_aggregator()
        finally:
            self.finish()

    def setup(self) -> None:
        rt, spec, args, index = self.rt, self.spec, self.args, self.index
        self.security = role_security(rt, on_denied=lambda text: self.rejections("?", "auth", text))
        rt.limit(rt.plan.device("server"))
        if spec.server.gpu and not torch.cuda.is_available():
            rt.log.write("session", status="note", error="spec asks for a GPU but CUDA is not available; using CPU")
        paradigm = get_paradigm(Setup(rt.experiment, dataset_meta(spec.dataset), rt.run_dir, rt.instance))
        rt.load_for_round(spec.server.device.load, 0)
        if hasattr(paradigm, "power_of"):
            paradigm.power_of = rt.power_meter(spec.server.device.load)
        if not 0 <= index < paradigm.servers():
            raise RoleFailed(f"server index {index} outside 0..{paradigm.servers() - 1}", code=2)
        if paradigm.aggregates:
            if not args.aggregator:
                raise RoleFailed(f"{paradigm.name} needs --aggregator (the aggregator's address)", code=2)
            self.agg = PeerLink(rt, args.aggregator, "aggregator", second=True)
            self.agg.call(Message(Kind.HELLO))
            self.hello_tx, self.hello_rx = self.agg.ep.tx.copy(), self.agg.ep.rx.copy()
        self.worker = paradigm.server(aggregate=self.agg.call if self.agg else None)
        self.io = ServerIO(rt, args.bind, self.security, message_cap(spec))
        self.io.start()
        rt.log.write("session", status="listening", address=self.io.ep.address, auth=self.security.mode)
        k = spec.sources.replicas
        self.mine = {role_name("source", i) for i in range(k) if i * paradigm.servers() // k == index}  # hfsl: one each
        self.paradigm_servers = paradigm.servers()
        self.limits, self.stream = Limits(rt.experiment), SourceStream()
        self.ckpt = Checkpointer(rt, spec.checkpoint.every)
        self.ckpt_epoch = 0
        self.resume(self.ckpt.load())
        if rt.restarted:  # tell every source: what it sent the server that died may be lost
            self.notices = Notices(
                {name: routing_id(name).encode() for name in self.mine}, self.notify, spec.training.reply_timeout_s
            )

    def notify(self, to: bytes, msg: Message) -> None:
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        self.io.reply(to, msg)

    def state(self) -> dict:
        """What a restarted server needs: its worker, whom it has served up to which step,
        the replies it may have to send again, and who has left."""
        return {
            "worker": worker_state(self.worker),
            "served": self.served,
            "said_bye": sorted(self.said_bye),
            "stream_step": dict(self.stream.step),
            "stream_epoch": dict(self.stream.epoch),
            "replies": {
                who: {
                    "epoch": m.epoch,
                    "step": m.step,
                    "tensors": dict(m.tensors),
                    "traffic": {k: int(t) for k, t in m.traffic.items()},
                }
                for who, m in self.replies.items()
            },
        }

    def resume(self, state: dict | None) -> None:
        left = self.left_before()
        self.departed.update(left)
        if state is None:
            self.said_bye |= set(left)
            self.resumed = {} if self.rt.restarted else None
            self.count_departed(left, set())
            return
        self.ckpt.restore(self.worker, state)
        self.served, self.said_bye = state["served"], set(state["said_bye"]) | set(left)
        self.stream.step, self.stream.epoch = dict(state["stream_step"]), dict(state["stream_epoch"])
        self.ckpt_epoch = max(self.stream.epoch.values(), default=0)
        for who, r in state["replies"].items():
            self.replies[who] = Message(
                Kind.TRAIN_REPLY,
                self.rt.experiment.name,
                self.rt.instance,
                r["epoch"],
                r["step"],
                dict(r["tensors"]),
                {k: Traffic(t) for k, t in r["traffic"].items()},
            )
        self.resumed = dict(self.stream.step)
        self.rt.log.write("session", status="checkpoint", served=self.served, sources_done=len(self.said_bye))
        self.count_departed(left, set(state["said_bye"]))

    def count_departed(self, left: dict[str, int | None], in_checkpoint: set[str]) -> None:
        """A source that left after the last checkpoint sends no step again, so the first-step
        count in answer() never sees it: its updates past the checkpoint are counted here, from
        the last step it trained (written at its goodbye), as a `resume` event of its own. Once
        counted, its step is written as null, so a later restart from the same checkpoint does
        not count the same updates again."""
        if self.resumed is None:
            return
        counted = []
        for who in sorted(set(left) - in_checkpoint):
            last = left[who]
            if last is None:  # counted by an earlier restart, or an older server's list of names
                continue
            self.notices_done.add(who)
            lost = max(0, last - self.resumed.get(who, -1))
            self.rt.log.write("resume", source=who, step=last, lost_updates=lost, departed=True)
            counted.append(who)
        if counted:
            self.departed.update(dict.fromkeys(counted))
            self.write_departed()

    @property
    def byes_path(self):
        return self.ckpt.path.with_suffix(".left.json")

    def left_before(self) -> dict[str, int | None]:
        """The sources a previous life of this server saw leave (byes_path), if any, each with
        the last step it trained (None from a file that lists names only)."""
        try:
            left = json.loads(self.byes_path.read_text())
            if isinstance(left, list):
                left = dict.fromkeys(left)
            return {who: last if isinstance(last, int) else None for who, last in left.items() if who in self.mine}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def write_departed(self) -> None:
        self.byes_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.byes_path, json.dumps(dict(sorted(self.departed.items()))))

    def save(self, epoch: int, step: int, bye: bool = False) -> None:
        """A checkpoint when one is due: every N requests served and at the first request of
        a new epoch. A source's leaving is written apart, as the map of those gone (byes_path),
        so a restart knows who is gone without the whole state written again at each of a
        thousand goodbyes (104 MB each with 1,000 sources' pending replies)."""
        if bye:  # written whatever checkpoint.every says: a restart needs it even with no checkpoint
            self.write_departed()
            return
        if self.ckpt.every == "none" or not self.ckpt.due(self.served, epoch > self.ckpt_epoch):
            return
        self.ckpt_epoch = max(self.ckpt_epoch, epoch)
        self.ckpt.save(self.state(), epoch=epoch, step=step, served=self.served)

    def serve(self) -> None:
        """Answer until every source said BYE, or the ones that did not are gone: nothing came
        for sources.deadline once the others finished (each recorded as `source_gone`). A restarted
        server keeps telling its sources so until each answers (Notices)."""
        idle_limit, deadline = self.spec.training.reply_timeout_s * 2, self.spec.sources.deadline
        last_heard = time.time()
        self.heard: dict[str, float] = {}
        self.last_step: dict[str, int] = {}
        while waiting := self.mine - self.said_bye:
            if self.notices is not None:
                self.notices.tick()
            try:
                sender, user, msg, t_arrival = self.io.inbox.get(timeout=min(NOTICE_EVERY_S, deadline))
            except queue.Empty:
                now = time.time()
                # nothing to do for the deadline: the sources still out are gone, once each was heard
                # from or another finished (one still starting up has not been heard from yet); the
                # server's own blocking work (an hfsl round) is not their silence
                if now - last_heard > deadline and (self.said_bye or waiting <= set(self.heard)):
                    self.drop(waiting, deadline)
                    return
                if now - last_heard > idle_limit:
                    raise RoleFailed(
                        f"no message from any source for {idle_limit:.0f} s; "
                        f"{len(self.said_bye)}/{len(self.mine)} sources finished",
                        code=3,
                    ) from None
                continue
            self.answer(sender, user, msg, t_arrival)
            last_heard = time.time()

    def drop(self, waiting: set[str], deadline: float) -> None:
        """Record the sources that are gone; with none left at all, the run cannot go on."""
        now = time.time()
        for who in sorted(waiting):
            self.rt.log.write(
                "source_gone",
                source=who,
                last_step=self.last_step.get(who),
                silent_s=now - self.heard[who] if who in self.heard else None,
                noticed_by=self.rt.instance,
                reason=f"silent for more than {deadline:g} s",
            )
        if not self.said_bye and self.paradigm_servers == 1:
            raise RoleFailed(
                f"every source gone: {', '.join(sorted(waiting))} silent for more than {deadline:g} s", code=3
            )

    def duplicate(self, sender: bytes, who: str, msg: Message) -> bool:
        """A training step this server has already answered (re-sent after a restart notice,
        or its reply was lost): answered again from the kept reply, never trained twice."""
        kept = self.replies.get(who)
        if (
            msg.kind != Kind.TRAIN
            or kept is None
            or (kept.epoch, kept.step) != (msg.epoch, msg.step)
            or msg.experiment != self.limits.experiment
        ):
            return False
        self.duplicates += 1
        self.rt.metrics.duplicates.labels(**self.rt.metrics.base).inc()
        self.rt.log.write("duplicate", source=who, epoch=msg.epoch, step=msg.step)
        self.io.reply(sender, kept)
        return True

    def answer(self, sender: bytes | None, user, msg, t_arrival: float) -> None:
        """Check one message, hand it to the worker, reply, record: a message the server
        cannot use is refused and counted, never fatal."""
        rt, io = self.rt, self.io
        who = (sender or b"?").decode("utf-8", "replace")
        t_start = time.time()
        try:
            who = identity_of(sender, user, self.security.curve)
            if isinstance(msg, WireError):
                raise Rejected("wire", f"malformed message: {msg}")
            if self.notices is not None:
                self.notices.heard(who)
            if self.duplicate(sender, who, msg):
                return
            check_server_message(self.limits, self.mine, self.stream, who, msg)
            try:
                out = handle(self.worker, msg)
            except Exception as err:  # noqa: BLE001 - no message may end the server
                raise Rejected("content", f"cannot use {msg.kind.name}: {type(err).__name__}: {err}") from None
        except Rejected as err:
            reject(rt, io, sender, who, err.reason, str(err))
            return
        self.stream.accept(who, msg, msg.kind == Kind.TRAIN)
        self.heard[who] = time.time()  # when it was dealt with: a queue behind others is not its silence
        if msg.kind == Kind.TRAIN:
            self.last_step[who] = msg.step
        reply, loss, correct, fwd, bwd = out
        if msg.kind == Kind.BYE:
            self.said_bye.add(who)
            self.departed[who] = self.stream.step.get(who)
            self.replies.pop(who, None)  # gone: it re-sends no step, and a checkpoint need not keep it
            self.save(msg.epoch, msg.step, bye=True)
        if reply is not None:
            stats = torch.tensor([loss, correct, t_arrival, t_start, fwd, bwd, time.time()], dtype=torch.float64)
            reply.add("stats", stats, Traffic.CONTROL)
            reply.experiment, reply.sender = rt.experiment.name, rt.instance
            reply.epoch, reply.step = msg.epoch, msg.step
            io.reply(sender, reply)
        if msg.kind == Kind.TRAIN:
            if reply is not None:
                self.replies[who] = reply
            if self.resumed is not None and who not in self.notices_done:
                self.notices_done.add(who)  # its first step since the restart: did the server lose updates?
                lost = msg.step - self.resumed.get(who, -1) - 1
                rt.log.write("resume", source=who, epoch=msg.epoch, step=msg.step, lost_updates=max(0, lost))
            rt.log.write(
                "server",
                source=who,
                epoch=msg.epoch,
                step=msg.step,
                loss=loss,
                wait_s=t_start - t_arrival,
                phase_server_forward_s=fwd,
                phase_server_backward_s=bwd,
            )
            if self.agg is not None:
                exchange_round(rt, self.worker, self.agg, msg, who)
            self.served += 1
            self.save(msg.epoch, msg.step)

    def leave_aggregator(self) -> None:
        agg = self.agg
        if agg is None:
            return
        tx, rx = agg.ep.tx.copy(), agg.ep.rx.copy()
        agg.call(Message(Kind.BYE))
        self.rt.log.write("control", **byte_fields(self.hello_tx + (agg.ep.tx - tx), self.hello_rx + (agg.ep.rx - rx)))

    def finish(self) -> None:
        rt, io, agg = self.rt, self.io, self.agg
        io.stopping.set()
        io.join(timeout=10)
        wire = io.ep.transport + (agg.ep.transport if agg is not None else collections.Counter())
        for d, n in wire.items():
            rt.metrics.transport_bytes.labels(**rt.metrics.base, direction=d, auth=self.security.mode).inc(n)
        rt.log.write(
            "session",
            status="served",
            sources=len(self.said_bye),
            auth=self.security.mode,
            gone=",".join(sorted(self.mine - self.said_bye)) or None,
            up_bytes=sum(io.ep.rx.values()),
            down_bytes=sum(io.ep.tx.values()),
            transport_rx_bytes=wire["rx"],
            transport_tx_bytes=wire["tx"],
            rejected=self.rejections.total,
            duplicates_dropped=self.duplicates,
        )


def run(args) -> int:
    return Server(args).run()


def exchange_round(rt: Runtime, worker, agg: PeerLink, msg: Message, who: str) -> None:
    """After a training request: the worker's weight exchange with the aggregator, if this
    request ended a round, recorded as a `round` event with its bytes."""
    up0, down0 = agg.ep.tx.copy(), agg.ep.rx.copy()
    t0 = time.perf_counter()
    try:
        phases = worker.after_train(msg)
    except ValueError as err:
        raise RoleFailed(f"round after step {msg.step}: {err}", code=4) from None
    if phases is not None:
        rt.log.write(
            "round",
            source=who,
            epoch=msg.epoch,
            step=msg.step,
            duration_s=time.perf_counter() - t0,
            **{f"phase_{k}_s": v for k, v in phases.items()},
            **worker.tags(msg.epoch),
            **byte_fields(agg.ep.tx - up0, agg.ep.rx - down0),
        )
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


def reject(rt: Runtime, io: ServerIO, sender: bytes | None, who: str, reason: str, text: str) -> None:
    """Count and (rate-limited) log a refused message; answer ERROR so a real peer learns why."""
    rt.rejections(who, reason, text)
    if sender is not None:
        io.reply(sender, error_message(text, rt.experiment.name, rt.instance))
