"""Pure object builders: an Experiment (the validated spec) -> every Kubernetes object its
run needs, as plain dicts. No API calls here; the handlers create what these return.

One ConfigMap holds the spec; each role is a Pod (servers, aggregator, link) or an Indexed
Job (the sources, one completion per source) running `splitbench role ...`, as the local
executor does. Servers, the aggregator and the link get a Service each, so peers find them
by DNS. Device profiles become resources.limits (the role detects the inherited quota);
a GPU server asks for nvidia.com/gpu and, if given, a runtimeClassName. Every object is
owned by the Experiment, so deleting it deletes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from splitbench.devices import resolve_device
from splitbench.link import resolve_network
from splitbench.executors.topology import topology
from splitbench.spec import API_VERSION, Experiment

PORT, METRICS_PORT = 5555, 9100
SPEC_DIR, RUN_DIR = "/etc/splitbench", "/var/run/splitbench"


@dataclass(frozen=True)
class Images:
    edge: str = "splitbench-edge:latest"
    gpu: str = "splitbench-gpu:latest"
    pull_policy: str = "IfNotPresent"
    runtime_class: str | None = None  # e.g. "nvidia" where the GPU runtime is not the default


def labels(exp: Experiment, role: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": "splitbench", "app.kubernetes.io/managed-by": "splitbench-operator",
           "splitbench.dev/experiment": exp.name}
    if role:
        out["splitbench.dev/role"] = role
    return out


def labels_selector(experiment: str) -> str:
    """The label selector of every child of the experiment."""
    return f"splitbench.dev/experiment={experiment}"


def owner_reference(exp_uid: str, name: str) -> dict:
    kind_version = API_VERSION
    return {"apiVersion": kind_version, "kind": "Experiment", "name": name, "uid": exp_uid,
            "controller": True, "blockOwnerDeletion": True}


def _meta(exp: Experiment, name: str, role: str | None, uid: str, namespace: str) -> dict:
    return {"name": name, "namespace": namespace, "labels": labels(exp, role),
            "ownerReferences": [owner_reference(uid, exp.name)]}


def _child(exp: Experiment, suffix: str) -> str:
    """A child's name: the experiment's (cut to 40 characters, the same for every child) and
    the child's role, a DNS label for any suffix up to 22 characters."""
    return f"{exp.name[:40].rstrip('-')}-{suffix}"


def _resources(device_spec) -> dict:
    device = resolve_device(device_spec)
    limits = {}
    if device.cpu:
        limits["cpu"] = f"{int(round(device.cpu * 1000))}m"
    if device.memory:
        limits["memory"] = device.memory
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def _container(name: str, image: str, args: list[str], resources: dict, pull: str, ports: bool) -> dict:
    c = {"name": name, "image": image, "imagePullPolicy": pull,
         "args": ["role", *args, "--spec", f"{SPEC_DIR}/spec.yaml", "--run-dir", RUN_DIR,
                  "--metrics-port", str(METRICS_PORT), "--metrics-addr", "0.0.0.0"],
         "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
         "volumeMounts": [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
                          {"name": "run", "mountPath": RUN_DIR}],
         # a pod's files die with it: its events also go to its log, read back by the executor
         "env": [{"name": "SPLITBENCH_EVENTS_STDOUT", "value": "1"}],
         "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False}}
    if ports:
        c["ports"].insert(0, {"name": "zmq", "containerPort": PORT})
    if resources:
        c["resources"] = resources
    return c


def _pod_spec(exp: Experiment, container: dict, restart: str) -> dict:
    return {"restartPolicy": restart, "containers": [container],
            "volumes": [{"name": "spec", "configMap": {"name": _child(exp, "spec")}},
                        {"name": "run", "emptyDir": {}}]}


def _annotations() -> dict:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT), "prometheus.io/path": "/metrics"}


def _address(exp: Experiment, suffix: str, namespace: str) -> str:
    return f"tcp://{_child(exp, suffix)}.{namespace}.svc:{PORT}"


def spec_configmap(exp: Experiment, uid: str, namespace: str) -> dict:
    doc = exp.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(exp, _child(exp, "spec"), None, uid, namespace),
            "data": {"spec.yaml": yaml.safe_dump(doc, sort_keys=False)}}


def _service(exp: Experiment, suffix: str, role: str, uid: str, namespace: str, selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(exp, _child(exp, suffix), role, uid, namespace),
            "spec": {"selector": selector, "ports": [{"name": "zmq", "port": PORT, "targetPort": "zmq"}]}}


def _pod(exp: Experiment, suffix: str, role: str, uid: str, namespace: str, container: dict,
         extra_labels: dict | None = None, runtime_class: str | None = None) -> dict:
    meta = _meta(exp, _child(exp, suffix), role, uid, namespace)
    meta["labels"].update(extra_labels or {})
    meta["annotations"] = _annotations()
    spec = _pod_spec(exp, container, "Never")
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def build(exp: Experiment, uid: str, namespace: str = "default", images: Images = Images()) -> list[dict]:
    """Every object of the experiment's run, in creation order."""
    spec = exp.spec
    if not spec.uses_network:
        c = _container("trainer", images.edge, ["trainer"], _resources(spec.server.device), images.pull_policy, False)
        return [spec_configmap(exp, uid, namespace), _pod(exp, "trainer", "trainer", uid, namespace, c)]
    top = topology(spec)
    k = spec.sources.replicas
    servers = top.servers
    emulated = resolve_network(spec.network).emulated
    objects = [spec_configmap(exp, uid, namespace)]
    agg = _address(exp, "aggregator", namespace) if top.aggregator else None
    relay = _address(exp, "link", namespace) if emulated else None
    server_at = [_address(exp, f"server-{j}", namespace) for j in range(servers)]
    direct = top.routes(k, server_at, agg)
    if agg:  # the high-computational device: the CUDA image where the experiment has GPUs (DESIGN.md)
        c = _container("aggregator", images.gpu if spec.server.gpu else images.edge,
                       ["aggregator", "--bind", f"tcp://*:{PORT}"],
                       _resources(spec.aggregator.device), images.pull_policy, True)
        objects += [_service(exp, "aggregator", "aggregator", uid, namespace, labels(exp, "aggregator")),
                    _pod(exp, "aggregator", "aggregator", uid, namespace, c)]
    for j in range(servers):
        gpu = spec.server.gpu
        c = _container("server", images.gpu if gpu else images.edge,
                       ["server", "--index", str(j), "--bind", f"tcp://*:{PORT}",
                        *(["--aggregator", relay or agg] if agg else [])],
                       _resources(spec.server.device), images.pull_policy, True)
        if gpu:
            c.setdefault("resources", {"limits": {}, "requests": {}})
            c["resources"]["limits"]["nvidia.com/gpu"] = str(gpu)
            c["resources"].setdefault("requests", {})["nvidia.com/gpu"] = str(gpu)
        index = {"splitbench.dev/index": str(j)}
        objects += [_service(exp, f"server-{j}", "server", uid, namespace, {**labels(exp, "server"), **index}),
                    _pod(exp, f"server-{j}", "server", uid, namespace, c, index,
                         images.runtime_class if gpu else None)]
    if relay:
        routes = [f"--route={rid}={addr}" for rid, addr in direct.items()]
        c = _container("link", images.edge, ["link", "--bind", f"tcp://*:{PORT}", "--connect",
                                             server_at[0] if servers else agg, *routes],
                       {}, images.pull_policy, True)
        objects += [_service(exp, "link", "link", uid, namespace, labels(exp, "link")),
                    _pod(exp, "link", "link", uid, namespace, c)]
    objects.append(sources_job(exp, uid, namespace, images, relay or None, direct, top.second_peer, agg))
    return objects


def sources_job(exp: Experiment, uid: str, namespace: str, images: Images, relay: str | None, direct: dict,
                second_peer: bool, agg: str | None) -> dict:
    """The K sources as one Indexed Job: completion i runs source i."""
    spec = exp.spec
    k = spec.sources.replicas
    first = relay or direct["source-0"]
    if relay is None and len(set(v for key, v in direct.items() if ">" not in key)) > 1:
        first = "$(SERVER_ADDRESS)"  # hfsl without emulation: each source has its own server
    args = ["source", "--index", "$(SOURCE_INDEX)", "--connect", first,
            *(["--aggregator", relay or agg] if second_peer else [])]
    c = _container("source", images.edge, args, _resources(spec.sources.device), images.pull_policy, False)
    c["env"] += [{"name": "SOURCE_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    if first == "$(SERVER_ADDRESS)":
        c["env"].append({"name": "SERVER_ADDRESS", "value": _address(exp, "server-$(SOURCE_INDEX)", namespace)})
    template = {"metadata": {"labels": labels(exp, "source"), "annotations": _annotations()},
                "spec": _pod_spec(exp, c, "Never")}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(exp, _child(exp, "sources"), "source", uid, namespace),
            "spec": {"completions": k, "parallelism": k, "completionMode": "Indexed", "backoffLimit": 0,
                     "template": template}}
