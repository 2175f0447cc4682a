"""Records that survive: files replaced in one step, events that a SIGKILL cuts at most by the
line being written, and a report that names a damaged record and still reports every whole run."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from support.report_fixtures import fake_run
from splitbench.atomic import atomic_path, write_atomic
from splitbench.record import read_events_file, read_run

CRASH_AT_RENAME = """
import os, sys
from splitbench.atomic import write_atomic
os.replace = lambda *a: os._exit(9)  # the process dies after writing, before the rename
write_atomic(sys.argv[1], "new content")
"""


def test_a_crash_between_write_and_rename_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "status.txt"
    write_atomic(target, "old content\n")
    r = subprocess.run([sys.executable, "-c", CRASH_AT_RENAME, str(target)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 9, r.stderr
    assert target.read_text() == "old content\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".status.txt.") and leftovers[0].endswith(".tmp")
    assert read_run(tmp_path).damage == ["record.parquet: missing, and no events files: run left out"]

    with pytest.raises(RuntimeError):  # an error in the writer: old file kept, temporary removed
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, leftovers[0]])
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"


WRITER = """
import sys
from pathlib import Path
from splitbench.record import EventLog
log = EventLog(Path(sys.argv[1]), "e", "source", "source-0")
n = 0
while True:
    log.write("step", step=n, pad="x" * (n % 3000))  # lines of many lengths, some over a buffer's size
    n += 1
    if n == 300:
        print("300", flush=True)
"""


def test_sigkill_loses_at_most_the_line_being_written(tmp_path):
    path = tmp_path / "source-0.events.jsonl"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "300"
        time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    rows, problem = read_events_file(path)
    lines = path.read_bytes().split(b"\n")
    assert len(rows) >= 300 and [r["step"] for r in rows] == list(range(len(rows)))
    assert len(rows) >= len(lines) - 1  # every newline-ended line reads; at most the last one is cut
    assert "unreadable" not in problem and "no closing session event" in problem


def _cut(path, rng) -> int:
    data = path.read_bytes()
    at = rng.randrange(1, len(data) - 1)
    path.write_bytes(data[:at])
    return at


def test_read_run_names_a_record_cut_at_any_byte(tmp_path):
    whole = fake_run(tmp_path / "whole", "s", 1, 0.1, 0.8)
    assert read_run(whole).damage == [] and read_run(whole).source == "record.parquet"
    rng = random.Random(15)
    for i in range(12):
        d = shutil.copytree(whole, tmp_path / f"cut{i}")
        name = "record.parquet" if i % 2 == 0 else "source-0.events.jsonl"
        at = _cut(d / name, rng)
        got = read_run(d)
        assert got.record is not None, (name, at)
        assert len(got.damage) == 1 and got.damage[0].startswith(f"{name}: "), (name, at, got.damage)
        if name == "record.parquet":  # the events are whole: rebuilt from them, every step kept
            assert got.source == "events" and "rebuilt from 1 whole events files" in got.damage[0]
        else:
            assert got.source == "record.parquet" and "record.parquet is whole and was used" in got.damage[0]
        assert (got.record["event"] == "step").sum() == 6


def test_report_lists_damaged_runs_and_reports_every_complete_run(tmp_path):
    root = tmp_path / "runs"
    dirs = {f"s-r{r}": fake_run(root, "s", r, 0.1 + 0.001 * r, 0.8) for r in (1, 2, 3, 4)}
    rng = random.Random(15)
    _cut(dirs["s-r2"] / "record.parquet", rng)  # rebuilt from its whole events
    _cut(dirs["s-r3"] / "source-0.events.jsonl", rng)  # its record.parquet is whole
    _cut(dirs["s-r4"] / "record.parquet", rng)  # nothing whole left: left out
    _cut(dirs["s-r4"] / "source-0.events.jsonl", rng)
    out = tmp_path / "report"
    r = subprocess.run(
        [sys.executable, "-m", "splitbench", "report", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    named = [line for line in r.stderr.splitlines() if "record.parquet:" in line or "events.jsonl:" in line]
    assert len(named) == 4, r.stderr
    assert any(line.startswith(f"{dirs['s-r2']}/record.parquet: unreadable") and "rebuilt" in line for line in named)
    assert any(line.startswith(f"{dirs['s-r3']}/source-0.events.jsonl: ") for line in named)
    assert any(
        line.startswith(f"{dirs['s-r4']}/record.parquet: unreadable") and "run left out" in line for line in named
    )
    report = json.loads((out / "report.json").read_text())
    used = {row["experiment"]: row["record"] for row in report["runs"]}
    assert used == {"s-r1": "record.parquet", "s-r2": "events", "s-r3": "record.parquet"}
    assert report["summary"][0]["repeats"] == 3
    assert {row["experiment"] for row in report["damaged"]} == {"s-r2", "s-r3", "s-r4"}
    page = (out / "report.html").read_text()
    assert "Damaged records" in page and "run left out" in page


def _hashes(folder) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _leftover_cgroups(prefix: str) -> list[str]:
    from pathlib import Path

    found = []
    for base in (Path("/sys/fs/cgroup/cpu/splitbench"), Path("/sys/fs/cgroup/splitbench")):
        if base.is_dir():
            found += [p.name for p in base.iterdir() if p.name.startswith(prefix)]
    return found


@pytest.mark.integration
def test_sigterm_during_the_third_run_then_resume_completes_the_suite_and_keeps_the_first_two(tmp_path):
    """A suite of three tiny runs, the third slow; SIGTERM to bench during the third: no role or
    cgroup is left, the third is marked interrupted, and --resume reuses the first two (their
    folders byte-identical), runs the third and reports all three."""
    import os

    from support import experiment_doc
    from support.helpers import processes_mentioning
    import yaml

    name = f"resume{os.getpid()}"  # its own cgroup names, beside other benches on this machine
    base = experiment_doc()["spec"]
    base.update(
        dataset={"name": "synthetic", "samplesPerSource": 128, "testSamples": 64},
        network={"profile": "unconstrained"},
        transport={"auth": "none"},
        sources={"replicas": 1, "device": {"cpu": "1"}},
    )
    slow = {"profile": "low-bitrate"}  # ~3 s a step: long enough to be caught in flight
    suite = {
        "apiVersion": "splitbench.dev/v1alpha1",
        "kind": "Suite",
        "metadata": {"name": name},
        "spec": {"base": base, "cases": [{"label": "a"}, {"label": "b", "seed": 1}, {"label": "c", "network": slow}]},
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    runs, out = tmp_path / "runs", tmp_path / "report"
    argv = [
        sys.executable,
        "-m",
        "splitbench",
        "bench",
        str(tmp_path / "suite.yaml"),
        "--runs",
        str(runs),
        "--out",
        str(out),
    ]
    folders = [runs / name / f"{name}-{x}" for x in "abc"]
    log = open(tmp_path / "bench.log", "w")
    bench = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        events = folders[2] / "source-0.events.jsonl"
        deadline = time.time() + 300
        while (
            time.time() < deadline
            and bench.poll() is None
            and not (events.exists() and '"event": "step"' in events.read_text())
        ):
            time.sleep(0.2)
        assert bench.poll() is None and events.exists(), (tmp_path / "bench.log").read_text()
        before = [_hashes(f) for f in folders[:2]]
        bench.send_signal(signal.SIGTERM)  # to bench alone, as `kill` or make would send it
        assert bench.wait(90) == 143
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
        log.close()
    said = (tmp_path / "bench.log").read_text()
    last = said.strip().splitlines()[-1]
    assert "interrupted (SIGTERM) during" in last and f"{name}-c (3/3)" in last, said
    assert last.endswith(
        f"resume with: splitbench bench {tmp_path / 'suite.yaml'} --runs {runs} --out {out} --resume"
    ), last
    assert "Traceback" not in said
    time.sleep(0.5)
    assert processes_mentioning(str(runs)) == [], "a role outlived the interrupted bench"
    assert _leftover_cgroups(name) == []
    assert (folders[2] / "status.txt").read_text().startswith("interrupted: stopped by SIGTERM: roles stopped")

    r = subprocess.run(argv + ["--resume"], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"(1/3) {name}-a (seed 0): reused, completed earlier (ok)" in r.stderr
    assert f"(2/3) {name}-b (seed 1): reused, completed earlier (ok)" in r.stderr
    assert f"(3/3) {name}-c (seed 0): running (status interrupted)" in r.stderr
    assert [_hashes(f) for f in folders[:2]] == before
    assert all((f / "status.txt").read_text().startswith("ok:") for f in folders)
    report = json.loads((out / "report.json").read_text())
    assert sorted(row["experiment"] for row in report["runs"]) == [f.name for f in folders]
    assert processes_mentioning(str(runs)) == []
    assert _leftover_cgroups(name) == []
    assert all(read_run(f).damage == [] for f in folders)  # real roles' whole records read as whole


class _FakeContainer:
    def __init__(self, client, **opts):
        self.client, self.name, self.status, self.signals = client, opts["name"], "created", []
        self.attrs = {"State": {"ExitCode": 0}}

    def start(self):
        self.status = "running"

    def reload(self):
        pass

    def kill(self, signal="SIGKILL"):
        self.signals.append(signal)
        self.status = "exited"

    def wait(self, timeout=None):
        return {"StatusCode": 0}

    def logs(self, **kw):
        return b"a role's log\n"

    def remove(self, force=False):
        self.client.removed.append(self.name)


class _FakeEngine:
    """What the docker executor calls of the Docker SDK, recorded (no engine on this machine)."""

    def __init__(self):
        import types

        self.made, self.removed = [], []
        self.containers = types.SimpleNamespace(create=self._create, list=lambda **kw: list(self.made))
        self.networks = types.SimpleNamespace(create=self._network, list=lambda **kw: [self.net])

    def _create(self, **opts):
        self.made.append(_FakeContainer(self, **opts))
        return self.made[-1]

    def _network(self, name, **kw):
        import types

        self.net = types.SimpleNamespace(name=name, remove=lambda: self.removed.append(name))
        return self.net


def test_sigterm_in_the_docker_executor_stops_and_removes_every_container_and_marks_the_run(tmp_path, monkeypatch):
    from support import experiment_doc
    from splitbench.executors import docker as docker_executor
    from splitbench.spec import Experiment

    fake = _FakeEngine()
    monkeypatch.setattr(docker_executor, "engine", lambda: fake)

    def interrupted(*a):
        raise KeyboardInterrupt("SIGTERM")  # what bench's SIGTERM handler raises

    monkeypatch.setattr(docker_executor.DockerExecutor, "_watch", interrupted)
    exp = Experiment.model_validate(experiment_doc(name="dk", network={"profile": "wifi6"}))
    with pytest.raises(KeyboardInterrupt):
        docker_executor.DockerExecutor(tmp_path, quiet=True).run(exp)
    names = {c.name for c in fake.made}
    assert len(names) == 4  # link, server, 2 sources
    assert all(c.signals[:1] == ["SIGINT"] for c in fake.made)  # each asked to write its last record
    assert set(fake.removed) == names | {fake.net.name}
    run_dir = tmp_path / "dk"
    assert (run_dir / "status.txt").read_text().startswith("interrupted: stopped by SIGTERM: containers stopped")
    assert (run_dir / "record.parquet").exists() and not list(run_dir.glob(".*.tmp"))


def test_a_role_restarted_after_a_kill_mid_line_appends_on_a_line_of_its_own(tmp_path):
    from splitbench.record import EventLog

    path = tmp_path / "server-0.events.jsonl"
    path.write_text('{"event": "session", "status": "start"}\n{"event": "st')  # killed mid-line
    log = EventLog(path, "e", "server", "server-0", echo=False)
    log.write("session", status="start")
    log.write("session", status="ok", duration_s=1.0)
    log.close()
    rows, problem = read_events_file(path)
    assert [r["status"] for r in rows] == ["start", "start", "ok"]
    assert problem == "1 unreadable line(s), first line 2"
