"""The operator's pods run for real: the objects its builders make for a quick split
experiment (spec ConfigMap, link and server Pods, the sources' Job) are played by podman
(`podman kube play`) on one network, and the run completes with the payload bytes of the
local executor.

What kube play cannot express, and what this test does instead (the same settings the
operator sets, only delivered differently):
- Services: a Service's DNS name (`<child>.<namespace>.svc`) does not resolve on a podman
  network, but a pod's name does, and every Service here is named as the pod it selects;
  so the test writes each peer address as the pod's name.
- Jobs: kube play runs Pods only; the Indexed Job's template becomes one Pod per completion,
  with SOURCE_INDEX given as a value instead of the downward API's completion index.
- Secrets: podman 4.3 crashes on a Secret volume, so each pod's `keys` volume becomes a
  hostPath folder holding exactly the items that volume projects (its own secret key and the
  public keys), owned by the image's user.
- containerPort: podman 4.3 publishes each declared port on the host, so two pods with the
  metrics port collide; ports are dropped (pods reach each other on the network directly).
- NetworkPolicy, owner references and the garbage collector: not played (no API server).
The record comes back as on a cluster: from each pod's log (SPLITBENCH_EVENTS_STDOUT=1).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from splitbench.executors import LocalExecutor
from splitbench.record import events_from_log, merge
from splitbench.spec import Experiment
from splitbench_operator.builders import Images, build
from support import experiment_doc
from test_docker_executor import payload_per_sample

pytestmark = [pytest.mark.integration, pytest.mark.containers, pytest.mark.slow]

NAMESPACE = "kubeplay"


def playable(objs: list[dict], keys_root: Path) -> list[dict]:
    """The builders' objects as kube play takes them (see the module's docstring)."""
    svc = re.compile(rf"tcp://([a-z0-9-]+)\.{NAMESPACE}\.svc:")
    secrets = {o["metadata"]["name"]: o["stringData"] for o in objs if o["kind"] == "Secret"}
    out = []
    for o in objs:
        o = copy.deepcopy(o)
        if o["kind"] in ("Service", "NetworkPolicy", "Secret"):
            continue
        if o["kind"] == "Job":
            for i in range(o["spec"]["completions"]):
                pod_spec = copy.deepcopy(o["spec"]["template"]["spec"])
                c = pod_spec["containers"][0]
                c["env"] = [e for e in c["env"] if e["name"] != "SOURCE_INDEX"] + [
                    {"name": "SOURCE_INDEX", "value": str(i)}
                ]
                c["args"] = [a.replace("$(SOURCE_INDEX)", str(i)) for a in c["args"]]
                meta = {"name": f"{o['metadata']['name']}-{i}", "labels": o["spec"]["template"]["metadata"]["labels"]}
                out.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec})
            continue
        o["metadata"].pop("ownerReferences", None)
        out.append(o)
    for o in out:
        if o["kind"] == "Pod":
            for v in o["spec"]["volumes"]:
                if "secret" in v:
                    folder = keys_root / o["metadata"]["name"]
                    folder.mkdir(parents=True)
                    data = secrets[v["secret"]["secretName"]]
                    for item in v["secret"]["items"]:  # as the kubelet projects them: root-owned, the
                        path = folder / item["path"]  # item's mode, the pod's fsGroup (10001)
                        path.write_text(data[item["key"]])
                        os.chown(path, 0, 10001)
                        os.chmod(path, item.get("mode", v["secret"].get("defaultMode", 0o644)) | 0o040)
                    os.chown(folder, 0, 10001)
                    os.chmod(folder, 0o750)
                    del v["secret"]
                    v["hostPath"] = {"path": str(folder), "type": "Directory"}
            c = o["spec"]["containers"][0]
            c["args"] = [svc.sub(r"tcp://\1:", a) for a in c["args"]]
            c.pop("ports", None)
    return out


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ}
    from container_engine import podman_env  # the project's containers.conf (runc, ulimits)

    env.update(podman_env())
    done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"podman {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


@pytest.mark.skipif(
    os.geteuid() != 0, reason="podman kube play as root is needed (the keys are handed to the pods' user, uid 10001)"
)
def test_the_operators_pods_run_under_podman_kube_play(container_engine, tmp_path):
    if not shutil.which("podman"):  # checked here: the container_engine fixture installs podman where it can
        pytest.skip("podman kube play is needed; this engine is not podman")
    doc = experiment_doc(name="kubeplay", network={"profile": "wifi6"})
    doc["spec"]["training"]["maxStepsPerEpoch"] = 3
    exp = Experiment.model_validate(doc)
    objs = build(
        exp,
        "uid-kubeplay",
        NAMESPACE,
        Images(edge=container_engine.images.get("splitbench-edge:latest").tags[0], pull_policy="Never"),
    )
    manifest = tmp_path / "experiment.yaml"
    played = playable(objs, tmp_path / "keys")
    manifest.write_text(yaml.safe_dump_all(played, sort_keys=False))
    network = "sb-kubeplay-test"
    podman("network", "create", network, check=False)
    pods = [o["metadata"]["name"] for o in played if o["kind"] == "Pod"]
    try:
        podman("kube", "play", "--network", network, str(manifest))
        containers = {pod: f"{pod}-{_container(objs, pod)}" for pod in pods}
        deadline = time.time() + 240
        states: dict[str, str] = {}
        while time.time() < deadline:  # bounded: every role exits, or the test fails below
            states = {
                c: podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", c).stdout.strip()
                for c in containers.values()
            }
            if all(s.startswith("exited") for s in states.values()):
                break
            time.sleep(2)
        assert all(s == "exited 0" for s in states.values()), states
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        for pod, c in containers.items():
            out = podman("logs", c)
            log = out.stdout + out.stderr
            (run_dir / f"{pod}.log").write_text(log)
            (run_dir / f"{pod}.events.jsonl").write_text(events_from_log(log))
        rec = merge(run_dir)
    finally:
        podman("kube", "down", str(manifest), check=False)
        podman("network", "rm", "-f", network, check=False)
    local = LocalExecutor(tmp_path / "local", quiet=True, timeout_s=240).run(exp)
    assert local.ok, local.message
    assert payload_per_sample(rec) == payload_per_sample(pd.read_parquet(local.run_dir / "record.parquet"))
    assert len(rec[rec["event"] == "step"]) == 6


def _container(objs: list[dict], pod: str) -> str:
    for o in objs:
        if o["kind"] == "Pod" and o["metadata"]["name"] == pod:
            return o["spec"]["containers"][0]["name"]
    return "source"
