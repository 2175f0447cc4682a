"""Pure object builders: an Experiment (the validated spec) -> every Kubernetes object its
run needs, as plain dicts. No API calls here; the handlers create what these return.

The roles come from the role plan (splitbench.roleplan), as for every executor. One
ConfigMap holds the spec; each role is a Pod (servers, aggregator, link) or an Indexed Job
(the sources, one completion per source) running `splitbench role ...`. Servers, the aggregator and the link get a Service each, so peers find them
by DNS. Device profiles become resources.limits (the role detects the inherited quota);
a GPU server asks for nvidia.com/gpu and, if given, a runtimeClassName. Every object is
owned by the Experiment, so deleting it deletes them.

Records: with a RecordsVolume (the chart's records.persistence) every pod mounts one
PersistentVolumeClaim per Experiment as its run folder, so a role's events file outlives
its pod and a restarted role appends to it; records_reader() is the pod that prints those
files back for the executor. Without one the run folder is an emptyDir and the executor
reads the events from the pods' logs (current and previous container).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from splitbench.record import EVENT_PREFIX
from splitbench.roleplan import (
    METRICS_PORT,
    PORT,
    RESTART_LIMIT,
    SPEC_FILE,
    Role,
    one_process_per_source,
    plan_roles,
    role_names,
)
from splitbench.spec import API_VERSION, Experiment

from . import security

SPEC_DIR, RUN_DIR = "/etc/splitbench", "/var/run/splitbench"
CPU_REQUEST = "250m"
MOUNTS = {"spec": SPEC_DIR, "run": RUN_DIR}


@dataclass(frozen=True)
class Images:
    edge: str = "splitbench-edge:latest"
    gpu: str = "splitbench-gpu:latest"
    pull_policy: str = "IfNotPresent"
    runtime_class: str | None = None  # e.g. "nvidia" where the GPU runtime is not the default


@dataclass(frozen=True)
class RecordsVolume:
    """The chart's records.persistence: a PersistentVolumeClaim per Experiment for the run
    folder. Every role of the run mounts it, so on a multi-node cluster the access mode must
    let them (ReadWriteMany, or ReadWriteOnce where the roles share a node)."""

    size: str = "1Gi"
    storage_class: str | None = None  # None: the cluster's default class
    access_mode: str = "ReadWriteOnce"


def labels(exp: Experiment, role: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "splitbench",
        "app.kubernetes.io/managed-by": "splitbench-operator",
        "splitbench.dev/experiment": exp.name,
    }
    if role:
        out["splitbench.dev/role"] = role
    return out


def labels_selector(experiment: str) -> str:
    """The label selector of every child of the experiment."""
    return f"splitbench.dev/experiment={experiment}"


def owner_reference(exp_uid: str, name: str) -> dict:
    kind_version = API_VERSION
    return {
        "apiVersion": kind_version,
        "kind": "Experiment",
        "name": name,
        "uid": exp_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(exp: Experiment, name: str, role: str | None, uid: str, namespace: str) -> dict:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(exp, role),
        "annotations": {security.SPEC_HASH: security.spec_hash(exp)},
        "ownerReferences": [owner_reference(uid, exp.name)],
    }


def _child(exp: Experiment, suffix: str) -> str:
    """A child's name: unique per experiment and role, a DNS label of at most 63 characters."""
    return security.child_name(exp.name, suffix)


def _resources(role: Role) -> dict:
    """The plan's quota as limits (requests equal); a role without a CPU quota (servers,
    the aggregator, the link emulator) requests CPU_REQUEST and gets no CPU limit, so that
    the testbed does not throttle what it measures."""
    limits = {}
    if role.cpu:
        limits["cpu"] = f"{int(round(role.cpu * 1000))}m"
    if role.memory:
        limits["memory"] = role.memory
    if role.gpu:
        limits["nvidia.com/gpu"] = str(role.gpu)
    requests = dict(limits)
    requests.setdefault("cpu", CPU_REQUEST)
    if role.memory_request:
        requests["memory"] = role.memory_request
    return {"limits": limits, "requests": requests}


def _container(role: Role, image: str, args: list[str], resources: dict, pull: str) -> dict:
    c = {
        "name": role.kind,
        "image": image,
        "imagePullPolicy": pull,
        "args": args,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "volumeMounts": [{"name": v.name, "mountPath": MOUNTS[v.name], "readOnly": v.read_only} for v in role.volumes],
        # a pod's files die with it: its events also go to its log, read back by the executor
        "env": [{"name": k, "value": v} for k, v in (*role.env, ("SPLITBENCH_EVENTS_STDOUT", "1"))],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    if role.listens:
        c["ports"].insert(0, {"name": "zmq", "containerPort": PORT})
    if resources:
        c["resources"] = resources
    return c


def _run_volume(exp: Experiment, records: RecordsVolume | None) -> dict:
    if records is None:
        return {"name": "run", "emptyDir": {}}
    return {"name": "run", "persistentVolumeClaim": {"claimName": _child(exp, "records")}}


def _pod_spec(
    exp: Experiment, container: dict, restart: str, keys: list[str] = (), records: RecordsVolume | None = None
) -> dict:
    """A role's pod: the spec and the run folder mounted, its keys where the transport is
    authenticated, hardened (security.harden_pod: non-root, read-only root, no capabilities,
    seccomp, no service-account token)."""
    spec = {
        "restartPolicy": restart,
        "containers": [container],
        "volumes": [{"name": "spec", "configMap": {"name": _child(exp, "spec")}}, _run_volume(exp, records)],
    }
    if keys:
        volume, mount, env = security.keys_volume(exp, keys[0], role_names(exp.spec))
        for other in keys[1:]:  # the sources' Job: one template for every source's key
            volume["secret"]["items"].append({"key": f"{other}.key", "path": f"{other}.key", "mode": 0o400})
        spec["volumes"].append(volume)
        container["volumeMounts"].append(mount)
        container["env"].append(env)
    return security.harden_pod(spec, container["name"])


def _annotations() -> dict:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT), "prometheus.io/path": "/metrics"}


def _address(exp: Experiment, suffix: str, namespace: str) -> str:
    return f"tcp://{_child(exp, suffix)}.{namespace}.svc:{PORT}"


def suffix(role: Role) -> str:
    """A role's child-name suffix: its kind for the one-of-a-kind roles, else its name."""
    return role.kind if role.kind in ("link", "aggregator", "trainer") else role.name


def spec_configmap(exp: Experiment, uid: str, namespace: str) -> dict:
    doc = exp.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(exp, _child(exp, "spec"), None, uid, namespace),
        "data": {SPEC_FILE: yaml.safe_dump(doc, sort_keys=False)},
    }


def _service(exp: Experiment, suffix: str, role: str, uid: str, namespace: str, selector: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(exp, _child(exp, suffix), role, uid, namespace),
        "spec": {"selector": selector, "ports": [{"name": "zmq", "port": PORT, "targetPort": "zmq"}]},
    }


def _pod(
    exp: Experiment,
    suffix: str,
    role: str,
    uid: str,
    namespace: str,
    container: dict,
    extra_labels: dict | None = None,
    runtime_class: str | None = None,
    restart: str = "Never",
    keys: list[str] = (),
    records: RecordsVolume | None = None,
) -> dict:
    meta = _meta(exp, _child(exp, suffix), role, uid, namespace)
    meta["labels"].update(extra_labels or {})
    meta["annotations"].update(_annotations())
    spec = _pod_spec(exp, container, restart, keys, records)
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def role_args(role: Role, address) -> list[str]:
    """The container's arguments for a role of the plan (the image's entrypoint is splitbench)."""
    return role.args(
        address,
        bind=f"tcp://*:{PORT}",
        spec_path=f"{SPEC_DIR}/{SPEC_FILE}",
        run_dir=RUN_DIR,
        metrics_port=METRICS_PORT,
        metrics_addr="0.0.0.0",
    )


def _role_container(role: Role, images: Images, args: list[str]) -> dict:
    resources = _resources(role)
    return _container(role, images.gpu if role.image == "gpu" else images.edge, args, resources, images.pull_policy)


def _keys(exp: Experiment, roles: list[Role]) -> list[str]:
    return [r.name for r in roles] if exp.spec.transport.auth == "curve" else []


def records_claim(exp: Experiment, uid: str, namespace: str, records: RecordsVolume) -> dict:
    """The run folder that outlives every pod of the run (owned by the Experiment: deleted with it)."""
    spec = {"accessModes": [records.access_mode], "resources": {"requests": {"storage": records.size}}}
    if records.storage_class:
        spec["storageClassName"] = records.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(exp, _child(exp, "records"), None, uid, namespace),
        "spec": spec,
    }


# The reader prints every complete line of every events file (a line cut by a crash is not
# complete), each behind the prefix the roles use in their logs, so the executor reads it
# as it reads a role's log. Plain Python: the edge image's venv, nothing to install.
_READER = (
    "import glob, sys\n"
    f"for p in sorted(glob.glob('{RUN_DIR}/*.events.jsonl')):\n"
    "    for line in open(p):\n"
    "        if line.endswith('\\n'):\n"
    f"            sys.stdout.write({EVENT_PREFIX!r} + line)\n"
)


def records_reader(exp: Experiment, uid: str, namespace: str, images: Images) -> dict:
    """A pod that mounts the records volume read-only and prints its events to its log, for
    the executor to read back: a pod log is what both a cluster and an API emulator serve
    (no exec, no port-forward, no storage-specific access)."""
    c = {
        "name": "records",
        "image": images.edge,
        "imagePullPolicy": images.pull_policy,
        "command": ["python", "-c", _READER],
        "volumeMounts": [{"name": "run", "mountPath": RUN_DIR, "readOnly": True}],
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    spec = security.harden_pod(
        {"restartPolicy": "OnFailure", "containers": [c], "volumes": [_run_volume(exp, RecordsVolume())]}, "records"
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(exp, _child(exp, "records"), "records", uid, namespace),
        "spec": spec,
    }


def build(
    exp: Experiment,
    uid: str,
    namespace: str = "default",
    images: Images = Images(),
    metrics_namespaces: dict | None = None,
    records: RecordsVolume | None = None,
) -> list[dict]:
    """Every object of the experiment's run, in creation order: the records volume where
    there is one, the role plan, each listener behind a Service, the sources as one Indexed Job."""
    one_process_per_source(exp.spec, "kubernetes")
    plan = plan_roles(exp)
    by_name = {r.name: r for r in plan}

    def address(name: str) -> str:
        return _address(exp, suffix(by_name[name]), namespace)

    objects = [spec_configmap(exp, uid, namespace)]
    if records is not None:
        objects.append(records_claim(exp, uid, namespace, records))
    if exp.spec.transport.auth == "curve":
        objects.append(security.keys_secret(exp, uid, namespace, role_names(exp.spec)))
    objects.append(security.network_policy(exp, uid, namespace, PORT, METRICS_PORT, metrics_namespaces))
    for role in plan:
        if role.kind == "source":
            continue
        c = _role_container(role, images, role_args(role, address))
        index = {"splitbench.dev/index": str(role.index)} if role.kind == "server" else {}
        if role.listens:
            objects.append(_service(exp, suffix(role), role.kind, uid, namespace, {**labels(exp, role.kind), **index}))
        objects.append(
            _pod(
                exp,
                suffix(role),
                role.kind,
                uid,
                namespace,
                c,
                index,
                images.runtime_class if role.gpu else None,
                role.restart,
                _keys(exp, [role]),
                records,
            )
        )
    sources = plan.of_kind("source")
    if sources:
        objects.append(sources_job(exp, uid, namespace, images, sources, address, records))
    return objects


def sources_job(
    exp: Experiment,
    uid: str,
    namespace: str,
    images: Images,
    sources: list[Role],
    address,
    records: RecordsVolume | None = None,
) -> dict:
    """The K sources as one Indexed Job: completion i runs source i. The plan's sources differ
    only in their index and, where each has its own server (hfsl without emulation), their
    first peer: both come from the completion index. A source's pod that dies or is deleted
    is replaced by the Job up to RESTART_LIMIT times per index (backoffLimitPerIndex), so one
    crash-looping source ends as a failed index while the others go on."""
    first = sources[0]
    peers = {r.connect for r in sources}
    render = address
    if len(peers) > 1:  # each source has its own server: its address from the completion index

        def render(name: str) -> str:
            return "$(SERVER_ADDRESS)" if name == first.connect else address(name)

    args = role_args(first, render)
    args[args.index("--index") + 1] = "$(SOURCE_INDEX)"
    c = _role_container(first, images, args)
    c["env"] += [
        {
            "name": "SOURCE_INDEX",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
            },
        }
    ]
    if len(peers) > 1:
        c["env"].append({"name": "SERVER_ADDRESS", "value": _address(exp, "server-$(SOURCE_INDEX)", namespace)})
    # One template serves every completion, so it carries every source's key: a source
    # could speak as another source (not as a server, the link or the aggregator).
    template = {
        "metadata": {"labels": labels(exp, "source"), "annotations": _annotations()},
        "spec": _pod_spec(exp, c, first.restart, _keys(exp, sources), records),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(exp, _child(exp, "sources"), "source", uid, namespace),
        "spec": {
            "completions": len(sources),
            "parallelism": len(sources),
            "completionMode": "Indexed",
            "backoffLimitPerIndex": RESTART_LIMIT,
            "template": template,
        },
    }
