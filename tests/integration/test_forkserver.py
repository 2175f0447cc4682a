"""The local executor's fork server (issue 17, item 4): a forked role gets its own argv (and
command line), environment, working folder and log, its pid answers signals, and its exit
code comes back as Popen's would; a run records which launch ran, and a forked run's records
equal a spawned run's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from support import experiment_doc
from splitbench.executors import LocalExecutor
from splitbench.executors.forkserver import ForkServer, cmdline_room
from splitbench.executors.local import free_port
from splitbench.spec import Experiment

LIGHT = ("splitbench.cli.main",)  # no torch: these tests fork the link emulator and the CLI


def _server(tmp_path: Path, argvs: list[list[str]]) -> ForkServer:
    return ForkServer(
        str(tmp_path / "zygote-title"),
        cmdline_room(argvs),
        tmp_path / "forkserver.log",
        preload=LIGHT,
        ready_timeout_s=120,
    ).start()


def _link_argv(spec: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "splitbench",
        "role",
        "link",
        "--spec",
        str(spec),
        "--run-dir",
        str(run_dir),
        "--bind",
        f"tcp://127.0.0.1:{free_port()}",
        "--connect",
        f"tcp://127.0.0.1:{free_port()}",
        "--cpu-limit",
        "off",
    ]


def test_a_forked_role_has_its_own_cwd_log_and_exit_code(tmp_path):
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "exp.yaml").write_text(yaml.safe_dump(experiment_doc(name="here")))
    (tmp_path / "wd" / "bad.yaml").write_text("kind: Nonsense\n")
    good = [sys.executable, "-m", "splitbench", "validate", "exp.yaml"]  # relative: found only in its cwd
    bad = [sys.executable, "-m", "splitbench", "validate", "bad.yaml"]
    server = _server(tmp_path, [good, bad])
    try:
        ok = server.spawn(good, {"PATH": "/usr/bin:/bin"}, tmp_path / "good.log", cwd=str(tmp_path / "wd"))
        no = server.spawn(bad, {"PATH": "/usr/bin:/bin"}, tmp_path / "bad.log", cwd=str(tmp_path / "wd"))
        assert ok.wait(timeout=60) == 0 and no.wait(timeout=60) != 0
        spawned = subprocess.run(bad, cwd=tmp_path / "wd", capture_output=True, text=True, timeout=120)
        assert no.returncode == spawned.returncode  # the same exit code as a process of its own
        assert "exp.yaml" in (tmp_path / "good.log").read_text()
        assert (tmp_path / "bad.log").read_text().strip() == (spawned.stdout + spawned.stderr).strip()
    finally:
        server.close()
    assert server.info["pid"] == server.pid and server.info["preloaded"] == list(LIGHT)


def test_a_forked_role_reads_its_own_environment_and_command_line_and_dies_by_its_pid(tmp_path, write_spec):
    spec = write_spec(experiment_doc(name="fork"))  # auth: curve, the default
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    missing = tmp_path / "keys-from-the-environment"
    refused, waiting = (
        _link_argv(spec, run_dir),
        _link_argv(write_spec(experiment_doc(name="wait", transport={"auth": "none"}), "w.yaml"), run_dir),
    )
    server = _server(tmp_path, [refused, waiting])
    try:
        role = server.spawn(refused, {"SPLITBENCH_KEYS": str(missing)}, run_dir / "refused.log")
        assert role.wait(timeout=120) == 2  # setup refused: the keys folder its environment names is missing
        assert str(missing) in (run_dir / "refused.log").read_text()
        link = server.spawn(waiting, {}, run_dir / "link-0.log")
        deadline = time.time() + 120
        while not _listening(run_dir / "link-0.events.jsonl"):
            assert time.time() < deadline and link.poll() is None, (run_dir / "link-0.log").read_text()
            time.sleep(0.2)
        cmdline = Path(f"/proc/{link.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        assert [a.decode() for a in cmdline] == waiting  # ps, the benchmarks and the tests find it as before
        assert Path(f"/proc/{link.pid}/cwd").resolve() == Path.cwd().resolve()
        with pytest.raises(subprocess.TimeoutExpired):
            link.wait(timeout=0.5)
        link.send_signal(signal.SIGKILL)
        assert link.wait(timeout=30) == -signal.SIGKILL  # as Popen.returncode says it
    finally:
        server.close()
    assert server.proc.poll() is not None  # closed: the zygote is gone too


def _listening(events: Path) -> bool:
    try:
        return '"listening"' in events.read_text()
    except OSError:
        return False


@pytest.mark.integration
def test_a_forked_run_records_what_a_spawned_run_does(tmp_path):
    # one source: with two, the server's model takes their steps in arrival order, and the losses with it
    doc = experiment_doc(
        name="same",
        sources={"replicas": 1, "device": {"cpu": "500m"}},
        training={"epochs": 1, "batchSize": 32, "lr": 0.01, "maxStepsPerEpoch": 3, "replyTimeoutS": 120},
    )
    recs, envs = {}, {}
    for launch in ("spawn", "forkserver"):
        result = LocalExecutor(tmp_path / launch, cpu_limit="off", quiet=True, timeout_s=300, launch=launch).run(
            Experiment.model_validate(doc)
        )
        assert result.ok, (launch, result.message)
        recs[launch] = pd.read_parquet(result.run_dir / "record.parquet")
        envs[launch] = json.loads((result.run_dir / "environment.json").read_text())
    assert envs["spawn"]["role_processes"] == "spawn" and envs["forkserver"]["role_processes"] == "forkserver"
    info = json.loads((tmp_path / "forkserver" / "same" / "forkserver.json").read_text())
    assert info["forked"] == ["server-0", "source-0"] and info["spawned"] == ["link-0"]
    assert not (tmp_path / "spawn" / "same" / "forkserver.json").exists()
    # bytes are test_regress's (a resend under load counts twice in a step's bytes, in either mode)
    cols = ["instance", "epoch", "step", "loss", "samples"]
    steps = {
        k: r[r["event"] == "step"][cols].sort_values(["instance", "step"]).reset_index(drop=True)
        for k, r in recs.items()
    }
    pd.testing.assert_frame_equal(steps["spawn"], steps["forkserver"])  # the same losses, bit for bit
    ends = {
        k: r[(r["event"] == "session") & (r["status"] == "ok")].set_index("instance")["imports"].to_dict()
        for k, r in recs.items()
    }
    assert ends["spawn"] == ends["forkserver"]  # the fork server adds no heavy import (pandas, torchvision)
