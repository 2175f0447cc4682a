"""The Kubernetes executor end to end against kmock's emulator: the real operator (kopf)
creates the children; a stand-in kubelet runs nothing but reports the pods finished and
serves, as their logs, the output of a real local run's roles (printed with
SPLITBENCH_EVENTS_STDOUT=1, as the operator's pods do). The executor must bring back the
same record the local executor wrote, and delete the experiment and its children."""

import re
import threading

import kmock
import kubernetes
import pytest
from kopf.testing import KopfRunner

from splitbench.executors import KubernetesExecutor, LocalExecutor
from splitbench.record import BYTE_COLUMNS, events_from_log, load
from splitbench.spec import Experiment
from splitbench_operator.builders import RUN_DIR, Images, records_reader
from support import experiment_doc
from support.kube_emulator import NS, cluster, wait  # noqa: F401 (cluster: a fixture)

KOPF = ["run", "--standalone", "--all-namespaces", "-m", "splitbench_operator.handlers"]


def mine(items, name="exp"):
    return [i for i in items if (i.metadata.labels or {}).get("splitbench.dev/experiment") == name]


def kubelet(stop: threading.Event, logs: dict, sources: int, restarted: tuple[str, ...] = ()) -> None:
    """Create the Job's pods, then report every pod and the Job finished (the pods named in
    `restarted` after one restart in place); then the records reader pod, once it exists."""
    core, batch = kubernetes.client.CoreV1Api(), kubernetes.client.BatchV1Api()
    while not stop.wait(0.2):
        jobs = mine(batch.list_namespaced_job(NS).items)
        if not jobs:
            continue
        for i in range(sources):
            name = f"exp-sources-{i}-x7k2p"
            if not any(p.metadata.name == name for p in core.list_namespaced_pod(NS).items):
                core.create_namespaced_pod(
                    NS,
                    {
                        "metadata": {
                            "name": name,
                            "namespace": NS,
                            "labels": {"splitbench.dev/experiment": "exp", "splitbench.dev/role": "source"},
                        }
                    },
                )
                logs[name] = logs[f"source-{i}"]
        for pod in mine(core.list_namespaced_pod(NS).items):
            if (pod.status and pod.status.phase) != "Succeeded":
                restarts = [{"name": "main", "image": "edge", "imageID": "", "ready": False, "restartCount": 1}]
                core.patch_namespaced_pod_status(
                    pod.metadata.name,
                    NS,
                    {
                        "status": {
                            "phase": "Succeeded",
                            **({"containerStatuses": restarts} if pod.metadata.name in restarted else {}),
                        }
                    },
                )
        batch.patch_namespaced_job_status(
            jobs[0].metadata.name,
            NS,
            {"status": {"succeeded": sources, "conditions": [{"type": "Complete", "status": "True"}]}},
        )
        break
    while not stop.wait(0.2):
        for pod in mine(core.list_namespaced_pod(NS).items):
            if pod.metadata.labels.get("splitbench.dev/role") == "records":
                core.patch_namespaced_pod_status(pod.metadata.name, NS, {"status": {"phase": "Succeeded"}})
                return


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One real local run whose roles print their events as the operator's pods do."""
    exp = Experiment.model_validate(experiment_doc(name="exp", network={"profile": "ethernet-100m"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPLITBENCH_EVENTS_STDOUT", "1")
        local = LocalExecutor(tmp_path_factory.mktemp("local"), metrics=False, quiet=True, timeout_s=120).run(exp)
    assert local.ok, local.message
    return exp, local


def serve_logs(cluster, logs: dict, previous: dict) -> None:
    """Pod logs as the kubelet serves them: ?previous=true is the container before the restart."""

    def log(req):
        pod = req.url.path.split("/")[-2]
        text = (previous if req.params.get("previous") == "true" else logs)[pod]
        return kmock.Response(payload=text.encode(), headers={"Content-Type": "text/plain"})

    cluster.api["get", re.compile(r"/api/v1/namespaces/bench/pods/[^/]+/log")] << log


def same_record(got, want) -> None:
    cols = ["time", "instance", "event", *BYTE_COLUMNS]  # every event, to the microsecond and byte
    key = lambda df: df[df["event"] != "launch"][cols].sort_values(cols[:3]).reset_index(drop=True)  # noqa: E731
    assert len(got[got["event"] == "step"]) == len(want[want["event"] == "step"]) > 0
    assert key(got).equals(key(want))


@pytest.mark.slow
def test_a_run_on_the_cluster_comes_back_as_the_same_record(cluster, local_run, tmp_path):
    """From the pods' logs; the server restarted once in place: its record is its previous
    container's log followed by the current one's, as if the restart appended to it."""
    exp, local = local_run
    logs = {"exp-server-0": "server-0", "exp-link": "link-0"}
    logs = {
        **{k: (local.run_dir / f"{v}.log").read_text() for k, v in logs.items()},
        **{f"source-{i}": (local.run_dir / f"source-{i}.log").read_text() for i in range(2)},
    }
    lines = logs["exp-server-0"].splitlines(keepends=True)
    previous = {"exp-server-0": "".join(lines[: len(lines) // 2])}
    logs["exp-server-0"] = "".join(lines[len(lines) // 2 :])
    assert events_from_log(previous["exp-server-0"]) and events_from_log(logs["exp-server-0"])
    serve_logs(cluster, logs, previous)

    stop = threading.Event()
    fake = threading.Thread(target=kubelet, args=(stop, logs, 2, ("exp-server-0",)), daemon=True)
    with KopfRunner(KOPF, timeout=60) as runner:
        fake.start()
        result = KubernetesExecutor(tmp_path / "k8s", poll_s=0.2, quiet=True, timeout_s=60).run(exp)
        stop.set()
        assert result.ok, result.message
        core = kubernetes.client.CoreV1Api()
        wait("the children deleted", lambda: not mine(core.list_namespaced_pod(NS).items))
    assert runner.exception is None
    assert result.message.startswith("succeeded in")
    same_record(load(result.run_dir), load(local.run_dir))
    assert (result.run_dir / "exp-server-0.log").exists()


def test_with_a_records_volume_the_record_comes_back_through_the_reader_pod(
    cluster, local_run, tmp_path, monkeypatch, capsys
):
    """The roles' events files on the volume (here: the local run's), printed by the reader
    pod's own program; the pods' logs hold no events (as after a pod was deleted)."""
    exp, local = local_run
    monkeypatch.setenv("SPLITBENCH_RECORDS_PERSISTENCE", '{"enabled": true}')
    program = records_reader(exp, "uid", NS, Images())["spec"]["containers"][0]["command"][-1]
    exec(compile(program.replace(RUN_DIR, str(local.run_dir)), "reader", "exec"), {})
    logs = {
        "exp-server-0": "no events here\n",
        "exp-link": "",
        "exp-records": capsys.readouterr().out,
        **{f"source-{i}": "" for i in range(2)},
    }
    serve_logs(cluster, logs, {})

    stop = threading.Event()
    fake = threading.Thread(target=kubelet, args=(stop, logs, 2), daemon=True)
    with KopfRunner(KOPF, timeout=60) as runner:
        fake.start()
        result = KubernetesExecutor(tmp_path / "k8s", poll_s=0.2, quiet=True, timeout_s=60).run(exp)
        stop.set()
        assert result.ok, result.message
    assert runner.exception is None
    assert result.message.startswith("succeeded in") and "not read back" not in result.message
    same_record(load(result.run_dir), load(local.run_dir))
    assert sorted(p.name for p in result.run_dir.glob("*.events.jsonl")) == sorted(
        p.name for p in local.run_dir.glob("*.events.jsonl")
    )  # one per role, as the local run
    assert not (result.run_dir / "exp-records.log").exists()  # the reader is not a role


def test_no_cluster_is_a_one_line_error_and_keeps_the_run_folder(tmp_path, monkeypatch):
    from splitbench.executors.kubeapi import api_client

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setattr("splitbench.executors.kubeapi._SA_NAMESPACE", tmp_path / "no-namespace")
    api_client.cache_clear()
    exp = Experiment.model_validate(experiment_doc(name="exp"))
    result = KubernetesExecutor(tmp_path / "runs", quiet=True).run(exp)
    api_client.cache_clear()
    assert not result.ok and "no Kubernetes cluster configured" in result.message and "\n" not in result.message
    assert (result.run_dir / "status.txt").read_text().startswith("failed: no Kubernetes cluster configured")
