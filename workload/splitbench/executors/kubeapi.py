"""One way to reach the Kubernetes API, for the executor (on the user's machine) and the
operator (in the cluster): in-cluster credentials where they exist, else the kubeconfig."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class NoCluster(RuntimeError):
    pass


@cache
def api_client():
    import kubernetes  # imported here: the local executor never needs it

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        path = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        try:
            kubernetes.config.load_kube_config(config_file=path)
        except (kubernetes.config.ConfigException, OSError) as err:
            raise NoCluster(f"no Kubernetes cluster configured (in-cluster or {path}): {err}") from None
    return kubernetes.client.ApiClient()


def plain(obj) -> dict:
    """A client model as the JSON dict the API server sent."""
    return api_client().sanitize_for_serialization(obj)


def current_namespace() -> str:
    """$SPLITBENCH_NAMESPACE, else the kubeconfig context's namespace (or the pod's own), else default."""
    if os.environ.get("SPLITBENCH_NAMESPACE"):
        return os.environ["SPLITBENCH_NAMESPACE"]
    if _SA_NAMESPACE.exists():
        return _SA_NAMESPACE.read_text().strip()
    import kubernetes

    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG"))
        return active["context"].get("namespace") or "default"
    except (kubernetes.config.ConfigException, OSError, KeyError, TypeError):
        return "default"
