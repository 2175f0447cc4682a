"""The operator's few calls to the API server, through the official kubernetes client.

Creation is idempotent: an object that already exists (409) counts as done, so a handler
retried after a crash, or resumed when the operator restarts, creates nothing twice."""

from __future__ import annotations

import kubernetes
from kubernetes.client.exceptions import ApiException

from splitbench.executors.kubeapi import api_client, plain

from .builders import labels_selector


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client())


def batch() -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api_client())


def networking() -> kubernetes.client.NetworkingV1Api:
    return kubernetes.client.NetworkingV1Api(api_client())


_CREATE = {
    "ConfigMap": lambda ns, o: core().create_namespaced_config_map(ns, o),
    "Service": lambda ns, o: core().create_namespaced_service(ns, o),
    "Pod": lambda ns, o: core().create_namespaced_pod(ns, o),
    "Secret": lambda ns, o: core().create_namespaced_secret(ns, o),
    "Job": lambda ns, o: batch().create_namespaced_job(ns, o),
    "NetworkPolicy": lambda ns, o: networking().create_namespaced_network_policy(ns, o),
    "PersistentVolumeClaim": lambda ns, o: core().create_namespaced_persistent_volume_claim(ns, o),
}
_READ = {
    "ConfigMap": lambda ns, n: core().read_namespaced_config_map(n, ns),
    "Service": lambda ns, n: core().read_namespaced_service(n, ns),
    "Pod": lambda ns, n: core().read_namespaced_pod(n, ns),
    "Secret": lambda ns, n: core().read_namespaced_secret(n, ns),
    "Job": lambda ns, n: batch().read_namespaced_job(n, ns),
    "NetworkPolicy": lambda ns, n: networking().read_namespaced_network_policy(n, ns),
    "PersistentVolumeClaim": lambda ns, n: core().read_namespaced_persistent_volume_claim(n, ns),
}
SPEC_HASH = "splitbench.dev/spec-hash"  # security.SPEC_HASH


class Foreign(RuntimeError):
    """A child's name is taken by an object that is not this Experiment's; str() is one line."""


class Terminating(RuntimeError):
    """A child's name is still held by an object on its way out (an earlier Experiment of the
    same name: its pods' grace period, its claim until they are gone); str() is one line."""


def create(obj: dict) -> bool:
    """Create obj; True if created now, False if it already existed and is ours to adopt: owned
    by the same Experiment (uid) and, where obj carries a spec hash, built from the same spec.
    Anything else under that name raises Foreign: never adopt a stranger's object."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        _CREATE[obj["kind"]](ns, obj)
        return True
    except ApiException as err:
        if err.status != 409:
            raise
    existing = plain(_READ[obj["kind"]](ns, name))
    meta = existing.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        raise Terminating(f"{obj['kind']}/{name} of an earlier run is still being deleted")
    want_uids = {r["uid"] for r in obj["metadata"].get("ownerReferences", [])}
    have_uids = {r.get("uid") for r in meta.get("ownerReferences") or []}
    if want_uids and not want_uids & have_uids:
        raise Foreign(
            f"{obj['kind']}/{name} already exists and is not owned by this Experiment; "
            "rename the Experiment or delete that object"
        )
    want_hash = (obj["metadata"].get("annotations") or {}).get(SPEC_HASH)
    have_hash = (meta.get("annotations") or {}).get(SPEC_HASH)
    if want_hash and want_hash != have_hash:
        raise Foreign(
            f"{obj['kind']}/{name} exists from another spec of this Experiment (hash {have_hash}, "
            f"now {want_hash}); delete it to rebuild"
        )
    return False


def _mine(items: list, experiment: str) -> list:
    # the selector is also applied here: a client-side check costs nothing and holds even
    # where an API (or an emulator) ignores labelSelector
    return [i for i in items if (i.metadata.labels or {}).get("splitbench.dev/experiment") == experiment]


def children(namespace: str, experiment: str) -> tuple[list[dict], dict | None]:
    """The experiment's pods and its sources Job (None before it exists)."""
    sel = labels_selector(experiment)
    pods = [plain(p) for p in _mine(core().list_namespaced_pod(namespace, label_selector=sel).items, experiment)]
    jobs = [plain(j) for j in _mine(batch().list_namespaced_job(namespace, label_selector=sel).items, experiment)]
    return pods, (jobs[0] if jobs else None)


def delete_children(namespace: str, experiment: str) -> int:
    """Delete every object labelled with the experiment; the count deleted. Owner references
    would let the garbage collector do it too; doing it here does not depend on that."""
    sel = labels_selector(experiment)
    listed = [
        (batch().list_namespaced_job, batch().delete_namespaced_job),
        (core().list_namespaced_pod, core().delete_namespaced_pod),
        (core().list_namespaced_service, core().delete_namespaced_service),
        (core().list_namespaced_config_map, core().delete_namespaced_config_map),
        (core().list_namespaced_persistent_volume_claim, core().delete_namespaced_persistent_volume_claim),
    ]
    n = 0
    for lister, deleter in listed:
        for item in _mine(lister(namespace, label_selector=sel).items, experiment):
            try:
                deleter(item.metadata.name, namespace, propagation_policy="Background")
                n += 1
            except ApiException as err:
                if err.status != 404:
                    raise
    return n
