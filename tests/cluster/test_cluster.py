"""`make bench EXECUTOR=kubernetes` on a real cluster, when one is reachable. On kind:
    make cluster images load deploy && .venv/bin/python -m pytest -m cluster tests/cluster/test_cluster.py
Skipped, with the reason, where no cluster answers or the chart is not deployed."""

import os
import subprocess

import pandas as pd
import pytest

from splitbench.crd import GROUP, PLURAL
from splitbench.executors.kubeapi import NoCluster, api_client

from support import ROOT

pytestmark = pytest.mark.cluster


def _why_not() -> str | None:
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


def test_make_bench_on_the_cluster_writes_the_same_report(tmp_path):
    why = _why_not()
    if why:
        pytest.skip(why + " (on kind: make cluster images load deploy)")
    r = subprocess.run(
        [
            "make",
            "bench",
            "EXECUTOR=kubernetes",
            "ARGS=--quick --repeats 1",
            f"RUNS={tmp_path / 'runs'}",
            f"OUT={tmp_path / 'report'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert len(summary) == 7 and (summary["status"] == "ok").all(), summary[["experiment", "status"]]
    assert (summary.loc[summary["paradigm"] != "centralized", "bytes_per_sample_up"] > 0).all()
