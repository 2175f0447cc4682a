"""Whether a Kubernetes cluster with the splitbench chart answers: the reason it does not, for
the cluster-marked tests' skip, or None."""

from splitbench.crd import GROUP, PLURAL
from splitbench.executors.kubeapi import NoCluster, api_client


def why_no_cluster() -> str | None:
    try:
        import kubernetes

        client = api_client()
        kubernetes.client.VersionApi(client).get_code(_request_timeout=5)
        crds = kubernetes.client.ApiextensionsV1Api(client).list_custom_resource_definition(_request_timeout=5)
    except NoCluster as err:
        return f"no reachable Kubernetes cluster: {err}"
    except Exception as err:  # unreachable server, refused credentials
        return f"no reachable Kubernetes cluster: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        api_client.cache_clear()
    if f"{PLURAL}.{GROUP}" not in {c.metadata.name for c in crds.items}:
        return "the cluster has no splitbench chart: make images load deploy"
    return None
