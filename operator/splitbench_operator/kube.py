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


_CREATE = {
    "ConfigMap": lambda ns, o: core().create_namespaced_config_map(ns, o),
    "Service": lambda ns, o: core().create_namespaced_service(ns, o),
    "Pod": lambda ns, o: core().create_namespaced_pod(ns, o),
    "Job": lambda ns, o: batch().create_namespaced_job(ns, o),
}


def create(obj: dict) -> bool:
    """Create obj; True if created now, False if it already existed."""
    try:
        _CREATE[obj["kind"]](obj["metadata"]["namespace"], obj)
        return True
    except ApiException as err:
        if err.status == 409:
            return False
        raise


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
