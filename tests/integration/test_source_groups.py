"""Source groups (issue 17, item 4): 8 sources of split small_cnn hosted 4 per process over the
emulated shared Wi-Fi medium train with no message lost; each source keeps its own identity
(the server serves every source-<i> by its own CURVE key through the relay) and its own record,
and the record and the report say which mode ran."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from splitbench.executors import LocalExecutor
from splitbench.report.summary import source_processes
from splitbench.spec import Experiment
from support import ROOT, experiment_doc

sys.path.insert(0, str(ROOT / "benchmarks"))
from footprint_bench import descendants, role_of  # noqa: E402

pytestmark = pytest.mark.integration

SOURCES, GROUP, STEPS = 8, 4, 2


def test_eight_sources_in_groups_of_four_keep_their_own_identity_and_record(tmp_path):
    doc = experiment_doc(
        "groups",
        training={"epochs": 1, "batchSize": 16, "lr": 0.01, "replyTimeoutS": 120, "maxStepsPerEpoch": STEPS},
        dataset={"name": "synthetic", "samplesPerSource": 64, "testSamples": 32},
        network={"profile": "wifi6"},
        sources={"replicas": SOURCES, "groupSize": GROUP, "device": {"cpu": "100m"}},
    )
    result = LocalExecutor(tmp_path, quiet=True, timeout_s=300).run(Experiment.model_validate(doc))
    assert result.ok, result.message
    rec = pd.read_parquet(result.run_dir / "record.parquet")
    names = {f"source-{i}" for i in range(SOURCES)}
    steps = rec[rec["event"] == "step"]
    assert steps.groupby("instance").size().to_dict() == {n: STEPS for n in names}  # every source's own steps
    served = rec[rec["event"] == "server"]
    assert len(served) == len(steps)  # no message lost
    assert set(served["source"]) == names  # the server saw each source under its own identity
    assert {p.name for p in result.run_dir.glob("source-*.events.jsonl")} == {f"{n}.events.jsonl" for n in names}
    plans = rec[(rec["event"] == "plan") & (rec["role"] == "source")].set_index("instance")
    assert plans["group"].to_dict() == {f"source-{i}": f"source-group-{i // GROUP}" for i in range(SOURCES)}
    assert set(plans["group_size"]) == {GROUP} and plans["group_cpu"].tolist() == pytest.approx([0.4] * SOURCES)
    ended = rec[(rec["event"] == "session") & (rec["role"] == "source") & (rec["status"] == "ok")]
    assert set(ended["instance"]) == names and set(ended["torch_threads"]) == {1}
    assert source_processes(rec) == f"groups of {GROUP}"
    assert {p.stem for p in result.run_dir.glob("source-group-*.log")} == {"source-group-0", "source-group-1"}


def test_a_stopped_group_keeps_each_sources_record(tmp_path):
    """SIGTERM (the executor stopping a run) reaches the group process, not its sources'
    threads: the group ends every source's record with its own `stopped` session."""
    doc = experiment_doc(
        "groups-stopped",
        training={"epochs": 1, "batchSize": 16, "lr": 0.01, "replyTimeoutS": 120, "maxStepsPerEpoch": 500},
        dataset={"name": "synthetic", "samplesPerSource": 8000, "testSamples": 32},
        network={"profile": "wifi6"},
        sources={"replicas": 4, "groupSize": 2, "device": {"cpu": "100m"}},
    )
    done: dict = {}

    def go() -> None:
        done["result"] = LocalExecutor(tmp_path, quiet=True, timeout_s=600).run(Experiment.model_validate(doc))

    run = threading.Thread(target=go)
    run.start()
    run_dir, deadline = tmp_path / "groups-stopped", time.time() + 300
    while time.time() < deadline and not all(_stepped(run_dir / f"source-{i}.events.jsonl") for i in range(4)):
        time.sleep(0.5)
    groups = [pid for pid in descendants(os.getpid()) if (role_of(pid) or "").startswith("source-group")]
    assert len(groups) == 2
    for pid in groups:
        os.kill(pid, signal.SIGTERM)
    run.join(120)
    assert done["result"].status == "failed" and "every source gone" in done["result"].message
    rec = pd.read_parquet(run_dir / "record.parquet")
    sessions = rec[(rec["event"] == "session") & (rec["role"] == "source")]
    last = sessions.groupby("instance")["status"].last().to_dict()
    assert last == {f"source-{i}": "stopped" for i in range(4)}, last
    assert set(sessions.loc[sessions["status"] == "stopped", "group"]) == {"source-group-0", "source-group-1"}


def _stepped(events: Path) -> bool:
    try:
        return '"event": "step"' in events.read_text()
    except OSError:
        return False
