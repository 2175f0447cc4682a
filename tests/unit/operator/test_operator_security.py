"""Issue 14, cluster side: the pure security builders give objects that a review passes."""

from __future__ import annotations


import kubernetes_validate
import pytest
import zmq

from splitbench.roleplan import role_names as role_instances
from splitbench.spec import Experiment
from splitbench_operator import security
from splitbench_operator.builders import METRICS_PORT, PORT, Images, build
from support import experiment_doc

K8S = "1.35.0"
UID = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"


def exp(name="exp", **overrides) -> Experiment:
    return Experiment.model_validate(experiment_doc(name=name, **overrides))


def pod_specs(obj: dict):
    if obj["kind"] == "Pod":
        yield obj["spec"]
    elif obj["kind"] == "Job":
        yield obj["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"paradigm": {"name": "hfsl", "splitAfter": 2}}, {"paradigm": {"name": "fedavg"}}],
    ids=["split", "hfsl", "fedavg"],
)
def test_every_hardened_pod_passes_the_review_and_validates(overrides):
    e = exp(**overrides)
    objs = build(e, UID, "bench", Images())
    walked = 0
    for o in objs:
        for spec in pod_specs(o):
            role = o["metadata"]["labels"].get("splitbench.dev/role", "")
            hard = security.harden_pod(spec, role)
            if o["kind"] == "Pod":
                o = {**o, "spec": hard}
            else:
                o = {**o, "spec": {**o["spec"], "template": {**o["spec"]["template"], "spec": hard}}}
            kubernetes_validate.validate(o, K8S, strict=True)
            assert hard["automountServiceAccountToken"] is False
            psc = hard["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
            writable = {v["name"] for v in hard["volumes"] if "emptyDir" in v}
            for c in hard["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
                mounted = {m["name"] for m in c["volumeMounts"]}
                assert {"tmp"} <= mounted and mounted & writable >= {"tmp"}
            walked += 1
    assert walked >= 2
    assert spec is not hard  # the builder's own dict is left as it was


def test_keys_secret_holds_a_keypair_per_role_and_is_owned():
    e = exp(paradigm={"name": "hfsl", "splitAfter": 2})
    instances = role_instances(e.spec)
    s = security.keys_secret(e, UID, "bench", instances)
    kubernetes_validate.validate(s, K8S, strict=True)
    assert s["metadata"]["ownerReferences"][0]["uid"] == UID and s["immutable"] is True
    data = s["stringData"]
    assert set(data) == {f"{i}.{k}" for i in instances for k in ("pub", "key")}
    for i in instances:
        assert zmq.curve_public(data[f"{i}.key"].encode()).decode() == data[f"{i}.pub"]
    other = security.keys_secret(e, UID, "bench", instances)["stringData"]
    assert other["source-0.key"] != data["source-0.key"]  # fresh per call: per experiment, never shared
    vol, mount, env = security.keys_volume(e, "server-1", instances)
    paths = {i["path"] for i in vol["secret"]["items"]}
    assert "server-1.key" in paths and not any(p.endswith(".key") and p != "server-1.key" for p in paths)
    assert mount["readOnly"] is True and env == {"name": "SPLITBENCH_KEYS", "value": mount["mountPath"]}


def test_network_policy_admits_only_the_experiments_own_pods_and_the_monitoring_namespace():
    e = exp()
    pol = security.network_policy(e, UID, "bench", PORT, METRICS_PORT, {"kubernetes.io/metadata.name": "monitoring"})
    kubernetes_validate.validate(pol, K8S, strict=True)
    spec = pol["spec"]
    assert spec["podSelector"] == {"matchLabels": {"splitbench.dev/experiment": "exp"}}
    assert spec["policyTypes"] == ["Ingress"]
    zmq_rule, metrics_rule = spec["ingress"]
    assert zmq_rule["from"] == [{"podSelector": {"matchLabels": {"splitbench.dev/experiment": "exp"}}}]
    assert zmq_rule["ports"] == [{"protocol": "TCP", "port": PORT}]
    assert metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    closed = security.network_policy(e, UID, "bench", PORT, METRICS_PORT, None)
    assert len(closed["spec"]["ingress"]) == 1


def test_child_names_are_unique_dns_labels():
    a, b = "x" * 60 + "-a", "x" * 60 + "-b"
    na, nb = security.child_name(a, "server-0"), security.child_name(b, "server-0")
    assert na != nb and len(na) <= 63 and len(nb) <= 63 and na.endswith("-server-0")
    assert security.child_name("short", "spec") == "short-spec"
