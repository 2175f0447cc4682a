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
from ..transport import Endpoint, Kind, Message, PeerTimeout, Traffic, WireError
from ..transport.wire import error_message
from .runtime import RoleFailed, Runtime


def run(args) -> int:
    rt = Runtime(args, "aggregator", "aggregator-0")
    spec = rt.spec

    def body():
        rt.limit(resolve_device(spec.aggregator.device))
        paradigm = get_paradigm(Setup(rt.experiment, dataset_meta(spec.dataset), rt.run_dir, rt.instance))
        k = spec.sources.replicas
        expected = {p: k for p in paradigm.aggregates}  # contributors per partition and round
        peers = sum(expected.values())
        ep = Endpoint(zmq.Context.instance(), zmq.ROUTER, args.bind, bind=True,
                      on_bytes=lambda d, t, n: rt.metrics.add_bytes("up" if d == "rx" else "down", t.label, n))
        rt.log.write("session", status="listening", address=ep.address, partitions=",".join(expected))
        byes: set[bytes] = set()
        idle = spec.training.reply_timeout_s * 2

        def reply(to: bytes, msg: Message) -> None:
            msg.experiment, msg.sender = rt.experiment.name, rt.instance
            ep.send(msg, to=to)

        def reject(to: bytes | None, reason: str, text: str) -> None:
            rt.metrics.malformed.labels(**rt.metrics.base, reason=reason).inc()
            rt.log.write("session", status="rejected", reason=reason, error=text)
            if to is not None:
                ep.send(error_message(text, rt.experiment.name, rt.instance), to=to)

        pending: dict[tuple[str, int], dict[bytes, tuple[torch.Tensor, int, float | None]]] = {}
        opened: dict[tuple[str, int], float] = {}
        done: dict[tuple[str, int], tuple[dict, torch.Tensor, float | None]] = {}  # averaged, not yet sent
        mover = SplitMover(rt, paradigm) if getattr(spec.paradigm, "candidates", None) else None

        def average(part: str, round_: int, contributions: dict, since: float):
            """(the contributors, their weighted average, the lowest power they reported)."""
            t0 = time.perf_counter()
            try:
                avg = weighted_average([w for w, _, _ in contributions.values()],
                                       [n for _, n, _ in contributions.values()])
            except ValueError as err:
                for to in contributions:
                    reject(to, "content", f"{part} round {round_}: {err}")
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
            except PeerTimeout:
                waiting = "; ".join(f"{p} round {r}: {len(c)}/{expected[p]} in" for (p, r), c in pending.items())
                raise RoleFailed(f"no message for {idle:.0f} s; {len(byes)}/{peers} devices finished"
                                 + (f"; waiting for {waiting}" if waiting else ""), code=3) from None
            except WireError as err:
                reject(getattr(err, "sender", None), "wire", f"malformed message: {err}")
                continue
            if msg.kind == Kind.HELLO:
                reply(sender, Message(Kind.WELCOME))
            elif msg.kind == Kind.BYE:
                byes.add(sender)
                reply(sender, Message(Kind.BYE))
            elif msg.kind == Kind.TRAIN:
                names = [n for n in msg.tensors if n.startswith("w_")]
                part = names[0][2:] if len(names) == 1 else None
                if part not in expected or "n" not in msg.tensors:
                    reject(sender, "content", f"{msg.sender!r}: a contribution needs one w_<partition> tensor "
                                              f"({', '.join('w_' + p for p in expected)}) and n")
                    continue
                key = (part, msg.epoch)
                round_ = pending.setdefault(key, {})
                if sender in round_:
                    reject(sender, "content", f"{msg.sender!r} sent {part} for round {msg.epoch} twice")
                    continue
                opened.setdefault(key, time.time())
                power = float(msg.tensors["power"][0]) if "power" in msg.tensors else None
                if mover and power is None:
                    reject(sender, "content", f"{msg.sender!r}: a moving split needs each device's power")
                    continue
                round_[sender] = (msg.tensors[f"w_{part}"], int(msg.tensors["n"][0]), power)
                if len(round_) < expected[part]:
                    continue
                done[key] = average(part, msg.epoch, pending.pop(key), opened.pop(key))
                if not mover:
                    send_round(msg.epoch, {part: done.pop(key)})
                elif all((p, msg.epoch) in done for p in expected):
                    send_round(msg.epoch, {p: done.pop((p, msg.epoch)) for p in expected})
            else:
                reject(sender, "unexpected", f"unexpected message kind {msg.kind.name} at the aggregator")

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
