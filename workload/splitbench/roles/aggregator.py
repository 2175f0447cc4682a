"""The aggregator (fedavg's server; hfsl's high-computational device): collects one round's
weights of a partition from every device that trains it, averages them weighted by
sample count (FedAvg), and answers each device with the average.

Partitions are independent: in hfsl the K low devices' W_l and the K medium devices' W_m
are averaged apart, each as soon as its last contribution arrives. Where hfsl's split may
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

import time

import torch
import zmq

from ..data import dataset_meta
from ..devices import resolve_device
from ..paradigms import Setup, get_paradigm
from ..link import resolve_network
from ..paradigms.base import whole_model
from ..paradigms.federated import state_tensors, weighted_average
from ..planning.hfsl import QAgent, candidate_costs
from ..transport import Endpoint, Kind, Message, PeerGone, PeerTimeout, Traffic, WireError
from ..transport.wire import error_message
from .checks import Limits, Rejected, Rejections, check_contribution, common, identity_of, message_cap
from .peer import role_security
from ..roleplan import role_name
from .runtime import RoleFailed, Runtime


def run(args) -> int:
    rt = Runtime(args, "aggregator", "aggregator-0")
    spec = rt.spec
    rejections = Rejections(rt)

    def body():
        security = role_security(rt, on_denied=lambda text: rejections("?", "auth", text))
        rt.limit(resolve_device(spec.aggregator.device))
        paradigm = get_paradigm(Setup(rt.experiment, dataset_meta(spec.dataset), rt.run_dir, rt.instance))
        k = spec.sources.replicas
        expected = {p: k for p in paradigm.aggregates}  # contributors per partition and round
        peers = sum(expected.values())
        sources = {role_name("source", i) for i in range(k)}
        servers = {role_name("server", j) for j in range(paradigm.servers())}
        # who may contribute what: sources train "whole" (fedavg) or "low" (hfsl), servers "medium"
        trains = {p: (servers if p == "medium" else sources) for p in expected}
        limits = Limits(rt.experiment)
        ep = Endpoint(zmq.Context.instance(), zmq.ROUTER, args.bind, bind=True, security=security,
                      max_msg_bytes=message_cap(spec),
                      on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "rx" else "down", t.label, n))
        rt.log.write("session", status="listening", address=ep.address, partitions=",".join(expected),
                     auth=security.mode)
        byes: set[str] = set()
        idle = spec.training.reply_timeout_s * 2
        block_sizes = [sum(t.numel() for t in state_tensors(block)) for block in whole_model(paradigm.setup)]

        def reply(to: bytes, msg: Message) -> None:
            msg.experiment, msg.sender = rt.experiment.name, rt.instance
            try:
                ep.send(msg, to=to)
            except PeerGone:
                pass  # a ROUTER drops what it cannot route; a gone peer shows up as a missing contribution

        def reject(to: bytes | None, who: str, reason: str, text: str) -> None:
            rejections(who, reason, text)
            if to is not None:
                reply(to, error_message(text, rt.experiment.name, rt.instance))

        def sizes() -> dict[str, int]:
            """Values each partition's contribution has this round (the cut may have moved)."""
            if "whole" in expected:
                return {"whole": sum(block_sizes)}
            cut = mover.cut if mover else spec.paradigm.split_after
            return {"low": sum(block_sizes[:cut]), "medium": sum(block_sizes[cut:])}

        pending: dict[tuple[str, int], dict[bytes, tuple[torch.Tensor, int, float | None]]] = {}
        opened: dict[tuple[str, int], float] = {}
        closed: dict[str, int] = {}
        whos: dict[tuple[str, int], set[str]] = {}  # who contributed to each open round  # per partition: rounds below this are averaged and sent
        done: dict[tuple[str, int], tuple[dict, torch.Tensor, float | None]] = {}  # averaged, not yet sent
        mover = SplitMover(rt, paradigm) if getattr(spec.paradigm, "candidates", None) else None

        def average(part: str, round_: int, contributions: dict, since: float):
            """(the contributors, their weighted average, the lowest power they reported)."""
            t0 = time.perf_counter()
            try:
                avg = weighted_average([w for w, _, _ in contributions.values()],
                                       [n for _, n, _ in contributions.values()])
            except ValueError as err:  # checked contributions cannot get here; if they do, say so and stop
                raise RoleFailed(f"{part} round {round_}: {err}", code=4) from None
            powers = [p for _, _, p in contributions.values() if p is not None]
            rt.log.write("aggregate", partition=part, round=round_, contributors=len(contributions),
                         samples=sum(n for _, n, _ in contributions.values()), values=int(avg.numel()),
                         wait_s=time.time() - since, average_s=time.perf_counter() - t0,
                         power_min=min(powers) if powers else None)
            return contributions, avg, min(powers) if powers else None

        def send_round(round_: int, parts: dict) -> None:
            averages = {p: avg for p, (_, avg, _) in parts.items()}
            cut = None
            if mover:
                averages, cut = mover.resplit(round_, averages, {p: power for p, (_, _, power) in parts.items()})
            for p, (contributions, _, _) in parts.items():
                out = Message(Kind.TRAIN_REPLY, epoch=round_).add(f"w_{p}", averages[p], Traffic.WEIGHTS)
                if cut is not None:
                    out.add("cut", torch.tensor([cut], dtype=torch.int32), Traffic.CONTROL)
                for to in contributions:
                    reply(to, out)

        while len(byes) < peers:
            try:
                sender, msg, _ = ep.recv(idle)
                user = ep.last_user
            except PeerTimeout:
                waiting = "; ".join(f"{p} round {r}: {len(c)}/{expected[p]} in" for (p, r), c in pending.items())
                raise RoleFailed(f"no message for {idle:.0f} s; {len(byes)}/{peers} devices finished"
                                 + (f"; waiting for {waiting}" if waiting else ""), code=3) from None
            except WireError as err:
                sender, user, msg = getattr(err, "sender", None), getattr(err, "user", None), err
            who = (sender or b"?").decode("utf-8", "replace")
            try:
                who = identity_of(sender, user, security.curve)
                if isinstance(msg, WireError):
                    raise Rejected("wire", f"malformed message: {msg}")
                if who not in sources | servers or (who in servers and not paradigm.servers()):
                    raise Rejected("sender", f"{who[:64]!r} is not a device of this experiment")
                if msg.kind not in (Kind.HELLO, Kind.TRAIN, Kind.BYE):
                    raise Rejected("kind", f"unexpected message kind {msg.kind.name} at the aggregator")
                common(limits, who, msg)
                if msg.kind == Kind.TRAIN:
                    part = check_contribution(limits, trains, sizes(), who, msg, len(pending), 2 * len(expected))
                    if who in whos.get((part, msg.epoch), set()):
                        raise Rejected("step", f"{who} sent {part} for round {msg.epoch} twice")
                    if (part, msg.epoch) in done or msg.epoch < closed.get(part, 0):
                        raise Rejected("step", f"{who} sent {part} for round {msg.epoch}, which is closed")
                    if mover and "power" not in msg.tensors:
                        raise Rejected("shape", f"{who}: a moving split needs each device's power")
            except Rejected as err:
                reject(sender, who, err.reason, str(err))
                continue
            if msg.kind == Kind.HELLO:
                reply(sender, Message(Kind.WELCOME))
            elif msg.kind == Kind.BYE:
                byes.add(who)
                reply(sender, Message(Kind.BYE))
            else:
                key = (part, msg.epoch)
                round_ = pending.setdefault(key, {})
                whos.setdefault(key, set()).add(who)
                opened.setdefault(key, time.time())
                power = float(msg.tensors["power"][0]) if "power" in msg.tensors else None
                # copies: the received frame is not kept, and the average must not alias a peer's buffer
                round_[sender] = (msg.tensors[f"w_{part}"].clone(), int(msg.tensors["n"][0]), power)
                if len(round_) < expected[part]:
                    continue
                closed[part] = msg.epoch + 1
                whos.pop(key, None)
                done[key] = average(part, msg.epoch, pending.pop(key), opened.pop(key))
                if not mover:
                    send_round(msg.epoch, {part: done.pop(key)})
                elif all((p, msg.epoch) in done for p in expected):
                    send_round(msg.epoch, {p: done.pop((p, msg.epoch)) for p in expected})
        for d, n in ep.transport.items():
            rt.metrics.transport_bytes.labels(**rt.metrics.base, direction=d, auth=security.mode).inc(n)
        rt.log.write("session", status="aggregated", auth=security.mode, transport_rx_bytes=ep.transport["rx"],
                     transport_tx_bytes=ep.transport["tx"], rejected=rejections.total)

    return rt.run(body)


class SplitMover:
    """Where hfsl's cut goes next: the Q-learning agent over the spec's candidate cuts."""

    def __init__(self, rt: Runtime, paradigm):
        spec = rt.spec
        self.rt, self.cut = rt, spec.paradigm.split_after
        model = whole_model(paradigm.setup)
        meta = dataset_meta(spec.dataset)
        self.sizes = [sum(t.numel() for t in state_tensors(block)) for block in model]
        link = resolve_network(spec.network)
        cands = candidate_costs(model, meta.input_shape, sorted(spec.paradigm.candidates))
        self.agent = QAgent(cands, rate_bytes_s=(link.up.rate_bps or 50e6) / 8, seed=spec.seed).train(20000)
        rt.log.write("session", status="agent", candidates=",".join(map(str, spec.paradigm.candidates)),
                     start_cut=self.cut)

    def resplit(self, round_: int, averages: dict, powers: dict) -> tuple[dict, int]:
        a_low, a_medium = powers["low"], powers["medium"]
        cut = self.agent.choose(a_low, a_medium).cut
        whole = torch.cat([averages["low"], averages["medium"]])
        if cut != self.cut:
            self.rt.log.write("resplit", round=round_, from_cut=self.cut, to_cut=cut, power_low=a_low,
                              power_medium=a_medium)
            self.cut = cut
        boundary = sum(self.sizes[:cut])
        return {"low": whole[:boundary].clone(), "medium": whole[boundary:].clone()}, cut
