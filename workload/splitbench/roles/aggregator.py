"""The aggregator (fedavg's server; hfsl's high-computational device): collects one round's
weights of a partition from every device that trains it, averages them weighted by
sample count (FedAvg), and answers each device with the average.

Partitions are independent: in hfsl the K low devices' W_l and the K medium devices' W_m
are averaged apart, each as soon as its last contribution arrives, or sources.deadline
seconds after its first: a round that closes at the deadline averages the updates that
came (weighted by their sample counts, as FedAvg weights) and the devices that missed it
are recorded (`source_gone`) and not waited for again, so one dead source does not end the
run (a late update to a closed round is refused, as before; one to an open round still counts). Where hfsl's split may
move (paradigm.candidates), a round closes when both partitions are in: the Q-learning
agent (planning/hfsl.py), trained here at start-up on the candidates' costs, picks the
next cut from the lowest remaining power each tier reported, and every device gets its
partition at that cut. A device that sends a
second contribution to an open round, weights of the wrong size, or a partition it does
not train gets an ERROR reply; a round that never completes ends the role with a line that
says who is missing.

Every message is checked first (roles/checks.py): the contributor is the authenticated key's
instance (a source's key cannot send a server's partition), n_k is positive and at most a
round's samples, weights have the size the current cut gives, a round is contributed to once
and never after it closed, and at most two rounds per partition are open at once. A refused
message is counted and answered with ERROR; the aggregator goes on.
"""

from __future__ import annotations

import math
import time

import torch
import zmq

from ..checkpoint import Checkpointer
from ..data import dataset_meta
from ..paradigms import Setup, get_paradigm
from ..paradigms.base import whole_model
from ..paradigms.federated import state_tensors, weighted_average
from ..planning.hfsl import QAgent, candidate_costs
from ..transport import Endpoint, Kind, Message, PeerGone, PeerTimeout, Traffic, WireError
from ..transport.wire import error_message
from .checks import Limits, Rejected, Rejections, check_contribution, common, identity_of, message_cap
from .peer import NOTICE_EVERY_S, Notices, role_security
from ..roleplan import role_name, routing_id
from .runtime import RoleFailed, Runtime


class Aggregator:
    """The device that averages weights (fedavg; hfsl's high-computational device). Its one
    entry point is run(): setup() listens; every message is then checked and either refused
    (counted) or taken into its round (contribute); a full round is averaged and sent back
    (send_round), through the Q-learning mover where hfsl's cut moves."""

    def __init__(self, args):
        self.args = args
        self.rt = Runtime(args, "aggregator", role_name("aggregator"))
        self.spec = self.rt.spec
        self.rejections = Rejections(self.rt)
        self.byes: set[str] = set()
        self.pending: dict[tuple[str, int], dict[bytes, tuple[torch.Tensor, int, float | None]]] = {}
        self.opened: dict[tuple[str, int], float] = {}
        self.closed: dict[str, int] = {}  # per partition: rounds below this are averaged and sent
        self.whos: dict[tuple[str, int], set[str]] = {}  # who contributed to each open round
        self.done: dict[tuple[str, int], tuple[dict, torch.Tensor, float | None]] = {}  # averaged, not yet sent
        self.gone: set[str] = set()  # devices that missed a round's deadline: not waited for again
        self.farewelled: set[str] = set()  # gone devices told goodbye at the end (once, over every life)
        self.last_round_in: set[str] = set()  # devices that sent their update of the last round
        self.closed_by: dict[tuple[str, int], set[str]] = {}  # who contributed to a round averaged, not yet sent
        # per partition: the last round sent (round, average, cut, contributors): a device that re-sends
        # its contribution to it (its reply was lost with a restart) gets the average again
        self.last: dict[str, dict] = {}
        self.rounds = 0  # rounds sent, over every run of this role
        self.duplicates = 0
        self.notices: Notices | None = None

    def run(self) -> int:
        return self.rt.run(self.body)

    def body(self) -> None:
        self.setup()
        self.serve()
        self.farewell()
        rt, ep, security = self.rt, self.ep, self.security
        for d, n in ep.transport.items():
            rt.metrics.transport_bytes.labels(**rt.metrics.base, direction=d, auth=security.mode).inc(n)
        rt.log.write(
            "session",
            status="aggregated",
            auth=security.mode,
            transport_rx_bytes=ep.transport["rx"],
            transport_tx_bytes=ep.transport["tx"],
            rejected=self.rejections.total,
            gone=",".join(sorted(self.gone)) or None,
            duplicates_dropped=self.duplicates,
        )

    def setup(self) -> None:
        rt, spec = self.rt, self.spec
        self.security = role_security(rt, on_denied=lambda text: self.rejections("?", "auth", text))
        rt.limit(rt.plan.device("aggregator"))
        self.paradigm = paradigm = get_paradigm(
            Setup(rt.experiment, dataset_meta(spec.dataset), rt.run_dir, rt.instance)
        )
        k = spec.sources.replicas
        self.expected = {p: k for p in paradigm.aggregates}  # contributors per partition and round
        self.peers = sum(self.expected.values())
        self.sources = {role_name("source", i) for i in range(k)}
        self.servers = {role_name("server", j) for j in range(paradigm.servers())}
        # who may contribute what: sources train "whole" (fedavg) or "low" (hfsl), servers "medium"
        self.trains = {p: (self.servers if p == "medium" else self.sources) for p in self.expected}
        self.members = {p: set(who) for p, who in self.trains.items()}  # whom each partition's round waits for
        self.devices = set().union(*self.trains.values())
        self.limits = Limits(rt.experiment)
        self.ep = Endpoint(
            zmq.Context.instance(),
            zmq.ROUTER,
            self.args.bind,
            bind=True,
            security=self.security,
            max_msg_bytes=message_cap(spec),
            on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "rx" else "down", t.label, n),
        )
        rt.log.write(
            "session",
            status="listening",
            address=self.ep.address,
            partitions=",".join(self.expected),
            auth=self.security.mode,
        )
        self.block_sizes = [sum(t.numel() for t in state_tensors(block)) for block in whole_model(paradigm.setup)]
        self.mover = SplitMover(rt, paradigm) if getattr(spec.paradigm, "candidates", None) else None
        self.ckpt = Checkpointer(rt, spec.checkpoint.every)
        self.resume(self.ckpt.load())
        if rt.restarted:  # tell every device: a contribution sent to the aggregator that died may be lost
            peers = {n: self.routing_id(n) for n in sorted(self.sources | self.servers)}
            self.notices = Notices(peers, self.reply, spec.training.reply_timeout_s)

    def routing_id(self, device: str) -> bytes:
        """A device's connection here: its second peer where it also has a server (or is one)."""
        second = self.paradigm.uses_server or device in self.servers
        return routing_id(device, "aggregator" if second else None).encode()

    def farewell(self) -> None:
        """A goodbye to each device this aggregator stopped waiting for: one that is alive after
        all (an hfsl server left without its source notices only after the deadline) gets its
        own goodbye answered by it, not by a reply that never comes once this role has ended.
        Sent once per device over every life of this role (saved), and counted only where it
        left: to a routing id with no connection the ROUTER refuses it (ROUTER_MANDATORY) instead
        of dropping it silently, and the record says which went (a `farewell` event each)."""
        todo = sorted(self.gone - self.byes - self.farewelled)
        if not todo:
            return
        self.ep.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        for who in todo:
            sent = self.reply(self.routing_id(who), Message(Kind.BYE))
            self.farewelled.add(who)
            self.rt.log.write("farewell", device=who, sent=sent)
        self.save(bye=True)

    def state(self) -> dict:
        return {
            "closed": dict(self.closed),
            "byes": sorted(self.byes),
            "rounds": self.rounds,
            "last": {p: dict(v) for p, v in self.last.items()},
            "cut": self.mover.cut if self.mover else None,
            "gone": sorted(self.gone),
            "farewelled": sorted(self.farewelled),
        }

    def resume(self, state: dict | None) -> None:
        if state is None:
            return
        self.closed, self.byes, self.rounds = dict(state["closed"]), set(state["byes"]), state["rounds"]
        self.last = {p: dict(v) for p, v in state["last"].items()}
        self.gone = set(state.get("gone", ()))  # not waited for again after a restart either
        self.farewelled = set(state.get("farewelled", ()))
        for members in self.members.values():
            members -= self.gone
        if self.mover and state["cut"] is not None:
            self.mover.cut = state["cut"]
        self.rt.log.write("session", status="checkpoint", rounds=self.rounds, devices_done=len(self.byes))

    def save(self, bye: bool = False) -> None:
        """When due (every N rounds; every round for epoch), and when a device leaves;
        before a round's replies go out, so a restart never reopens a round a device has left."""
        if self.ckpt.every == "none" or not (bye or self.ckpt.due(self.rounds, True)):
            return
        self.ckpt.save(self.state(), rounds=self.rounds, round=max(self.closed.values(), default=0) - 1)

    def reply(self, to: bytes, msg: Message) -> bool:
        """Send; False where it could not go. A gone peer shows up as a missing contribution: a
        ROUTER drops what it cannot route, or with ROUTER_MANDATORY (the farewell) refuses it."""
        msg.experiment, msg.sender = self.rt.experiment.name, self.rt.instance
        try:
            self.ep.send(msg, to=to)
        except PeerGone:
            return False
        except zmq.ZMQError as err:
            if err.errno != zmq.EHOSTUNREACH:
                raise
            return False
        return True

    def reject(self, to: bytes | None, who: str, reason: str, text: str) -> None:
        self.rejections(who, reason, text)
        if to is not None:
            self.reply(to, error_message(text, self.rt.experiment.name, self.rt.instance))

    def sizes(self) -> dict[str, int]:
        """Values each partition's contribution has this round (the cut may have moved)."""
        if "whole" in self.expected:
            return {"whole": sum(self.block_sizes)}
        cut = self.mover.cut if self.mover else self.spec.paradigm.split_after
        return {"low": sum(self.block_sizes[:cut]), "medium": sum(self.block_sizes[cut:])}

    def average(self, part: str, round_: int, contributions: dict, since: float):
        """(the contributors, their weighted average, the lowest power they reported)."""
        t0 = time.perf_counter()
        # in the contributors' order, not their arrival's: float sums then do not depend on timing,
        # and a round re-averaged after a restart is the very same
        ordered = [contributions[k] for k in sorted(contributions)]
        try:
            avg = weighted_average([w for w, _, _ in ordered], [n for _, n, _ in ordered])
        except ValueError as err:  # checked contributions cannot get here; if they do, say so and stop
            raise RoleFailed(f"{part} round {round_}: {err}", code=4) from None
        powers = [p for _, _, p in contributions.values() if p is not None]
        self.rt.log.write(
            "aggregate",
            partition=part,
            round=round_,
            contributors=len(contributions),
            samples=sum(n for _, n, _ in contributions.values()),
            values=int(avg.numel()),
            wait_s=time.time() - since,
            average_s=time.perf_counter() - t0,
            power_min=min(powers) if powers else None,
        )
        return contributions, avg, min(powers) if powers else None

    def send_round(self, round_: int, parts: dict) -> None:
        averages = {p: avg for p, (_, avg, _) in parts.items()}
        cut = None
        if self.mover:
            averages, cut = self.mover.resplit(round_, averages, {p: power for p, (_, _, power) in parts.items()})
        for p in parts:
            self.last[p] = {
                "round": round_,
                "avg": averages[p],
                "cut": cut,
                "contributors": sorted(self.closed_by.pop((p, round_), ())),
            }
        self.rounds += 1
        self.save()
        for p, (contributions, _, _) in parts.items():
            out = round_reply(self.last[p], p)
            for to in contributions:
                self.reply(to, out)

    def serve(self) -> None:
        idle, deadline = self.spec.training.reply_timeout_s * 2, self.spec.sources.deadline
        last_heard = time.time()
        while not self.devices - self.gone <= self.byes:
            due = min((t + deadline for t in self.opened.values()), default=math.inf)
            if self.all_rounds_in():  # every device still out sent its last round: wait for its goodbye
                due = min(due, last_heard + deadline)
            if self.notices is not None:
                self.notices.tick()
            try:
                sender, msg, _ = self.ep.recv(
                    max(0.01, min(last_heard + idle, due, time.time() + NOTICE_EVERY_S) - time.time())
                )
                user = self.ep.last_user
            except PeerTimeout:
                for key in [k for k, t in self.opened.items() if t + deadline <= time.time()]:
                    self.close_late(key)
                if self.all_rounds_in() and time.time() - last_heard > deadline:
                    self.drop_silent()  # they sent their last round but no goodbye
                    continue
                if time.time() - last_heard < idle:
                    continue
                waiting = "; ".join(
                    f"{p} round {r}: {len(c)}/{len(self.members[p])} in" for (p, r), c in self.pending.items()
                )
                raise RoleFailed(
                    f"no message for {idle:.0f} s; {len(self.byes)}/{self.peers} devices finished"
                    + (f"; waiting for {waiting}" if waiting else ""),
                    code=3,
                ) from None
            except WireError as err:
                sender, user, msg = getattr(err, "sender", None), getattr(err, "user", None), err
            last_heard = time.time()
            self.answer(sender, user, msg)

    def all_rounds_in(self) -> bool:
        out = self.devices - self.gone - self.byes
        return bool(out) and not self.opened and out <= self.last_round_in

    def drop_silent(self) -> None:
        for who in sorted(self.devices - self.gone - self.byes):
            self.gone.add(who)
            self.rt.log.write(
                "source_gone",
                source=who,
                noticed_by=self.rt.instance,
                reason=f"no goodbye within {self.spec.sources.deadline:g} s of the others' end",
            )
        self.save(bye=True)  # a restart must not wait for them again (close_late's are saved with their round)

    def close_late(self, key: tuple[str, int]) -> None:
        """The round's deadline passed: the devices that sent nothing are gone; average what came."""
        part, round_ = key
        for who in sorted(self.members[part] - self.whos.get(key, set())):
            self.members[part].discard(who)
            self.gone.add(who)
            self.rt.log.write(
                "source_gone",
                source=who,
                partition=part,
                round=round_,
                noticed_by=self.rt.instance,
                reason=f"no {part} update for round {round_} within {self.spec.sources.deadline:g} s of the first",
            )
        self.close(part, round_)

    def check(self, sender: bytes | None, user, msg) -> tuple[str, str | None, str | None]:
        """(who sent it, the partition it contributes to, "open"/"sent" if it is a copy of a
        contribution to a round still open / already answered); raises Rejected."""
        who = identity_of(sender, user, self.security.curve)
        if isinstance(msg, WireError):
            raise Rejected("wire", f"malformed message: {msg}")
        if who not in self.sources | self.servers or (who in self.servers and not self.paradigm.servers()):
            raise Rejected("sender", f"{who[:64]!r} is not a device of this experiment")
        if msg.kind not in (Kind.HELLO, Kind.TRAIN, Kind.BYE):
            raise Rejected("kind", f"unexpected message kind {msg.kind.name} at the aggregator")
        common(self.limits, who, msg)
        part = None
        if msg.kind == Kind.TRAIN:
            part = check_contribution(
                self.limits, self.trains, self.sizes(), who, msg, len(self.pending), 2 * len(self.expected)
            )
            if who in self.whos.get((part, msg.epoch), set()):
                kept = self.pending.get((part, msg.epoch), {}).get(sender)
                w, n = msg.tensors[f"w_{part}"], int(msg.tensors["n"][0])
                if kept is not None and kept[1] == n and torch.equal(kept[0], w):
                    return who, part, "open"  # the same contribution again: its reply comes with the round's
                raise Rejected("step", f"{who} sent {part} for round {msg.epoch} twice")
            last = self.last.get(part)
            if last is not None and last["round"] == msg.epoch and who in last["contributors"]:
                return who, part, "sent"
            if (part, msg.epoch) in self.done or msg.epoch < self.closed.get(part, 0):
                raise Rejected("step", f"{who} sent {part} for round {msg.epoch}, which is closed")
            if self.mover and "power" not in msg.tensors:
                raise Rejected("shape", f"{who}: a moving split needs each device's power")
        return who, part, None

    def answer(self, sender: bytes | None, user, msg) -> None:
        who = (sender or b"?").decode("utf-8", "replace")
        try:
            who, part, copy = self.check(sender, user, msg)
        except Rejected as err:
            self.reject(sender, who, err.reason, str(err))
            return
        if self.notices is not None:
            self.notices.heard(who)
        if copy is not None:  # dropped and counted; a round already sent is answered again
            self.duplicates += 1
            self.rt.metrics.duplicates.labels(**self.rt.metrics.base).inc()
            self.rt.log.write("duplicate", source=who, partition=part, round=msg.epoch, answered=copy == "sent")
            if copy == "sent":
                self.reply(sender, round_reply(self.last[part], part))
        elif msg.kind == Kind.HELLO:
            self.reply(sender, Message(Kind.WELCOME))
        elif msg.kind == Kind.BYE:
            self.byes.add(who)
            self.save(bye=True)
            self.reply(sender, Message(Kind.BYE))
        else:
            self.contribute(sender, who, part, msg)

    def contribute(self, sender: bytes, who: str, part: str, msg: Message) -> None:
        key = (part, msg.epoch)
        round_ = self.pending.setdefault(key, {})
        self.whos.setdefault(key, set()).add(who)
        self.opened.setdefault(key, time.time())
        power = float(msg.tensors["power"][0]) if "power" in msg.tensors else None
        # copies: the received frame is not kept, and the average must not alias a peer's buffer
        round_[sender] = (msg.tensors[f"w_{part}"].clone(), int(msg.tensors["n"][0]), power)
        if msg.epoch == self.spec.training.epochs // getattr(self.spec.paradigm, "local_epochs", 1) - 1:
            self.last_round_in.add(who)
        if self.members[part] <= self.whos[key]:
            self.close(part, msg.epoch)

    def close(self, part: str, round_: int) -> None:
        key = (part, round_)
        self.closed[part] = max(self.closed.get(part, 0), round_ + 1)
        self.closed_by[key] = self.whos.pop(key, set())
        self.done[key] = self.average(part, round_, self.pending.pop(key), self.opened.pop(key))
        if not self.mover:
            self.send_round(round_, {part: self.done.pop(key)})
        elif all((p, round_) in self.done for p in self.expected):
            self.send_round(round_, {p: self.done.pop((p, round_)) for p in self.expected})


def run(args) -> int:
    return Aggregator(args).run()


def round_reply(last: dict, part: str) -> Message:
    """A round's answer to its contributors: the partition's average (and the cut, where it moves)."""
    out = Message(Kind.TRAIN_REPLY, epoch=last["round"]).add(f"w_{part}", last["avg"], Traffic.WEIGHTS)
    if last["cut"] is not None:
        out.add("cut", torch.tensor([last["cut"]], dtype=torch.int32), Traffic.CONTROL)
    return out


class SplitMover:
    """Where hfsl's cut goes next: the Q-learning agent over the spec's candidate cuts."""

    def __init__(self, rt: Runtime, paradigm):
        spec = rt.spec
        self.rt, self.cut = rt, spec.paradigm.split_after
        model = whole_model(paradigm.setup)
        meta = dataset_meta(spec.dataset)
        self.sizes = [sum(t.numel() for t in state_tensors(block)) for block in model]
        link = rt.plan.network
        cands = candidate_costs(model, meta.input_shape, sorted(spec.paradigm.candidates))
        self.agent = QAgent(cands, rate_bytes_s=(link.up.rate_bps or 50e6) / 8, seed=spec.seed).train(20000)
        rt.log.write(
            "session", status="agent", candidates=",".join(map(str, spec.paradigm.candidates)), start_cut=self.cut
        )

    def resplit(self, round_: int, averages: dict, powers: dict) -> tuple[dict, int]:
        a_low, a_medium = powers["low"], powers["medium"]
        cut = self.agent.choose(a_low, a_medium).cut
        whole = torch.cat([averages["low"], averages["medium"]])
        if cut != self.cut:
            self.rt.log.write(
                "resplit", round=round_, from_cut=self.cut, to_cut=cut, power_low=a_low, power_medium=a_medium
            )
            self.cut = cut
        boundary = sum(self.sizes[:cut])
        return {"low": whole[:boundary].clone(), "medium": whole[boundary:].clone()}, cut
