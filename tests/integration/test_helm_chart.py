"""helm/splitbench: lints strictly, renders objects that are valid Kubernetes 1.35, grants
the operator what it calls and no more, renders a PodMonitor only where its API exists, ships
the dashboards for Grafana's sidecar, and its values schema refuses bad values."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support import ROOT

CHART = ROOT / "helm" / "splitbench"
K8S = "1.35.0"
HELM = shutil.which("helm", path=f"{Path(sys.executable).parent}:{shutil.os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(HELM is None, reason="needs helm: `make test` installs it (tools/install_helm.py)")


def helm(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def render(*args: str) -> list[dict]:
    out = helm("template", "sb", str(CHART), "--namespace", "splitbench", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_lint_strict():
    r = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in r.stdout


def test_rendered_objects_are_valid_kubernetes_and_pods_carry_prometheus_annotations():
    docs = render("--include-crds")
    assert {d["kind"] for d in docs} >= {
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
    }
    for d in docs:
        kubernetes_validate.validate(d, K8S, strict=True)
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]
    assert "prometheus.io/scrape" in pod["metadata"]["annotations"]
    args = pod["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and args[-2:] == ["-m", "splitbench_operator.handlers"]
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["SPLITBENCH_EDGE_IMAGE"] == "splitbench-edge:latest"


def test_the_records_volume_setting_reaches_the_operator():
    def env(*args):
        (deploy,) = [d for d in render(*args) if d["kind"] == "Deployment"]
        values = {e["name"]: e["value"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
        return json.loads(values["SPLITBENCH_RECORDS_PERSISTENCE"])

    assert env()["enabled"] is False  # no storage class needed by default: records come back through pod logs
    on = env("--set", "records.persistence.enabled=true", "--set", "records.persistence.storageClassName=fast")
    assert on == {"enabled": True, "storageClassName": "fast", "accessMode": "ReadWriteOnce", "size": "1Gi"}


def test_watching_some_namespaces():
    (deploy,) = [d for d in render("--set", "operator.namespaces={lab,bench}") if d["kind"] == "Deployment"]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=lab" in args and "--namespace=bench" in args and "--all-namespaces" not in args


def _granted(rules) -> set:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


_NEEDED = (
    {("splitbench.dev", "experiments", v) for v in ("get", "list", "watch", "patch")}
    | {("splitbench.dev", "experiments/status", "patch")}
    | {("", kind, v) for kind in ("pods", "services", "configmaps") for v in ("create", "list", "delete")}
    | {("", "secrets", v) for v in ("get", "create", "delete")}
    | {("", "persistentvolumeclaims", v) for v in ("get", "list", "create", "delete")}
    | {("networking.k8s.io", "networkpolicies", v) for v in ("get", "create", "delete")}
    | {("batch", "jobs", v) for v in ("create", "list", "delete")}
    | {("", "events", "create")}
)


def test_rbac_grants_what_the_operator_calls_and_no_wildcards():
    (role,) = [d for d in render() if d["kind"] == "ClusterRole"]
    granted = _granted(role["rules"])
    assert _NEEDED <= granted, _NEEDED - granted
    assert not any("*" in x for triple in granted for x in triple)
    assert not any(r == "nodes" for _, r, _ in granted)
    assert not any(r == "secrets" and v in ("list", "watch") for _, r, v in granted)  # only its own, by name


def test_watching_some_namespaces_grants_namespaced_roles_only():
    docs = render("--set", "operator.namespaces={lab,bench}")
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"lab", "bench"}
    for ns in ("lab", "bench"):
        assert _NEEDED <= _granted(roles[ns]["rules"])
        assert bindings[ns]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[ns]["metadata"]["name"],
        }
    (cluster,) = [d for d in docs if d["kind"] == "ClusterRole"]  # only kopf's CRD lookup stays cluster-wide
    assert _granted(cluster["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")
    }


def test_a_podmonitor_only_where_the_prometheus_operator_api_exists():
    assert not [d for d in render() if d["kind"] == "PodMonitor"]
    docs = render("--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--set", "podMonitor.labels.release=kps")
    (pm,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert pm["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and "honorLabels" not in endpoint
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "splitbench-operator"}
    off = render("--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--set", "podMonitor.enabled=false")
    assert not [d for d in off if d["kind"] == "PodMonitor"]


def test_the_dashboards_ship_as_configmaps_for_grafanas_sidecar():
    maps = {d["metadata"]["name"]: d for d in render() if d["kind"] == "ConfigMap"}
    files = sorted((ROOT / "dashboards").glob("*.json"))
    assert files and len(maps) == len(files)
    for f in files:
        cm = maps[f"sb-dashboard-{f.stem}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text())


@pytest.mark.parametrize(
    "bad, field",
    [
        ("podMonitor.enabled=maybe", "/podMonitor/enabled"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("operator.namespaces={Not_A_Namespace}", "/operator/namespaces/0"),
        ("operator.statusIntervalSeconds=0", "/operator/statusIntervalSeconds"),
        ("typo=1", "typo"),
        ("records.persistence.accessMode=ReadMostly", "/records/persistence/accessMode"),
        ("records.persistence.size=lots", "/records/persistence/size"),
    ],
)
def test_the_values_schema_refuses_bad_values(bad, field):
    r = helm("template", "sb", str(CHART), "--set", bad, ok=False)
    assert r.returncode != 0 and field in r.stderr, r.stderr
