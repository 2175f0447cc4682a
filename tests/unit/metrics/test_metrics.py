"""A role's Prometheus exposition: names end with their unit, no label is Prometheus' own
`instance` or `job`, and the process collector's standard series are there."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from splitbench.metrics import RoleMetrics

UNITS = ("_seconds", "_bytes", "_ratio", "_total", "_info")
UNITLESS = {"splitbench_loss", "splitbench_epoch"}  # a loss and an epoch number have no unit


def exposition() -> str:
    m = RoleMetrics("exp", "source", "source-0", paradigm="split", network="wifi6")
    m.add_bytes("up", "activation", 100)
    m.step(32, {"forward": 0.01}, 0.5)
    m.accuracy.labels(**m.base, exit="final").set(0.5)
    return generate_latest(m.registry).decode()


def test_names_carry_their_unit_and_labels_do_not_clash_with_prometheus():
    text = exposition()
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    ours = {f for f in families if f.startswith("splitbench_") and not f.endswith("_created")}
    assert {"splitbench_wire_bytes_total", "splitbench_accuracy_ratio", "splitbench_phase_seconds"} <= ours
    for family in ours - UNITLESS:
        assert family.endswith(UNITS), f"{family} has no unit suffix"
    labels = set(re.findall(r"[{,](\w+)=", text))
    assert "role_instance" in labels and not labels & {"instance", "job"}


def test_the_process_collector_is_registered():
    text = exposition()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert re.search(rf"^{name} [0-9.e+]+$", text, re.M), name
