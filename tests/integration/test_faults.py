"""Faults (issue 15, part B): a source that is gone does not end the run, a round closes at the
deadline, faults injected on purpose are recorded and reported. Real processes on loopback,
synthetic data, a few steps."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import zmq

from splitbench.executors import LocalExecutor
from splitbench.executors.local import free_port
from splitbench.record import load
from splitbench.report import build_report, figures
from splitbench.report.faults import fault_intervals
from splitbench.spec import Experiment
from splitbench.transport import Endpoint, Kind, Message
from support import experiment_doc
from support.helpers import close_peers, fedavg_contribution, processes_mentioning
from test_failures import role

pytestmark = pytest.mark.integration

KILL = {"kind": "kill", "role": "source-1", "atStep": 6}


def small(name: str, paradigm: dict, sources: int, faults: list, epochs: int = 4, **over) -> Experiment:
    return Experiment.model_validate(
        experiment_doc(
            name=name,
            paradigm=paradigm,
            faults=faults,
            dataset={"name": "synthetic", "samplesPerSource": 64, "testSamples": 64},
            sources={"replicas": sources, "deadline": 3},
            training={"epochs": epochs, "batchSize": 16, "maxStepsPerEpoch": 4, "replyTimeoutS": 60},
            **over,
        )
    )


def steps_of(rec: pd.DataFrame) -> pd.Series:
    return rec[rec["event"] == "step"].groupby("instance").size()


@pytest.mark.parametrize("paradigm", [{"name": "split", "splitAfter": 4}, {"name": "fedavg"}], ids=["split", "fedavg"])
def test_a_killed_source_of_four_leaves_a_degraded_run(tmp_path, paradigm):
    exp = small(f"kill-{paradigm['name']}", paradigm, 4, [KILL])
    result = LocalExecutor(tmp_path, cpu_limit="off", quiet=True, timeout_s=400).run(exp)
    assert result.status == "degraded" and not result.ok and result.finished, result.message
    assert "without source-1" in result.message
    assert (result.run_dir / "status.txt").read_text().startswith("degraded: ")
    rec = load(result.run_dir)
    planned = rec[rec["event"] == "plan"].set_index("instance")["planned_steps"]
    done = steps_of(rec)
    for s in ("source-0", "source-2", "source-3"):  # the others finish every step
        assert done[s] == planned[s] == 16, (s, done.to_dict())
    assert KILL["atStep"] <= done["source-1"] < 16
    gone = rec[(rec["event"] == "source_gone") & (rec["noticed_by"] == "executor-0")]
    assert gone["source"].tolist() == ["source-1"]
    assert int(gone["last_step"].iloc[0]) == done["source-1"] - 1  # steps count from 0
    assert int(gone["samples_trained"].iloc[0]) == 16 * done["source-1"]
    kills = rec[rec["event"] == "fault"]
    assert kills["state"].tolist() == ["start", "end"] and set(kills["target"]) == {"source-1"}
    if paradigm["name"] == "fedavg":  # every round averaged, the ones after the kill without source-1
        agg = rec[rec["event"] == "aggregate"].sort_values("round")
        assert agg["round"].tolist() == [0, 1, 2, 3]
        assert agg["contributors"].iloc[-1] == 3
        rounds = rec[(rec["event"] == "round") & (rec["role"] == "source")].groupby("instance").size()
        assert all(rounds[s] == 4 for s in ("source-0", "source-2", "source-3"))
    time.sleep(0.5)
    assert processes_mentioning(str(result.run_dir)) == []


def test_hfsl_goes_on_without_a_killed_source_and_its_medium_device(tmp_path):
    """In hfsl the killed source's medium device is left with nothing to serve: both partitions'
    rounds close at the deadline without the pair, and every round is still averaged."""
    exp = small(
        "kill-hfsl", {"name": "hfsl", "splitAfter": 2}, 3, [{"kind": "kill", "role": "source-1", "atStep": 5}], epochs=3
    )
    result = LocalExecutor(tmp_path, cpu_limit="off", quiet=True, timeout_s=400).run(exp)
    assert result.status == "degraded", result.message
    rec = load(result.run_dir)
    done = steps_of(rec)
    assert done["source-0"] == done["source-2"] == 12 and done["source-1"] < 12
    agg = rec[rec["event"] == "aggregate"]
    assert sorted(agg.groupby("partition")["round"].apply(list).sum()) == [0, 0, 1, 1, 2, 2]
    assert (agg.loc[agg["round"] == 2, "contributors"] == 2).all()
    noticed = rec[rec["event"] == "source_gone"].groupby("noticed_by")["source"].apply(set).to_dict()
    assert noticed["executor-0"] == {"source-1"} and noticed["server-1"] == {"source-1"}
    assert noticed["aggregator-0"] == {"source-1", "server-1"}  # the live pairs said goodbye: not dropped


def test_every_source_gone_fails_with_one_line(tmp_path):
    faults = [{"kind": "kill", "role": f"source-{i}", "atStep": 2} for i in range(2)]
    exp = small("all-gone", {"name": "split", "splitAfter": 4}, 2, faults)
    result = LocalExecutor(tmp_path, cpu_limit="off", quiet=True, timeout_s=300).run(exp)
    assert result.status == "failed"
    assert result.message.startswith("every source gone: ") and "\n" not in result.message
    assert "source-0 exited with code -9" in result.message and "source-1 exited with code -9" in result.message
    assert (result.run_dir / "status.txt").read_text().startswith("failed: every source gone")


def test_a_round_closes_at_the_deadline_with_the_updates_that_came(tmp_path, write_spec):
    """Three devices, one silent: after sources.deadline the aggregator averages the two that
    came, weighted by their sample counts, records the third as gone and does not wait for it
    in the next round; at its end it says goodbye to the third."""
    spec = write_spec(
        experiment_doc(
            paradigm={"name": "fedavg"},
            sources={"replicas": 3, "deadline": 2},
            training={"epochs": 2, "replyTimeoutS": 30},
            transport={"auth": "none"},
        )
    )
    addr = f"tcp://127.0.0.1:{free_port()}"
    agg = role("aggregator", spec, tmp_path, "--bind", addr)
    ctx = zmq.Context()
    a = Endpoint(ctx, zmq.DEALER, addr, bind=False, identity="source-0")
    b = Endpoint(ctx, zmq.DEALER, addr, bind=False, identity="source-1")
    late = Endpoint(ctx, zmq.DEALER, addr, bind=False, identity="source-2")  # connected, silent
    contribution = fedavg_contribution
    try:
        t0 = time.time()
        a.send(contribution(1.0, 1, 0))
        b.send(contribution(3.0, 3, 0))
        for ep in (a, b):
            _, reply, _ = ep.recv(30)
            assert set(reply.tensors["w_whole"].tolist()) == {2.5}  # 1/4 a + 3/4 b; source-2 sent nothing
        assert time.time() - t0 >= 1.9  # it waited for the deadline
        t1 = time.time()
        a.send(contribution(2.0, 1, 1))
        b.send(contribution(2.0, 1, 1))
        for ep in (a, b):
            _, reply, _ = ep.recv(30)
            assert set(reply.tensors["w_whole"].tolist()) == {2.0}
        assert time.time() - t1 < 1.9  # source-2 is not waited for again
        for ep in (a, b):
            ep.send(Message(Kind.BYE, "t"))
            assert ep.recv(30)[1].kind is Kind.BYE
        assert agg.wait(60) == 0, agg.stdout.read()
        # the device it stopped waiting for is told so: alive after all, a goodbye it sends now
        # (to an aggregator that has ended) finds its answer already there
        assert late.recv(10)[1].kind is Kind.BYE
    finally:
        close_peers(ctx, agg, a, b, late)
    events = pd.read_json(tmp_path / "aggregator-0.events.jsonl", lines=True)
    gone = events[events["event"] == "source_gone"]
    assert gone["source"].tolist() == ["source-2"] and gone["round"].tolist() == [0]
    assert events.loc[events["event"] == "aggregate", "contributors"].tolist() == [2, 2]
    assert events.loc[events["event"] == "aggregate", "samples"].tolist() == [4, 2]
    farewell = events[events["event"] == "farewell"]
    assert farewell["device"].tolist() == ["source-2"] and farewell["sent"].tolist() == [True]


def test_a_suite_with_a_kill_reports_the_fault_and_its_cost(tmp_path):
    kill = {"kind": "kill", "role": "source-1", "atStep": 3}
    runs = [
        small("suite-no-faults", {"name": "split", "splitAfter": 4}, 2, [], epochs=2),
        small("suite-kill-source-1", {"name": "split", "splitAfter": 4}, 2, [kill], epochs=2),
    ]
    executor = LocalExecutor(tmp_path / "runs", cpu_limit="off", quiet=True, timeout_s=300)
    results = [executor.run(e) for e in runs]
    assert [r.status for r in results] == ["ok", "degraded"], [r.message for r in results]
    build_report([r.run_dir for r in results], tmp_path / "report")
    faults = pd.read_csv(tmp_path / "report" / "faults.csv")
    assert faults["fault"].tolist() == ["kill source-1 at step 3"]
    row = faults.iloc[0]
    assert row["status"] == "degraded" and row["sources_lost"] == "source-1"
    assert row["against"] == "1 unfaulted run(s)"
    assert row["start_t_s"] > 0 and row["end_t_s"] > row["start_t_s"]
    clean = pd.read_csv(tmp_path / "report" / "runs.csv").set_index("experiment")
    assert row["time_cost_s"] == pytest.approx(row["train_time_s"] - clean.at["suite-no-faults", "train_time_s"])
    degraded = pd.read_csv(tmp_path / "report" / "degraded.csv")
    assert degraded["source"].tolist() == ["source-1"] and degraded["samples_trained"].iloc[0] >= 3 * 16
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Faults</h2>" in html and "<h2>Degraded runs</h2>" in html
    # the marked interval: the kill, from when it happened to the end of the run, hatched on the figure
    rec = load(results[1].run_dir)
    ((start, end, what),) = fault_intervals(rec)
    ended = rec.loc[(rec["event"] == "fault") & (rec["state"] == "end"), "t"]
    assert what == "kill source-1" and start == pytest.approx(row["start_t_s"]) and end == ended.max()
    assert rec["t"].max() - end < 0.5  # the kill's end is the run's: only the executor's closing line follows
    fig = figures.cumulative_bytes({("suite-kill-source-1", 1): rec, ("suite-no-faults", 1): load(results[0].run_dir)})
    spans = [p for p in fig.axes[0].patches if p.get_hatch() == "//"]
    assert len(spans) == 1 and spans[0].get_x() == pytest.approx(start)


@pytest.mark.parametrize(
    "faults,error",
    [
        ([{"kind": "kill", "role": "source-1"}], "exactly one of atStep and atS"),
        ([{"kind": "kill", "role": "source-9", "atS": 1}], "fault role source-9: split with 2 sources has 2 source"),
        ([{"kind": "kill", "role": "aggregator-0", "atS": 1}], "has 0 aggregator role(s)"),
        ([{"kind": "cut", "atS": 1}], "a cut fault needs forS"),
        ([{"kind": "slow", "role": "server-0", "atS": 1, "forS": 1, "cpu": "100m"}], "a slow fault slows a source"),
        ([{"kind": "cut", "atS": 1, "forS": 5}, {"kind": "cut", "atS": 3, "forS": 1}], "must be in time order"),
    ],
)
def test_fault_specs_are_checked(faults, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        Experiment.model_validate(experiment_doc(faults=faults))


def test_a_cut_is_an_outage_of_the_link():
    exp = Experiment.model_validate(
        experiment_doc(
            network={"profile": "wifi6", "outages": [{"atS": 10, "forS": 1}]},
            faults=[{"kind": "cut", "atS": 2, "forS": 3}],
        )
    )
    assert [(o.at_s, o.for_s) for o in exp.spec.network_with_faults().outages] == [(2, 3), (10, 1)]
    assert exp.spec.network.outages[0].at_s == 10  # the spec itself is not rewritten


def test_a_slow_fault_moves_the_source_quota_for_its_interval(tmp_path):
    """The executor moves the source's quota to the fault's for forS seconds and back, through
    the mechanism the source's quota is enforced by; where that cannot move (no cgroup), the
    fault event says it was not enforced."""
    doc = experiment_doc(
        name="slow",
        sources={"replicas": 1, "device": {"cpu": "1"}},
        faults=[{"kind": "slow", "role": "source-0", "atS": 0.5, "forS": 1.5, "cpu": "100m"}],
        dataset={"name": "synthetic", "samplesPerSource": 64, "testSamples": 64},
        training={"epochs": 4, "batchSize": 16, "maxStepsPerEpoch": 4},
    )
    result = LocalExecutor(tmp_path, cpu_limit="auto", quiet=True, timeout_s=300).run(Experiment.model_validate(doc))
    assert result.status == "ok", result.message
    rec = load(result.run_dir)
    mechanism = rec.loc[
        (rec["event"] == "session") & (rec["status"] == "limited") & (rec["instance"] == "source-0"), "cpu_limit"
    ].iloc[0]
    start, end = (rec[(rec["event"] == "fault") & (rec["state"] == s)].iloc[0] for s in ("start", "end"))
    assert start["target"] == end["target"] == "source-0" and start["cpu_quota"] == 0.1 and end["cpu_quota"] == 1.0
    if mechanism.startswith("cgroup"):
        assert start["cpu_limit"] == end["cpu_limit"] == mechanism
        assert end["t"] - start["t"] == pytest.approx(1.5, abs=0.5)
    else:
        assert start["cpu_limit"].startswith("unchanged")
    assert fault_intervals(rec)[0][2] == "slow source-0"
