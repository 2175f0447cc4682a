"""Full cloud's two deliveries: `stream` (the early-exit paper's baseline: send and go on,
nothing comes back per batch) and `acknowledged` (wait for the server's reply every batch)."""

import pytest

from splitbench.data import load_dataset
from splitbench.paradigms import Setup, get_paradigm
from splitbench.spec import Experiment, load_suite
from splitbench.transport import Kind
from splitbench.transport.wire import decode, encode
from support import ROOT, experiment_doc


def wire(msg):
    return decode([bytes(f) for f in encode(msg)])


def workers(delivery):
    exp = Experiment.model_validate(experiment_doc(paradigm={"name": "full_offload", "delivery": delivery}))
    data = load_dataset(exp.spec.dataset, 0)
    server = get_paradigm(Setup(exp, data.meta, None)).server()
    calls, sends = [], []

    def call(msg):
        calls.append(msg)
        out = server.train(wire(msg))
        return wire(out.reply), 0.0, 0.0

    def send(msg):
        sends.append(msg)
        assert server.train(wire(msg)).reply is None  # the server answers nothing

    source = get_paradigm(Setup(exp, data.meta, None, "source-0")).source(call, send=send)
    return source, data, calls, sends


@pytest.mark.parametrize("delivery", ["stream", "acknowledged"])
def test_stream_never_waits_and_acknowledged_waits_every_batch(delivery):
    source, data, calls, sends = workers(delivery)
    for step in range(3):
        source.train_step(data.train_x[:32], data.train_y[:32], 0, step)
    used, unused = (calls, sends) if delivery == "acknowledged" else (sends, calls)
    assert len(used) == 3 and not unused
    assert all(m.kind == Kind.TRAIN for m in calls + sends)


def test_the_default_is_acknowledged_and_early_exit_suites_label_both():
    exp = Experiment.model_validate(experiment_doc(paradigm={"name": "full_offload"}))
    assert exp.spec.paradigm.delivery == "acknowledged"
    names = [e.name for e in load_suite(ROOT / "benchmarks" / "suites" / "early-exit-reduced.yaml").experiments()]
    assert any(n.endswith("-float32-stream") for n in names) and any(n.endswith("-float32-ack") for n in names)
    claims = load_suite(ROOT / "benchmarks" / "suites" / "early-exit-reduced.yaml").spec.report.paper_claims
    assert claims[0].denominator.endswith("-stream") and claims[1].denominator.endswith("-stream")
