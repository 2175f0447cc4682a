"""What makes an Experiment's objects pass a security review (issue 14), as pure builders
(dicts in, dicts out, no API calls) for builders.py to wire in:

keys_secret        one Secret per Experiment holding a CURVE keypair per role, owned by the
                   Experiment (garbage-collected with it); the operator creates it, roles
                   never call the API for it
keys_volume        the Secret as a read-only volume that carries only this pod's own secret
                   key and every role's public key, and the env var roles read it from
network_policy     only this experiment's pods reach its server, relay and aggregator port;
                   the metrics port is open to a namespace selector (the chart's value)
pod_security_context / container_security_context / harden_pod
                   runAsNonRoot, readOnlyRootFilesystem (emptyDirs where roles write),
                   capabilities drop ALL, seccomp RuntimeDefault, no service account token
"""

from __future__ import annotations

import copy
import hashlib

from splitbench.spec import API_VERSION, Experiment
from splitbench.transport.keys import KEYS_ENV, secret_data

KEYS_DIR = "/etc/splitbench-keys"  # beside the spec mount, not in it; the images make the mount point
RUN_AS = 10001  # the images' unprivileged user
WRITABLE = {"run": "/run/splitbench", "tmp": "/tmp"}  # emptyDirs: the only places a role writes
SPEC_HASH = "splitbench.dev/spec-hash"  # annotation: which spec a child was built from (409 adoption)


PREFIX_MAX = 40  # the experiment's part of a child's name; suffixes are at most 22 characters


def child_name(experiment: str, suffix: str) -> str:
    """A DNS label (<= 63) unique per experiment and suffix. A long experiment name becomes a
    prefix with a short hash of the whole name; the prefix never depends on the suffix, so a
    name with a placeholder in its suffix (server-$(SOURCE_INDEX)) expands to the real one."""
    prefix = experiment
    if len(experiment) > PREFIX_MAX:
        digest = hashlib.sha256(experiment.encode()).hexdigest()[:8]
        prefix = f"{experiment[: PREFIX_MAX - 9].rstrip('-')}-{digest}"
    return f"{prefix}-{suffix}"


def spec_hash(exp: Experiment) -> str:
    doc = exp.spec.model_dump_json(by_alias=True, exclude_none=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _owner(exp: Experiment, uid: str) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "name": exp.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(exp: Experiment) -> dict:
    return {
        "app.kubernetes.io/name": "splitbench",
        "app.kubernetes.io/managed-by": "splitbench-operator",
        "splitbench.dev/experiment": exp.name,
    }


def keys_secret(exp: Experiment, uid: str, namespace: str, instances: list[str]) -> dict:
    """The Experiment's keys: <instance>.pub and <instance>.key for every role instance
    (splitbench.roleplan.role_names(exp.spec)). Fresh keys on every call: create it once."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": child_name(exp.name, "keys"),
            "namespace": namespace,
            "labels": _labels(exp),
            "annotations": {SPEC_HASH: spec_hash(exp)},
            "ownerReferences": [_owner(exp, uid)],
        },
        "immutable": True,
        "stringData": secret_data(instances),
    }


def keys_volume(exp: Experiment, instance: str, instances: list[str]) -> tuple[dict, dict, dict]:
    """(volume, volumeMount, env var) for the pod of `instance` (for the sources Job, whose pods
    are source-0..k-1 by completion index, mount source keys by the lead's own choice).
    The pod sees its own secret key and all public keys, nothing else."""
    items = [{"key": f"{i}.pub", "path": f"{i}.pub"} for i in instances]
    items.append({"key": f"{instance}.key", "path": f"{instance}.key", "mode": 0o400})
    volume = {
        "name": "keys",
        "secret": {"secretName": child_name(exp.name, "keys"), "defaultMode": 0o444, "items": items},
    }
    return volume, {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}, {"name": KEYS_ENV, "value": KEYS_DIR}


def network_policy(
    exp: Experiment, uid: str, namespace: str, zmq_port: int, metrics_port: int, metrics_namespaces: dict | None = None
) -> dict:
    """Ingress to the experiment's pods: its ZeroMQ port only from its own pods; its metrics
    port from namespaces matching metrics_namespaces (a label selector's matchLabels; None:
    no one). Everything else is denied (policyTypes Ingress with no other rule)."""
    own = {"podSelector": {"matchLabels": {"splitbench.dev/experiment": exp.name}}}
    rules = [{"from": [own], "ports": [{"protocol": "TCP", "port": zmq_port}]}]
    if metrics_namespaces is not None:
        rules.append(
            {
                "from": [{"namespaceSelector": {"matchLabels": dict(metrics_namespaces)}}],
                "ports": [{"protocol": "TCP", "port": metrics_port}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": child_name(exp.name, "policy"),
            "namespace": namespace,
            "labels": _labels(exp),
            "annotations": {SPEC_HASH: spec_hash(exp)},
            "ownerReferences": [_owner(exp, uid)],
        },
        "spec": {
            "podSelector": {"matchLabels": {"splitbench.dev/experiment": exp.name}},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(role: str) -> dict:
    """Every role, the link emulator included, drops every capability: the link is a
    userspace relay (roles/link.py) and needs none."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def harden_pod(pod_spec: dict, role: str) -> dict:
    """A copy of a pod spec with the contexts above, no service account token, and an
    emptyDir for each place a role writes (mounted unless the container mounts it already)."""
    spec = copy.deepcopy(pod_spec)
    spec["automountServiceAccountToken"] = False
    spec["securityContext"] = {**spec.get("securityContext", {}), **pod_security_context()}
    volumes = spec.setdefault("volumes", [])
    for name in WRITABLE:
        if not any(v["name"] == name for v in volumes):
            volumes.append({"name": name, "emptyDir": {}})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c["securityContext"] = {**c.get("securityContext", {}), **container_security_context(role)}
        mounts = c.setdefault("volumeMounts", [])
        for name, path in WRITABLE.items():
            if not any(m["name"] == name or m["mountPath"] == path for m in mounts):
                mounts.append({"name": name, "mountPath": path})
    return spec
