"""The docker executor for real: every role a container of the edge image (built by the
session fixture through the Docker Engine API; podman's on this kind of host), one network
per experiment, the run folder bind-mounted. Same payload bytes as the local executor, the
spec's CPU quota in force inside the containers, nothing left behind."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from splitbench.executors import DockerExecutor, LocalExecutor
from splitbench.executors.docker import LABEL, leftovers
from splitbench.record import BYTE_COLUMNS
from splitbench.spec import Experiment
from support import experiment_doc

pytestmark = [pytest.mark.integration, pytest.mark.containers, pytest.mark.slow]

CASES = {
    "split": {"network": {"profile": "wifi6"}},
    "fedavg": {"paradigm": {"name": "fedavg"}, "network": {"profile": "ethernet-1g"}},
}


def payload_per_sample(rec: pd.DataFrame) -> dict[str, float]:
    """Training payload bytes per training sample, per direction and kind."""
    train = rec[rec["event"].isin(["step", "round"]) & (rec["role"] == "source")]
    samples = rec.loc[(rec["event"] == "step") & (rec["role"] == "source"), "samples"].sum()
    return {c: train[c].sum() / samples for c in BYTE_COLUMNS if train[c].sum()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_quick_run_in_containers_matches_the_local_run(case, container_engine, tmp_path):
    doc = experiment_doc(name=f"docker-{case}", **CASES[case])
    doc["spec"]["training"]["maxStepsPerEpoch"] = 3
    exp = Experiment.model_validate(doc)
    local = LocalExecutor(tmp_path / "local", quiet=True, timeout_s=240).run(exp)
    docker = DockerExecutor(tmp_path / "docker", quiet=True, timeout_s=300).run(exp)
    assert local.ok, local.message
    assert docker.ok, docker.message
    rec_local = pd.read_parquet(local.run_dir / "record.parquet")
    rec_docker = pd.read_parquet(docker.run_dir / "record.parquet")
    assert payload_per_sample(rec_docker) == payload_per_sample(rec_local)
    assert len(rec_docker[rec_docker["event"] == "step"]) == len(rec_local[rec_local["event"] == "step"])
    # every role wrote its record: a session start and a final status per container
    sessions = rec_docker[rec_docker["event"] == "session"]
    assert set(sessions["instance"]) == set(rec_local[rec_local["event"] == "session"]["instance"])
    assert (sessions[sessions["status"].isin(["ok", "failed", "stopped"])]["status"] == "ok").all()
    # the engine's quota, read by each source inside its container, is the spec's 500m
    limited = sessions[(sessions["status"] == "limited") & (sessions["role"] == "source")]
    assert len(limited) == 2 and set(limited["cpu_limit"]) == {"inherited-quota:0.50"}
    assert leftovers(container_engine, exp.name) == []


def test_a_role_killed_in_its_container_ends_the_run_with_its_last_lines(container_engine, tmp_path):
    doc = experiment_doc(name="docker-killed", network={"profile": "ethernet-1g"})
    doc["spec"]["training"].update(epochs=3, maxStepsPerEpoch=None)
    doc["spec"]["dataset"]["samplesPerSource"] = 2048
    exp = Experiment.model_validate(doc)
    result = {}
    runner = threading.Thread(
        target=lambda: result.update(r=DockerExecutor(tmp_path, quiet=True, timeout_s=300).run(exp))
    )
    runner.start()
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:  # wait until source-1 has started training
        for c in container_engine.containers.list(filters={"label": f"{LABEL}={exp.name}"}):
            if (
                c.labels.get("splitbench.dev/role") == "source-1"
                and (tmp_path / exp.name / "source-1.events.jsonl").exists()
            ):
                events = (tmp_path / exp.name / "source-1.events.jsonl").read_text()
                if '"step"' in events:
                    victim = c
        time.sleep(0.5)
    assert victim is not None, "source-1 never started training"
    victim.kill(signal="SIGKILL")
    runner.join(timeout=180)
    r = result["r"]
    assert not r.ok
    assert r.message.startswith("source-1 exited with code 137: ")
    assert "\n" not in r.message
    assert leftovers(container_engine, exp.name) == []


def test_each_container_gets_only_its_own_secret_key(tmp_path):
    from splitbench.executors.docker import per_role_keys

    roles = ["link-0", "server-0", "source-0", "source-1"]
    folders = per_role_keys(tmp_path, roles)
    for role in roles:
        names = sorted(p.name for p in folders[role].iterdir())
        assert names == sorted([f"{r}.pub" for r in roles] + [f"{role}.key"])
        assert all(oct(p.stat().st_mode & 0o777) == "0o400" for p in folders[role].iterdir())
    assert not (tmp_path / "all").exists()  # the folder with every secret key is gone
