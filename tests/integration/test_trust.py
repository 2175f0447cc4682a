"""Issue 14: only the experiment's own roles can speak, and no message can kill a role.

Live runs (local executor, real processes on loopback) with a hostile peer beside them."""

from __future__ import annotations

import json
import random
import stat
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import zmq
import zmq.utils.monitor

from splitbench.executors import LocalExecutor
from splitbench.spec import Experiment
from splitbench.transport import Endpoint, Kind, Message, Security, Traffic, bound_socket, load_keyring
from support import experiment_doc
from support.helpers import prom_samples

pytestmark = pytest.mark.integration

HFSL = dict(
    paradigm={"name": "hfsl", "splitAfter": 4, "localEpochs": 1},
    dataset={"name": "synthetic", "samplesPerSource": 96, "testSamples": 64},
    training={"epochs": 1, "batchSize": 32, "lr": 0.01, "replyTimeoutS": 60},
    network={"profile": "wifi6"},
)


def start(tmp_path: Path, name: str, **overrides):
    """The local executor in a thread; returns (thread, result holder, run folder)."""
    exp = Experiment.model_validate(experiment_doc(name=name, **overrides))
    out: dict = {}
    t = threading.Thread(
        target=lambda: out.update(result=LocalExecutor(tmp_path, cpu_limit="off", quiet=True, timeout_s=240).run(exp))
    )
    t.start()
    return t, out, tmp_path / name


class Staged:
    """An experiment's processes as the local executor plans them, started in two stages:
    the listeners (servers, aggregator, relay) first, the sources when the test says."""

    def __init__(self, tmp_path: Path, name: str, **overrides):
        import os
        import subprocess

        from splitbench.roleplan import role_names as role_instances
        from splitbench.transport import make_keys

        self.exp = Experiment.model_validate(experiment_doc(name=name, **overrides))
        self.run_dir = tmp_path / name
        self.run_dir.mkdir(parents=True)
        (self.run_dir / "spec.yaml").write_text(self.exp.to_yaml())
        make_keys(self.run_dir / "keys", role_instances(self.exp.spec))
        self.plan = [
            (role.name, argv)
            for role, argv in LocalExecutor(tmp_path, cpu_limit="off").processes(self.exp, self.run_dir)
        ]
        self.ports = {inst: int(argv[argv.index("--metrics-port") + 1]) for inst, argv in self.plan}
        self.t0 = time.time()
        self.procs: dict = {}
        self._popen = lambda argv, log: subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )

    def start(self, sources: bool) -> None:
        for inst, argv in self.plan:
            if inst.startswith("source-") == sources:
                self.procs[inst] = self._popen(argv, open(self.run_dir / f"{inst}.log", "w"))

    def finish(self, timeout_s: float = 180) -> dict[str, int]:
        from splitbench.record import merge

        deadline = time.time() + timeout_s
        codes = {}
        try:
            for inst, p in self.procs.items():
                codes[inst] = p.wait(max(1.0, deadline - time.time()))
        finally:
            for p in self.procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
            merge(self.run_dir, self.t0)
        return codes


def listening(run_dir: Path, instances: list[str], timeout_s: float = 120) -> dict[str, str]:
    """Each instance's bound address, read from its `listening` event."""
    deadline, found = time.time() + timeout_s, {}
    while time.time() < deadline and len(found) < len(instances):
        for inst in instances:
            f = run_dir / f"{inst}.events.jsonl"
            if inst not in found and f.exists():
                for line in f.read_text().splitlines():
                    e = json.loads(line)
                    if e.get("status") == "listening":
                        found[inst] = e["address"]
        time.sleep(0.05)
    assert len(found) == len(instances), f"not listening in time: {set(instances) - set(found)}"
    return found


def keyed(ctx, run_dir: Path, as_instance: str, address: str, peer: str, rid: str) -> Endpoint:
    """A DEALER holding a real role's key of this run (an insider), with any routing id."""
    sec = Security("curve", load_keyring(run_dir / "keys", as_instance))
    # unlimited receive queue: no ERROR reply is dropped, so the test can wait for every one
    return Endpoint(ctx, zmq.DEALER, address, bind=False, identity=rid, security=sec, peer=peer, sndtimeo_s=30, hwm=0)


def rejected(run_dir: Path, instances) -> dict[str, float]:
    out: dict[str, float] = {}
    for inst in instances:
        for s in prom_samples(run_dir / f"{inst}.prom", "splitbench_rejected_messages"):
            if s.name.endswith("_total"):
                out[s.labels["reason"]] = out.get(s.labels["reason"], 0) + s.value
    return out


def train(exp: str, sender: str = "source-0", *, y=None, act=None, epoch=0, step=0, kind=Kind.TRAIN) -> Message:
    m = Message(kind, exp, sender, epoch, step)
    m.add("act", torch.zeros(4, 8) if act is None else act, Traffic.ACTIVATION)
    return m.add("y", torch.zeros(4, dtype=torch.uint8) if y is None else y, Traffic.LABEL)


def bad_server_messages(exp: str, rng: random.Random):
    """Well-framed messages, each with exactly one thing wrong, from source-0's key."""
    big = 10**15
    makers = [
        lambda: train(exp, y=torch.tensor([0, 1, 10, 2], dtype=torch.uint8)),  # label == numClasses
        lambda: train(exp, y=torch.tensor([0, -1, 3, 2], dtype=torch.int16)),  # negative label
        lambda: train(exp, y=torch.zeros(4)),  # float labels
        lambda: train(exp, act=torch.full((4, 8), float("nan"))),  # non-finite
        lambda: train(exp, act=torch.zeros(3, 8)),  # batch mismatch
        lambda: train(exp, act=torch.zeros(4, 8, dtype=torch.int32)),  # dtype
        lambda: train("other-experiment"),  # experiment
        lambda: train(exp, sender="source-1"),  # claims another
        lambda: train(exp, epoch=7),  # beyond schedule
        lambda: train(exp, step=big),  # beyond schedule
        lambda: train(exp, kind=Kind.TRAIN_REPLY),  # a server's kind
        lambda: Message(Kind.WELCOME, exp, "source-0"),
        lambda: Message(Kind.HELLO, exp, "source-0").add("samples", torch.tensor([big]), Traffic.CONTROL),
        lambda: Message(Kind.HELLO, exp, "source-0").add("samples", torch.tensor([0]), Traffic.CONTROL),
        lambda: Message(Kind.HELLO, exp, "source-0").add(
            "samples", torch.tensor([], dtype=torch.int64), Traffic.CONTROL
        ),
        lambda: Message(Kind.EVAL, exp, "source-0").add("act", torch.zeros(2, 3), Traffic.EVAL),  # no labels
        lambda: train(exp).add("extra", torch.zeros(1), Traffic.CONTROL),
    ]
    while True:
        yield rng.choice(makers)()


def bad_contributions(exp: str, rng: random.Random, whole: int):
    def contrib(part="low", w=None, n=None, epoch=0, sender="source-0", exp_=exp, extra=False):
        m = Message(Kind.TRAIN, exp_, sender, epoch)
        m.add(f"w_{part}", torch.zeros(whole) if w is None else w, Traffic.WEIGHTS)
        m.add("n", torch.tensor([32]) if n is None else n, Traffic.CONTROL)
        if extra:
            m.add("w_medium", torch.zeros(3), Traffic.WEIGHTS)
        return m

    makers = [
        lambda: contrib(n=torch.tensor([], dtype=torch.int64)),  # the empty sample count that crashed it
        lambda: contrib(n=torch.tensor([0])),
        lambda: contrib(n=torch.tensor([-5])),
        lambda: contrib(n=torch.tensor([10**15])),  # take over the average
        lambda: contrib(w=torch.zeros(whole + 1)),
        lambda: contrib(w=torch.zeros(whole, dtype=torch.float64)),
        lambda: contrib(w=torch.full((whole,), float("inf"))),
        lambda: contrib(part="medium"),  # a source's key, a server's partition
        lambda: contrib(part="nothing"),
        lambda: contrib(epoch=99),
        lambda: contrib(exp_="other-experiment"),
        lambda: contrib(sender="aggregator-0"),
        lambda: contrib(extra=True),
        lambda: Message(Kind.EVAL, exp, "source-0"),
    ]
    while True:
        yield rng.choice(makers)()


def relay_messages(exp: str):
    """For the relay: garbage, a server's kind, another experiment, then a message it would
    forward if only the plan routed its id."""
    while True:
        yield [b"SB\x01\x03" + bytes(16), b"x"]  # declares 0 tensors, sends 1
        yield Message(Kind.TRAIN_REPLY, exp, "source-0")
        yield Message(Kind.TRAIN, "other-experiment", "source-0")
        yield train(exp)


def live_rejected(port: int) -> float:
    """The role's splitbench_rejected_messages_total, summed over reasons, scraped live."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "splitbench_rejected_messages_total"
    )


def blast(ep: Endpoint, messages, count: int, port: int) -> None:
    """Send `count` messages; return once the role has counted as many more refusals (a
    fence: closing earlier could drop what is still queued)."""
    before = live_rejected(port)
    for _ in range(count):
        m = next(messages)
        ep.send(m) if isinstance(m, Message) else ep.sock.send_multipart(m)
        while ep.sock.poll(0):  # the ERROR replies (a ROUTER may drop some when we lag)
            ep.sock.recv_multipart()
    deadline = time.time() + 60
    while live_rejected(port) < before + count and time.time() < deadline:
        while ep.sock.poll(100):
            ep.sock.recv_multipart()
    assert live_rejected(port) == before + count


def close(ep: Endpoint) -> None:
    """Close after everything queued has gone out (the counts compare with what was sent)."""
    ep.sock.setsockopt(zmq.LINGER, 30_000)
    ep.close()


def test_ten_thousand_bad_messages_kill_nothing_and_are_all_counted(tmp_path):
    run = Staged(tmp_path, "fuzz", **HFSL)
    run_dir = run.run_dir
    run.start(sources=False)
    roles = ["server-0", "aggregator-0", "link-0"]
    addr = listening(run_dir, roles)
    exp = "fuzz"
    ctx = zmq.Context()
    rng = random.Random(14)
    from splitbench.models import build_model, split
    from splitbench.paradigms.federated import state_tensors

    low, _ = split(build_model("small_cnn"), 4)
    whole = sum(t.numel() for t in state_tensors(low))
    sent = 0
    try:
        server = keyed(ctx, run_dir, "source-0", addr["server-0"], "server-0", "fuzz-server")
        blast(server, bad_server_messages(exp, rng), 4000, run.ports["server-0"])
        agg = keyed(ctx, run_dir, "source-0", addr["aggregator-0"], "aggregator-0", "fuzz-agg")
        blast(agg, bad_contributions(exp, rng, whole), 3000, run.ports["aggregator-0"])
        sent += 7000
        # at the relay: routing ids the key does not own, ids the plan does not route, and
        # for a routed id: garbage, a server's kind, another experiment
        for rid, n in (("server-7>aggregator", 400), ("fuzz", 400), ("source-0>nowhere", 2200)):
            relay = keyed(ctx, run_dir, "source-0", addr["link-0"], "link-0", rid)
            blast(relay, relay_messages(exp), n, run.ports["link-0"])
            sent += n
            close(relay)
        close(server)
        close(agg)
        ctx.term()
    finally:
        ctx.destroy(linger=0)
    run.start(sources=True)
    codes = run.finish()
    assert set(codes.values()) == {0}, codes
    counts = rejected(run_dir, roles)
    assert sum(counts.values()) == sent == 10_000, counts
    assert "auth" not in counts
    assert {
        "label",
        "value",
        "shape",
        "samples",
        "sender",
        "identity",
        "route",
        "wire",
        "kind",
        "experiment",
        "step",
    } <= set(counts)
    rec = pd.read_parquet(run_dir / "record.parquet")
    steps = rec[rec["event"] == "step"]
    assert len(steps) == 2 * 3 and steps["loss"].notna().all()
    agg_rows = rec[rec["event"] == "aggregate"]
    assert (agg_rows["samples"] == 2 * 96).all() and len(agg_rows) == 2  # no forged n_k got in
    assert not list(run_dir.glob("*.log")) or all("Traceback" not in p.read_text() for p in run_dir.glob("*.log"))


def _handshakes(mon: zmq.Socket, seconds: float) -> list[int]:
    events, deadline = [], time.time() + seconds
    while time.time() < deadline:
        if mon.poll(100):
            events.append(zmq.utils.monitor.recv_monitor_message(mon)["event"])
    return events


def test_an_unkeyed_peer_never_gets_in_and_changes_nothing(tmp_path):
    doc = dict(
        paradigm={"name": "fedavg", "localEpochs": 1},
        dataset={"name": "synthetic", "samplesPerSource": 96, "testSamples": 64},
        training={"epochs": 1, "batchSize": 32, "lr": 0.01, "replyTimeoutS": 60},
        network={"profile": "wifi6"},
    )
    clean_t, clean, _ = start(tmp_path / "clean", "plain", **doc)
    clean_t.join(240)
    run = Staged(tmp_path / "attacked", "plain", **doc)  # the sources start once the intruders tried
    run_dir = run.run_dir
    run.start(sources=False)
    addr = listening(run_dir, ["aggregator-0", "link-0"])
    ctx = zmq.Context()
    outcomes = []
    try:
        for target in addr.values():
            s = ctx.socket(zmq.DEALER)  # plain pyzmq, NULL mechanism
            s.setsockopt(zmq.LINGER, 0)
            mon = s.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED
                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                | zmq.EVENT_DISCONNECTED
            )
            s.connect(target)
            for _ in range(3):
                s.send_multipart([b"SB\x01\x07" + bytes(16)], flags=zmq.NOBLOCK) if s.poll(0, zmq.POLLOUT) else None
            outcomes.append(_handshakes(mon, 1.5))
            assert not s.poll(200), "an unkeyed peer got a reply"
            s.disable_monitor()
            mon.close()
            s.close()
        # a key of another experiment (a finished run's) is refused by ZAP and counted
        # a finished run's source key, aimed at this run's aggregator (its public key is no secret)
        stranger = Security("curve", load_keyring(clean["result"].run_dir / "keys", "source-0"))
        stranger.keyring.publics["aggregator-0"] = load_keyring(run_dir / "keys", "aggregator-0").public
        old = bound_socket(ctx, zmq.DEALER, bind=False, security=stranger, peer="aggregator-0", identity=b"source-0")
        mon = old.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        old.connect(addr["aggregator-0"])
        events, deadline = [], time.time() + 20
        while zmq.EVENT_HANDSHAKE_FAILED_AUTH not in events and time.time() < deadline:
            events += _handshakes(mon, 0.5)
        outcomes.append(events)
        old.disable_monitor()
        mon.close()
        old.close(linger=0)
    finally:
        ctx.destroy(linger=0)
    run.start(sources=True)
    assert set(run.finish().values()) == {0}
    assert all(zmq.EVENT_HANDSHAKE_SUCCEEDED not in events for events in outcomes), outcomes
    assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in outcomes[-1]
    assert rejected(run_dir, ["aggregator-0"]).get("auth", 0) >= 1
    a = pd.read_parquet(clean["result"].run_dir / "record.parquet")
    b = pd.read_parquet(run_dir / "record.parquet")
    cols = [c for c in a.columns if c.endswith("_bytes") and c.startswith(("up_", "down_"))]
    for frame in (a, b):
        frame.sort_values(["instance", "event", "step"], inplace=True, kind="stable")
    pick = lambda r: r[r["event"].isin(["step", "round", "eval"])][["instance", "event", *cols, "accuracy"]]
    pd.testing.assert_frame_equal(pick(a).reset_index(drop=True), pick(b).reset_index(drop=True))
    # keys stay private to the run folder
    keys = run_dir / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in keys.iterdir())
    secret = (keys / "source-0.key").read_text()
    for f in run_dir.iterdir():
        if f.is_file() and f.suffix in (".jsonl", ".log", ".yaml", ".prom", ".txt", ".json"):
            assert secret not in f.read_text(errors="replace"), f.name


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_gibibyte_flood_keeps_the_server_within_its_memory_bound(tmp_path):
    """1.1 GiB of 1 MiB messages from an insider's key, as fast as it can send: the server's
    peak RSS stays under its idle peak plus what its bounded queues can hold
    ((INBOX_MAX + 2 x HWM) messages) plus 64 MiB of slack."""
    from splitbench.roles.server import INBOX_MAX
    from splitbench.transport.endpoint import DEFAULT_HWM

    run = Staged(tmp_path, "flood", **HFSL)
    run.start(sources=False)
    addr = listening(run.run_dir, ["server-0"])
    pid = run.procs["server-0"].pid
    time.sleep(1.0)
    idle = _peak_rss_mib(pid)
    ctx = zmq.Context()
    mib = 1 << 20
    count = 1100
    bad = Message(Kind.TRAIN, "flood", "source-0", 0, 0).add(
        "act", torch.full((4, mib // 16), float("nan")), Traffic.ACTIVATION
    )
    bad.add("y", torch.zeros(4, dtype=torch.uint8), Traffic.LABEL)
    try:
        ep = keyed(ctx, run.run_dir, "source-0", addr["server-0"], "server-0", "flood")
        t0 = time.time()
        blast(ep, iter(lambda: bad, None), count, run.ports["server-0"])
        seconds = time.time() - t0
        peak = _peak_rss_mib(pid)
        close(ep)
    finally:
        ctx.destroy(linger=0)
        for p in run.procs.values():
            p.kill()
            p.wait()
    bound = idle + (INBOX_MAX + 2 * DEFAULT_HWM) * 1.0 + 64
    print(
        f"flood: {count} MiB in {seconds:.1f} s; server peak RSS {idle:.0f} MiB idle -> {peak:.0f} MiB "
        f"(bound {bound:.0f} MiB)"
    )
    assert count * mib >= 1 << 30
    assert peak <= bound
