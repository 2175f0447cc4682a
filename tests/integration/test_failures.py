"""Bad peers, dead peers and Ctrl-C, with real processes on loopback."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import zmq

from splitbench.executors.local import free_port
from splitbench.transport import Endpoint, Kind, Message, Traffic
from support import experiment_doc
from support.helpers import close_peers, fedavg_contribution, small_cnn_values
from support.helpers import processes_mentioning, prom_samples

pytestmark = pytest.mark.integration


def role(name, spec, run_dir, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "splitbench",
            "role",
            name,
            "--spec",
            str(spec),
            "--run-dir",
            str(run_dir),
            "--cpu-limit",
            "off",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_server_answers_garbage_with_errors_and_keeps_serving(tmp_path, write_spec):
    # plain sockets: content checks here; what CURVE keeps out is tests/integration/test_trust.py's
    spec = write_spec(
        experiment_doc(
            sources={"replicas": 1},
            training={"epochs": 1, "batchSize": 32, "maxStepsPerEpoch": 2, "replyTimeoutS": 60},
            transport={"auth": "none"},
        )
    )
    addr = f"tcp://127.0.0.1:{free_port()}"
    server = role("server", spec, tmp_path, "--bind", addr)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.ROUTING_ID, b"intruder")
    raw.connect(addr)
    rng = random.Random(7)
    garbage = [[rng.randbytes(rng.randrange(1, 40))] for _ in range(20)]
    garbage += [[b"SB\x01\x03" + bytes(16)] + [b"x"]]  # declares 0 tensors, sends 1
    try:
        for frames in garbage:
            raw.send_multipart(frames)
            assert raw.poll(30_000), "server stopped answering"
            reply = raw.recv_multipart()
            assert reply[0][3] == Kind.ERROR
        # well-formed, but not what a split server can use
        ep = Endpoint(ctx, zmq.DEALER, addr, bind=False, identity="source-0")
        ep.send(Message(Kind.TRAIN, "t", "source-0").add("pixels", torch.zeros(2, 2), Traffic.INPUT))
        _, reply, _ = ep.recv(30)
        assert reply.kind is Kind.ERROR and "unexpected tensors ['pixels']" in reply.error_text()
        ep.send(Message(Kind.WELCOME, "t", "source-0"))
        _, reply, _ = ep.recv(30)
        assert "WELCOME is not a message a source sends" in reply.error_text()
        ep.close()
        # and a real source still trains to the end
        source = role("source", spec, tmp_path, "--index", "0", "--connect", addr)
        assert source.wait(120) == 0, source.stdout.read()
        assert server.wait(60) == 0, server.stdout.read()
    finally:
        raw.close()
        ctx.term()
        for p in (server,):
            if p.poll() is None:
                p.kill()
    reasons = {
        s.labels["reason"]: s.value
        for s in prom_samples(tmp_path / "server-0.prom", "splitbench_rejected_messages")
        if s.name.endswith("_total")
    }
    assert reasons == {"wire": len(garbage), "shape": 1, "kind": 1}


def test_aggregator_averages_by_sample_count_and_rejects_bad_contributions(tmp_path, write_spec):
    """Two fake devices against a real aggregator: garbage, a contribution of no partition,
    a second contribution to an open round and weights of the wrong size are refused with
    ERROR replies; a round's average is weighted by n_k; a missing device ends the role
    with a line naming what it waited for."""
    spec = write_spec(
        experiment_doc(
            paradigm={"name": "fedavg"}, training={"epochs": 2, "replyTimeoutS": 4}, transport={"auth": "none"}
        )
    )
    addr = f"tcp://127.0.0.1:{free_port()}"
    agg = role("aggregator", spec, tmp_path, "--bind", addr)
    ctx = zmq.Context()
    a = Endpoint(ctx, zmq.DEALER, addr, bind=False, identity="source-0")
    b = Endpoint(ctx, zmq.DEALER, addr, bind=False, identity="source-1")
    size = small_cnn_values()
    contribution = fedavg_contribution
    try:
        a.sock.send_multipart([b"not a message"])
        assert a.recv(30)[1].kind is Kind.ERROR
        a.send(
            Message(Kind.TRAIN, "t")
            .add("w_low", torch.zeros(2), Traffic.WEIGHTS)
            .add("n", torch.tensor([1]), Traffic.CONTROL)
        )
        assert "one w_<partition> tensor (w_whole)" in a.recv(30)[1].error_text()
        a.send(contribution(1.0, 1))
        a.send(contribution(1.0, 1))  # the same again (a re-send): dropped and counted, answered with the round
        a.send(contribution(2.0, 1))  # another contribution to the same round: refused
        assert "sent whole for round 0 twice" in a.recv(30)[1].error_text()
        b.send(contribution(3.0, 3))
        for ep in (a, b):
            _, reply, _ = ep.recv(30)
            assert set(reply.tensors["w_whole"].tolist()) == {2.5}  # 1/4 a + 3/4 b
        b.send(contribution(1.0, 1, epoch=1, values=size + 1))  # weights of the wrong size: refused alone
        assert f"has {size + 1} values, this round's are {size}" in b.recv(30)[1].error_text()
        b.send(contribution(1.0, 10**15, epoch=1))  # a sample count that would take over the average
        assert "outside 1..128" in b.recv(30)[1].error_text()
        a.send(contribution(1.0, 1, epoch=1))
        assert agg.wait(60) == 3, agg.stdout.read()  # round 1 never completes: b sent nothing usable
        assert "waiting for whole round 1: 1/2 in" in agg.stdout.read()
    finally:
        close_peers(ctx, agg, a, b)
    dropped = [
        s.value
        for s in prom_samples(tmp_path / "aggregator-0.prom", "splitbench_duplicates_dropped")
        if s.name.endswith("_total")
    ]
    assert dropped == [1]
    agg2 = role("aggregator", spec, tmp_path / "2", "--bind", f"tcp://127.0.0.1:{free_port()}")
    assert agg2.wait(60) == 3
    assert "no message for 8 s; 0/2 devices finished" in agg2.stdout.read()


def test_a_source_facing_a_dead_server_fails_with_one_line(tmp_path, write_spec):
    spec = write_spec(
        experiment_doc(training={"epochs": 1, "batchSize": 32, "replyTimeoutS": 2}, transport={"auth": "none"})
    )
    source = role("source", spec, tmp_path, "--index", "0", "--connect", f"tcp://127.0.0.1:{free_port()}")
    out, _ = source.communicate(timeout=120)
    assert source.returncode == 3
    last = out.strip().splitlines()[-1]
    assert last.startswith("source-0: no reply from the server") and "within 2 s" in last
    assert "Traceback" not in out


def test_ctrl_c_stops_every_role_and_keeps_the_record(tmp_path, write_spec):
    spec = write_spec(
        experiment_doc(name="long", network={"profile": "low-bitrate"}, training={"epochs": 5, "batchSize": 32})
    )
    runs = tmp_path / "runs"
    p = subprocess.Popen(
        [sys.executable, "-m", "splitbench", "run", str(spec), "--runs", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    events = runs / "long" / "source-0.events.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (events.exists() and '"event": "step"' in events.read_text()):
        time.sleep(0.5)
    assert events.exists(), "no step recorded in time"
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "Traceback" not in out
    time.sleep(0.5)
    assert processes_mentioning(str(runs / "long")) == []
    rec = pd.read_parquet(runs / "long" / "record.parquet")
    assert (rec["event"] == "step").sum() >= 1
    assert set(rec.loc[rec["event"] == "session", "status"]) >= {"start", "stopped"}


def test_split_over_the_wire_trains_exactly_like_split_in_process(tmp_path):
    """The bytes that cross the wire are the real activations and gradients: one source's
    distributed losses equal an in-process split of the same model, step for step."""
    import torch.nn.functional as F

    from splitbench.data import load_dataset
    from splitbench.executors import LocalExecutor
    from splitbench.models import split
    from splitbench.paradigms import Setup
    from splitbench.paradigms.base import make_optimizer, whole_model
    from splitbench.schedule import batches, source_indices
    from splitbench.spec import Experiment

    exp = Experiment.model_validate(
        experiment_doc(
            sources={"replicas": 1},
            network={"profile": "unconstrained"},
            training={"epochs": 1, "batchSize": 32, "lr": 0.05, "maxStepsPerEpoch": 4},
        )
    )
    result = LocalExecutor(tmp_path, cpu_limit="off", quiet=True).run(exp)
    assert result.ok, result.message
    rec = pd.read_parquet(result.run_dir / "record.parquet")
    wire_losses = rec.loc[rec["event"] == "step", "loss"].tolist()

    torch.set_num_threads(1)
    data = load_dataset(exp.spec.dataset, exp.spec.seed)
    setup = Setup(exp, data.meta)
    edge, _ = split(whole_model(setup), 4)
    _, server = split(whole_model(setup), 4)
    eo, so = (
        make_optimizer(edge.parameters(), exp.spec.training),
        make_optimizer(server.parameters(), exp.spec.training),
    )
    local_losses = []
    for _, idx in batches(source_indices(exp.spec, data)[0], exp.spec, 0, 0, 4):
        act = edge(data.meta.normalize(data.train_x[idx]))
        wire = act.detach().requires_grad_()
        loss = F.cross_entropy(server(wire), data.train_y[idx])
        so.zero_grad()
        loss.backward()
        so.step()
        eo.zero_grad()
        act.backward(wire.grad)
        eo.step()
        local_losses.append(float(loss.detach()))
    assert len(wire_losses) == 4
    assert wire_losses == pytest.approx(local_losses, rel=1e-4)
