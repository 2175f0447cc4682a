"""Source groups (sources.groupSize): the spec refuses what a group cannot do, and the role plan
hosts k sources per process, each source keeping its own keypair and routing id."""

from __future__ import annotations

import pytest

from splitbench.executors import EXECUTORS
from splitbench.executors.local import LocalExecutor
from splitbench.roleplan import plan_roles, role_names
from splitbench.spec import Experiment, SpecError, load_experiment
from splitbench_operator import builders
from support import experiment_doc


def grouped(replicas: int, group: int, **overrides) -> dict:
    return experiment_doc(sources={"replicas": replicas, "groupSize": group, "device": {"cpu": "100m"}}, **overrides)


def refused(write_spec, doc: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match) as err:
        load_experiment(write_spec(doc))
    assert str(err.value).strip().count("\n") <= 1  # one line naming what is wrong


def test_group_size_is_checked_against_the_sources(write_spec):
    refused(write_spec, grouped(4, 8), "sources.groupSize 8 exceeds sources.replicas 4")
    refused(write_spec, grouped(4, 0), "groupSize")
    refused(write_spec, grouped(1000, 1), "raise sources.groupSize to at least 4")
    load_experiment(write_spec(grouped(1000, 4)))  # 250 processes: within the budget


def test_what_a_group_cannot_do_is_refused(write_spec):
    doc = grouped(4, 2)
    doc["spec"]["sources"]["device"]["load"] = [{"fromRound": 1, "busy": 0.5}]
    refused(write_spec, doc, "sources.device.load needs one process per source")
    refused(
        write_spec,
        grouped(4, 2, faults=[{"kind": "kill", "role": "source-1", "atStep": 1}]),
        "fault role source-1: kill faults act on a source's own process",
    )
    hfsl = grouped(4, 2, paradigm={"name": "hfsl", "splitAfter": 4}, network={"profile": "wifi6"})
    refused(write_spec, hfsl, "hfsl gives each source its own server")


def test_the_plan_hosts_k_sources_per_process_with_a_key_each():
    exp = Experiment.model_validate(grouped(10, 4))
    plan = plan_roles(exp)
    groups = plan.of_kind("source")
    assert [g.name for g in groups] == ["source-group-0", "source-group-1", "source-group-2"]
    assert [g.members for g in groups] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert [g.cpu for g in groups] == pytest.approx([0.4, 0.4, 0.2])  # the members' quotas, shared
    assert all(g.connect == "link-0" for g in groups)  # every source's socket goes through the medium
    args = groups[1].args(lambda name: f"tcp://{name}", bind="", spec_path="s", run_dir="r")
    assert args[:4] == ["role", "source", "--group", "1"] and "--index" not in args
    keys = role_names(exp.spec)  # a keypair per source (and none for a group process)
    assert [k for k in keys if k.startswith("source")] == [f"source-{i}" for i in range(10)]
    # one process per source is the plan without groupSize, unchanged
    lone = plan_roles(Experiment.model_validate(experiment_doc()))
    assert [(r.name, r.members, r.cpu) for r in lone.of_kind("source")] == [
        ("source-0", (), 0.5),
        ("source-1", (), 0.5),
    ]


def test_local_executor_starts_one_process_per_group(tmp_path):
    exp = Experiment.model_validate(grouped(8, 4))
    procs = LocalExecutor(tmp_path, metrics=True).processes(exp, tmp_path)
    sources = [argv for role, argv in procs if role.kind == "source"]
    assert len(sources) == 2 and all("--metrics-port" in argv for argv in sources)  # one port per process


@pytest.mark.parametrize("executor", ["docker", "kubernetes"])
def test_executors_that_run_a_source_per_container_refuse_groups(executor, tmp_path):
    exp = Experiment.model_validate(grouped(8, 4))
    refusal = f"source groups run on the local executor only; the {executor} executor"
    with pytest.raises(SpecError, match=refusal):  # before it reaches an engine or a cluster
        EXECUTORS[executor](tmp_path).run(exp)
    with pytest.raises(SpecError, match="the kubernetes executor"):  # the operator builds no pods for it
        builders.build(exp, "uid")


def test_a_source_that_fails_does_not_end_its_groupmates(write_spec, tmp_path, monkeypatch):
    """In the group process each source runs its own body through its own Runtime: one that
    fails records its failure, the others finish and record theirs, and the group exits with
    the failure's code (so the executor sees that the run lost a source)."""
    import argparse
    import json
    import signal

    import torch

    from splitbench.roles import source, source_group

    def body(self):  # instead of setup, train, finish: what a source's own failure does
        if self.index == 1:
            raise RuntimeError("boom")
        self.rt.log.write("step", epoch=0, step=0, samples=1)

    monkeypatch.setattr(source.Source, "body", body)
    monkeypatch.setattr(source_group, "load_dataset", lambda *a: None)
    spec = write_spec(grouped(3, 3))
    args = argparse.Namespace(
        spec=str(spec), run_dir=str(tmp_path / "run"), group=0, index=0, connect="tcp://127.0.0.1:1",
        aggregator=None, keys=None, metrics_port=None, metrics_addr="127.0.0.1", cpu_limit="off",
    )  # fmt: skip
    handler, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:
        assert source_group.run_group(args) == 1
    finally:
        signal.signal(signal.SIGTERM, handler)
        torch.set_num_threads(threads)
    ends = {}
    for i in range(3):
        events = [json.loads(line) for line in (tmp_path / "run" / f"source-{i}.events.jsonl").read_text().splitlines()]
        ends[i] = [(e["status"], e.get("error")) for e in events if e["event"] == "session"][-1]
        assert any(e["event"] == "step" for e in events) == (i != 1)
    assert ends == {0: ("ok", None), 1: ("failed", "RuntimeError: boom"), 2: ("ok", None)}


def test_a_group_serves_every_sources_metrics_on_its_one_port():
    from prometheus_client import CollectorRegistry, generate_latest

    from splitbench.metrics import RoleMetrics
    from splitbench.roles.source_group import _Members

    members = [RoleMetrics("e", "source", f"source-{i}") for i in range(2)]
    for i, m in enumerate(members):
        m.steps.labels(**m.base).inc(i + 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Members([m.registry for m in members]))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'splitbench_steps_total{experiment="e",role="source",role_instance="source-0"} 1.0' in text
    assert 'splitbench_steps_total{experiment="e",role="source",role_instance="source-1"} 2.0' in text
    assert text.count("# TYPE splitbench_steps_total counter") == 1  # one family, both sources' samples
    samples = [line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert samples.count("process_resident_memory_bytes") == 1  # the process's own series once
