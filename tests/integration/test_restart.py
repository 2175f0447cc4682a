"""Checkpoints, and a killed server or aggregator that restarts and resumes (issue 15, part C)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from splitbench.checkpoint import CheckpointError, load, path_for, rng_state, save, worker_state
from splitbench.executors import LocalExecutor
from splitbench.executors.local import Restarts
from splitbench.roleplan import MAX_BACKOFF_S, plan_roles
from splitbench.spec import Experiment
from support import ROOT, experiment_doc

SLOW_LINK = {"profile": "ethernet-1g", "uplink": {"delayMs": 30}, "downlink": {"delayMs": 30}}  # steps last a while


# --- checkpoint files ----------------------------------------------------------------------

NEXT_STEP = """
import sys, torch
from splitbench.checkpoint import load, load_worker_state, set_rng_state
from splitbench.paradigms import Setup, get_paradigm
from splitbench.data import dataset_meta
from splitbench.spec import load_experiment
torch.set_num_threads(1)
exp = load_experiment(sys.argv[1])
meta = dataset_meta(exp.spec.dataset)
worker = get_paradigm(Setup(exp, meta)).source(None)
state = load(__import__("pathlib").Path(sys.argv[2]), exp.name, "source-0")
load_worker_state(worker, state["worker"])
set_rng_state(state["rng"])
x = torch.randint(0, 256, (8, *meta.input_shape), dtype=torch.uint8)
y = torch.randint(0, meta.num_classes, (8,))
print(repr(worker.train_step(x, y, 0, 3).loss), worker.samples)
"""


def test_a_checkpoint_loaded_in_a_fresh_process_takes_the_same_next_step(tmp_path, write_spec):
    """Model, optimizer (SGD momentum buffers), counters and RNG: the next step after a
    save, taken here and in a new process from the file, has the very same loss."""
    from splitbench.data import dataset_meta
    from splitbench.paradigms import Setup, get_paradigm

    spec_path = write_spec(experiment_doc(paradigm={"name": "fedavg"}, training={"epochs": 1, "lr": 0.05}))
    exp = Experiment.model_validate(experiment_doc(paradigm={"name": "fedavg"}, training={"epochs": 1, "lr": 0.05}))
    torch.set_num_threads(1)
    meta = dataset_meta(exp.spec.dataset)
    worker = get_paradigm(Setup(exp, meta)).source(None)
    for step in range(3):
        x = torch.randint(0, 256, (8, *meta.input_shape), dtype=torch.uint8)
        worker.train_step(x, torch.randint(0, meta.num_classes, (8,)), 0, step)
    path = path_for(tmp_path, "source-0")
    save(
        path,
        {
            "format": 1,
            "experiment": exp.name,
            "instance": "source-0",
            "rng": rng_state(),
            "worker": worker_state(worker),
        },
    )
    x = torch.randint(0, 256, (8, *meta.input_shape), dtype=torch.uint8)
    y = torch.randint(0, meta.num_classes, (8,))
    here = worker.train_step(x, y, 0, 3).loss
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'workload'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-c", NEXT_STEP, str(spec_path), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    loss, samples = out.stdout.split()
    assert float(loss) == here  # bit for bit: the same weights, momentum, and random draws
    assert int(samples) == 4 * 8  # the counter since the last round came back too
    assert [p.name for p in path.parent.iterdir()] == ["source-0.pt"]  # no temporary file left


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_file_that_is_not_a_weights_only_checkpoint_is_refused_with_one_line(tmp_path, write_spec):
    path = path_for(tmp_path, "server-0")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"format": 1, "x": Boom()}))
    with pytest.raises(CheckpointError, match=r"server-0\.pt: not a weights-only checkpoint") as err:
        load(path, "t", "server-0")
    assert "\n" not in str(err.value)
    assert not (Path.cwd() / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        load(path, "t", "server-0")
    save(path, {"format": 1, "experiment": "other", "instance": "server-0"})
    with pytest.raises(CheckpointError, match="written by 'server-0' of 'other'"):
        load(path, "t", "server-0")
    assert load(tmp_path / "none.pt", "t", "server-0") is None


@pytest.mark.integration
def test_a_role_refuses_a_bad_checkpoint_with_one_line(tmp_path, write_spec):
    spec = write_spec(experiment_doc(transport={"auth": "none"}))
    path = path_for(tmp_path, "server-0")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(Boom()))
    from splitbench.executors.local import free_port

    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitbench",
            "role",
            "server",
            "--index",
            "0",
            "--bind",
            f"tcp://127.0.0.1:{free_port()}",
            "--spec",
            str(spec),
            "--run-dir",
            str(tmp_path),
            "--cpu-limit",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    lines = (p.stdout + p.stderr).strip().splitlines()
    assert lines[-1].startswith("server-0: ") and "server-0.pt: not a weights-only checkpoint" in lines[-1]
    assert "Traceback" not in p.stdout + p.stderr
    assert not (tmp_path / "PWNED").exists()


# --- the restart policy ----------------------------------------------------------------------


def test_server_and_aggregator_restart_on_failure_with_a_doubling_back_off():
    exp = Experiment.model_validate(
        experiment_doc(
            paradigm={"name": "hfsl", "splitAfter": 2},
            server={"replicas": 2},
            checkpoint={"restarts": 2, "backoffS": 0.5},
        )
    )
    policy = {r.name: (r.restart, r.restart_limit) for r in plan_roles(exp)}
    assert policy == {
        "aggregator-0": ("OnFailure", 2),
        "link-0": ("Never", 0),
        "server-0": ("OnFailure", 2),
        "server-1": ("OnFailure", 2),
        "source-0": ("Never", 0),
        "source-1": ("Never", 0),
    }
    server = plan_roles(exp)["server-0"]
    assert [server.restart_delay(n) for n in range(3)] == [0.5, 1.0, 2.0]
    assert server.restart_delay(20) == MAX_BACKOFF_S


def test_restarts_start_a_dead_role_again_until_its_budget_is_spent(tmp_path):
    exp = Experiment.model_validate(experiment_doc(checkpoint={"restarts": 2, "backoffS": 0.01}))
    plan = {r.name: (r, []) for r in plan_roles(exp)}
    started = []
    restarts = Restarts(exp.name, tmp_path, plan, started.append)
    assert not restarts.handle("source-0", 1)  # Never: its failure is the run's
    assert not restarts.handle("server-0", 2)  # its setup refused something: a restart would too
    for attempt in (1, 2):
        assert restarts.handle("server-0", -9)
        assert restarts.handle("server-0", -9)  # seen again before its restart: still one restart
        time.sleep(0.03 * attempt)
        restarts.start_due()
        assert started == ["server-0"] * attempt
    assert not restarts.handle("server-0", -9)  # past its budget
    rows = [json.loads(line) for line in (tmp_path / "server-0.events.jsonl").read_text().splitlines()]
    assert [(r["event"], r["attempt"], r["exit_code"], r["backoff_s"]) for r in rows] == [
        ("restart", 1, -9, 0.01),
        ("restart", 2, -9, 0.02),
    ]


# --- a killed server or aggregator resumes ------------------------------------------------


def _pid_of(run_dir: Path, kind: str) -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"role {kind} " in cmd and str(run_dir) in cmd:
                return int(d.name)
    return None


def _count(events: Path, event: str) -> int:
    try:
        return events.read_text().count(f'"event": "{event}"')
    except OSError:
        return 0


def _run(tmp_path: Path, doc: dict, kill: tuple[str, str, str, int] | None = None):
    """Run an experiment; with kill=(role kind, instance, event, n): SIGKILL that role once
    the instance's events file holds n such events. Returns (result, record, kill time or None)."""
    exp = Experiment.model_validate(doc)
    out: dict = {}
    runner = threading.Thread(
        target=lambda: out.update(r=LocalExecutor(tmp_path, cpu_limit="off", quiet=True, timeout_s=300).run(exp))
    )
    runner.start()
    t_kill = None
    if kill is not None:
        kind, watched, event, n = kill
        run_dir = (tmp_path / exp.name).resolve()
        events = run_dir / f"{watched}.events.jsonl"
        deadline = time.time() + 240
        while runner.is_alive() and time.time() < deadline and _count(events, event) < n:
            time.sleep(0.02)
        pid = _pid_of(run_dir, kind)
        assert pid is not None and runner.is_alive(), "the run ended before the kill"
        os.kill(pid, signal.SIGKILL)
        t_kill = time.time()
    runner.join(320)
    result = out["r"]
    assert result.ok, result.message
    return result, pd.read_parquet(result.run_dir / "record.parquet"), t_kill


def _final_accuracy(rec: pd.DataFrame) -> float:
    ev = rec[(rec["event"] == "eval") & (rec["exit"] == "final")]
    return float(ev[ev["epoch"] == ev["epoch"].max()]["accuracy"].mean())


def _check_resumed(rec: pd.DataFrame, clean: list[pd.DataFrame], kind: str, t_kill: float) -> dict:
    steps = rec[rec["event"] == "step"]
    assert len(steps) == len(clean[0][clean[0]["event"] == "step"])  # the unfaulted run's step count
    assert not steps.duplicated(["instance", "step"]).any()  # no step recorded twice
    for _, s in steps.groupby("instance"):
        assert sorted(s["step"]) == list(range(len(s)))  # and none missing
    mine = rec[rec["instance"] == f"{kind}-0"]
    restart = mine[mine["event"] == "restart"]
    assert len(restart) == 1 and int(restart["exit_code"].iloc[0]) == -signal.SIGKILL
    statuses = mine.loc[mine["event"] == "session", "status"].tolist()
    assert statuses.count("start") == 2 and "resumed" in statuses  # restarted, from its checkpoint
    done = mine[(mine["event"] == "session") & mine["status"].isin(["served", "aggregated"])]
    assert int(done["duplicates_dropped"].iloc[-1]) == (mine["event"] == "duplicate").sum()
    accs = [_final_accuracy(c) for c in clean]
    acc = _final_accuracy(rec)
    assert min(accs) <= acc <= max(accs), (acc, accs)
    after = mine[mine["time"] > t_kill]
    back = after[(after["event"] == "session") & (after["status"] == "listening")]["time"].min()
    ckpt = rec[rec["event"] == "checkpoint"].groupby("role")["checkpoint_s"].median().to_dict()
    return {
        "accuracy": acc,
        "unfaulted": accs,
        "listening_after_kill_s": back - t_kill,
        "checkpoint_s": ckpt,
        "duplicates": int((mine["event"] == "duplicate").sum()),
        "resends": int((rec["event"] == "resend").sum()),
    }


SEEDS = (0, 1)


def _losses(rec: pd.DataFrame) -> list[float]:
    steps = rec[rec["event"] == "step"].sort_values(["instance", "step"])
    return steps["loss"].tolist()


@pytest.mark.integration
def test_a_killed_split_server_restarts_from_its_checkpoint(tmp_path):
    """One source, so that a run is deterministic: the server is killed mid-run (at a
    random point of a step: the kill follows the source's records) and resumes from its
    checkpoint of the step before."""

    def doc(seed):
        return experiment_doc(
            name=f"split-{seed}",
            seed=seed,
            network=SLOW_LINK,
            sources={"replicas": 1},
            dataset={"name": "synthetic", "samplesPerSource": 256, "testSamples": 128},
            training={"epochs": 2, "batchSize": 32, "lr": 0.05, "replyTimeoutS": 120},
            checkpoint={"every": 1, "backoffS": 0.5},
        )

    clean = [_run(tmp_path / "clean", doc(s))[1] for s in SEEDS]
    _, rec, t_kill = _run(tmp_path / "faulted", doc(0), kill=("server", "source-0", "step", 6))
    m = _check_resumed(rec, clean, "server", t_kill)
    server = rec[rec["instance"] == "server-0"]
    served = server[server["event"] == "server"]
    assert set(served["step"]) == set(rec.loc[rec["event"] == "step", "step"])  # every step served
    lost = int(server.loc[server["event"] == "resume", "lost_updates"].sum())
    if lost == 0:  # the kill fell outside the moment between a reply and its checkpoint: nothing differs
        assert _losses(rec) == pytest.approx(_losses(clean[0]), rel=1e-5)
    first = served[served["time"] > t_kill]["time"].min()
    print(f"split: recovery {first - t_kill:.2f} s to the first served step; lost updates {lost}; {m}")


@pytest.mark.integration
def test_a_killed_fedavg_aggregator_restarts_from_its_checkpoint(tmp_path):
    """The aggregator holds no model: its checkpoint (written before a round's replies) and
    the contributions sent again make the faulted run the unfaulted one, step for step."""

    def doc(seed):
        return experiment_doc(
            name=f"fedavg-{seed}",
            seed=seed,
            network=SLOW_LINK,
            paradigm={"name": "fedavg"},
            dataset={"name": "synthetic", "samplesPerSource": 256, "testSamples": 128},
            training={"epochs": 4, "batchSize": 32, "lr": 0.05, "replyTimeoutS": 120},
            checkpoint={"backoffS": 0.5},
        )

    clean = [_run(tmp_path / "clean", doc(s))[1] for s in SEEDS]
    _, rec, t_kill = _run(tmp_path / "faulted", doc(0), kill=("aggregator", "aggregator-0", "checkpoint", 1))
    m = _check_resumed(rec, clean, "aggregator", t_kill)
    assert _losses(rec) == pytest.approx(_losses(clean[0]), rel=1e-5)
    agg = rec[rec["instance"] == "aggregator-0"]
    rounds = agg[agg["event"] == "aggregate"]
    assert sorted(set(rounds["round"])) == list(range(4))  # every round averaged,
    for incarnation in (rounds[rounds["time"] < t_kill], rounds[rounds["time"] > t_kill]):
        assert not incarnation["round"].duplicated().any()  # once by each run of the aggregator
    print(f"fedavg: {m}")


@pytest.mark.integration
def test_a_killed_source_started_again_resumes_its_partition(tmp_path):
    """Sources are not restarted by the local executor (a Job's pod is, on Kubernetes): a
    source killed mid-run and started again with the same arguments goes on from its
    checkpoint, and the run trains exactly as one without the fault."""
    from splitbench.roleplan import SPEC_FILE

    def doc(name):
        return experiment_doc(
            name=name,
            network=SLOW_LINK,
            sources={"replicas": 1},
            transport={"auth": "none"},
            dataset={"name": "synthetic", "samplesPerSource": 256, "testSamples": 128},
            training={"epochs": 2, "batchSize": 32, "lr": 0.05, "replyTimeoutS": 120},
            checkpoint={"every": 1},
        )

    clean = _run(tmp_path / "clean", doc("clean"))[1]
    exp = Experiment.model_validate(doc("faulted"))
    run_dir = tmp_path / "faulted"
    run_dir.mkdir()
    (run_dir / SPEC_FILE).write_text(exp.to_yaml())
    argv = dict(
        (r.name, a + ["--cpu-limit", "off"]) for r, a in LocalExecutor(tmp_path, metrics=False).processes(exp, run_dir)
    )
    procs = {name: subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for name, a in argv.items()}
    try:
        events = run_dir / "source-0.events.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and _count(events, "step") < 6 and procs["source-0"].poll() is None:
            time.sleep(0.02)
        assert procs["source-0"].poll() is None, "the source ended before the kill"
        procs["source-0"].kill()
        procs["source-0"].wait()
        procs["source-0"] = subprocess.Popen(argv["source-0"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for name, p in procs.items():
            assert p.wait(240) == 0, name
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    from splitbench.record import merge

    rec = merge(run_dir)
    steps = rec[rec["event"] == "step"].sort_values("step")
    assert steps["step"].tolist() == list(range(16))  # each step once: none lost, none twice
    redone = rec[rec["event"] == "redo"]  # trained again after the checkpoint: same batch, same loss
    assert len(redone) <= 1 and set(redone["step"]) <= set(steps["step"])
    for _, r in redone.iterrows():
        assert r["loss"] == pytest.approx(steps.loc[steps["step"] == r["step"], "loss"].iloc[0], rel=1e-5)
    source = rec[rec["instance"] == "source-0"]
    assert source.loc[source["event"] == "session", "status"].tolist().count("resumed") == 1
    assert _losses(rec) == pytest.approx(_losses(clean), rel=1e-5)
