"""The operator's object builders: pure functions, checked against Kubernetes' own schemas."""

import kubernetes_validate
import pytest

from splitbench.spec import Experiment
from splitbench.roleplan import RESTART_LIMIT
from splitbench_operator.builders import METRICS_PORT, Images, RecordsVolume, build, records_reader
from support import experiment_doc

K8S = "1.35.0"
UID = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"


def objects(**overrides):
    exp = Experiment.model_validate(experiment_doc(name="exp", **overrides))
    return build(exp, UID, "bench", Images(runtime_class="nvidia"))


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"paradigm": {"name": "centralized"}},
        {"paradigm": {"name": "full_offload"}, "network": {"profile": "unconstrained"}},
        {"paradigm": {"name": "fedavg"}},
        {"paradigm": {"name": "hfsl", "splitAfter": 2}},
        {"paradigm": {"name": "hfsl", "splitAfter": 2}, "network": {"profile": "unconstrained"}},
        {"server": {"gpu": 1}},
    ],
    ids=["split", "centralized", "offload-direct", "fedavg", "hfsl", "hfsl-direct", "gpu"],
)
def test_every_object_is_valid_kubernetes_and_owned_by_the_experiment(overrides):
    objs = objects(**overrides)
    for o in objs:
        kubernetes_validate.validate(o, K8S, strict=True)
        assert o["metadata"]["namespace"] == "bench"
        ref = o["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Experiment", "exp", UID, True)
        assert len(o["metadata"]["name"]) <= 63
    pods = by_kind(objs, "Pod") + [j["spec"]["template"] for j in by_kind(objs, "Job")]
    for p in pods:
        assert p["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS_PORT)


def test_split_run_has_server_link_and_an_indexed_source_job_with_device_limits():
    objs = objects(network={"profile": "wifi6"}, sources={"replicas": 3, "device": {"profile": "paper-source"}})
    names = [o["metadata"]["name"] for o in objs]
    assert names == [
        "exp-spec",
        "exp-keys",
        "exp-policy",
        "exp-link",
        "exp-link",
        "exp-server-0",
        "exp-server-0",
        "exp-sources",
    ]  # plan order
    job = by_kind(objs, "Job")[0]
    assert job["spec"]["completions"] == 3 and job["spec"]["completionMode"] == "Indexed"
    source = job["spec"]["template"]["spec"]["containers"][0]
    assert source["resources"]["limits"] == {"cpu": "400m", "memory": "1Gi"}
    assert source["args"][:5] == ["role", "source", "--index", "$(SOURCE_INDEX)", "--connect"]
    assert source["args"][5] == "tcp://exp-link.bench.svc:5555"  # through the link emulator
    link = [p for p in by_kind(objs, "Pod") if p["metadata"]["labels"]["splitbench.dev/role"] == "link"][0]
    assert "--connect" in link["spec"]["containers"][0]["args"]
    assert "tcp://exp-server-0.bench.svc:5555" in link["spec"]["containers"][0]["args"]


def test_hfsl_has_a_server_per_source_and_an_aggregator_reached_through_the_link():
    objs = objects(paradigm={"name": "hfsl", "splitAfter": 2}, sources={"replicas": 2})
    pods = {p["metadata"]["name"]: p for p in by_kind(objs, "Pod")}
    assert set(pods) == {"exp-aggregator", "exp-server-0", "exp-server-1", "exp-link"}
    link_args = pods["exp-link"]["spec"]["containers"][0]["args"]
    assert "--route=source-1=tcp://exp-server-1.bench.svc:5555" in link_args
    assert "--route=server-0>aggregator=tcp://exp-aggregator.bench.svc:5555" in link_args
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in by_kind(objs, "Service")}
    assert services["exp-server-1"]["splitbench.dev/index"] == "1"


def test_a_gpu_server_asks_for_the_gpu_and_the_runtime_class():
    objs = objects(server={"gpu": 2})
    server = [p for p in by_kind(objs, "Pod") if p["metadata"]["labels"]["splitbench.dev/role"] == "server"][0]
    c = server["spec"]["containers"][0]
    assert c["image"] == "splitbench-gpu:latest" and c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert server["spec"]["runtimeClassName"] == "nvidia"
    cpu_only = [p for p in by_kind(objects(), "Pod") if p["metadata"]["labels"]["splitbench.dev/role"] == "server"][0]
    assert (
        "runtimeClassName" not in cpu_only["spec"]
        and cpu_only["spec"]["containers"][0]["image"] == "splitbench-edge:latest"
    )


@pytest.mark.parametrize("auth", ["curve", "none"])
def test_every_pod_is_hardened_and_gets_only_its_own_secret_key(auth):
    objs = objects(paradigm={"name": "hfsl", "splitAfter": 2}, network={"profile": "wifi6"}, transport={"auth": auth})
    pods = by_kind(objs, "Pod") + [j["spec"]["template"] for j in by_kind(objs, "Job")]
    assert len(pods) == 5  # aggregator, link, 2 servers, the sources' template
    for p in pods:
        spec = p["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        c = spec["containers"][0]
        ctx = c["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True and ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["allowPrivilegeEscalation"] is False
        assert c["resources"]["requests"]["cpu"]  # every container requests CPU
        assert c["resources"]["limits"]["memory"]  # and has a memory limit (the link too)
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/var/run/splitbench"} <= mounts  # where a role writes, on a read-only root
        keys = [v for v in spec["volumes"] if v["name"] == "keys"]
        if auth == "none":
            assert keys == []
            continue
        private = sorted(i["key"] for i in keys[0]["secret"]["items"] if i["key"].endswith(".key"))
        role = p["metadata"]["labels"]["splitbench.dev/role"]
        if role == "source":
            assert private == ["source-0.key", "source-1.key"]  # one template for every source
        else:
            index = p["metadata"]["labels"].get("splitbench.dev/index", "0")
            assert private == [f"{role}-{index}.key"]
    kinds = [o["kind"] for o in objs]
    assert kinds.count("NetworkPolicy") == 1 and kinds.count("Secret") == (auth == "curve")


def test_long_experiment_names_give_unique_children_of_at_most_63_characters():
    exp = Experiment.model_validate(experiment_doc(name="a" * 60, paradigm={"name": "hfsl", "splitAfter": 2}))
    names = [o["metadata"]["name"] for o in build(exp, UID, "bench") if o["kind"] != "Service"]
    assert all(len(n) <= 63 for n in names)
    assert len(names) == len(set(names))


def test_the_network_policy_admits_only_the_experiments_pods_and_the_chosen_scrapers():
    exp = Experiment.model_validate(experiment_doc(name="exp"))
    closed = by_kind(build(exp, UID, "bench"), "NetworkPolicy")[0]["spec"]
    assert closed["podSelector"] == {"matchLabels": {"splitbench.dev/experiment": "exp"}}
    assert closed["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"splitbench.dev/experiment": "exp"}}}],
            "ports": [{"protocol": "TCP", "port": 5555}],
        }
    ]
    scraped = by_kind(build(exp, UID, "bench", metrics_namespaces={"team": "monitoring"}), "NetworkPolicy")[0]
    assert scraped["spec"]["ingress"][1] == {
        "from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
    }


def test_a_long_named_hfsl_without_emulation_addresses_each_source_to_its_own_servers_service():
    exp = Experiment.model_validate(
        experiment_doc(name="h" * 50, paradigm={"name": "hfsl", "splitAfter": 2}, network={"profile": "unconstrained"})
    )
    objs = build(exp, UID, "bench")
    job = by_kind(objs, "Job")[0]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    services = {s["metadata"]["name"] for s in by_kind(objs, "Service")}
    for i in range(2):
        host = env["SERVER_ADDRESS"].replace("$(SOURCE_INDEX)", str(i)).split("//")[1].split(".")[0]
        assert host in services


def test_servers_restart_in_place_and_a_source_is_retried_by_its_job_a_bounded_number_of_times():
    objs = objects(paradigm={"name": "hfsl", "splitAfter": 2}, network={"profile": "wifi6"})
    restart = {p["metadata"]["labels"]["splitbench.dev/role"]: p["spec"]["restartPolicy"] for p in by_kind(objs, "Pod")}
    assert restart == {"aggregator": "OnFailure", "server": "OnFailure", "link": "Never"}
    job = by_kind(objs, "Job")[0]["spec"]
    # per index: one crash-looping source fails alone while the others go on; Never: the Job
    # (not the kubelet) counts the tries, and a deleted pod is one of them
    assert job["backoffLimitPerIndex"] == RESTART_LIMIT and "backoffLimit" not in job
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_with_a_records_volume_every_role_writes_to_one_claim_that_the_reader_pod_prints():
    exp = Experiment.model_validate(experiment_doc(name="exp", paradigm={"name": "fedavg"}))
    objs = build(exp, UID, "bench", records=RecordsVolume(size="2Gi", storage_class="standard"))
    (claim,) = by_kind(objs, "PersistentVolumeClaim")
    assert objs[1] is claim  # before the pods that mount it
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "2Gi"}},
        "storageClassName": "standard",
    }
    reader = records_reader(exp, UID, "bench", Images())
    for o in objs + [reader]:
        kubernetes_validate.validate(o, K8S, strict=True)
    pods = by_kind(objs, "Pod") + [j["spec"]["template"] for j in by_kind(objs, "Job")] + [reader]
    for p in pods:
        (run,) = [v for v in p["spec"]["volumes"] if v["name"] == "run"]
        assert run == {"name": "run", "persistentVolumeClaim": {"claimName": "exp-records"}}
    assert reader["spec"]["containers"][0]["volumeMounts"][0] == {
        "name": "run",
        "mountPath": "/var/run/splitbench",
        "readOnly": True,
    }
    without = build(exp, UID, "bench")
    assert not by_kind(without, "PersistentVolumeClaim")
    assert all({"name": "run", "emptyDir": {}} in p["spec"]["volumes"] for p in by_kind(without, "Pod"))


def test_the_reader_prints_every_complete_event_line_as_a_role_prints_it(tmp_path, capsys):
    from splitbench.record import events_from_log
    from splitbench_operator import builders

    (tmp_path / "source-0.events.jsonl").write_text('{"event": "step", "instance": "source-0"}\n{"event": "st')
    (tmp_path / "server-0.events.jsonl").write_text('{"event": "server", "instance": "server-0"}\n')
    exp = Experiment.model_validate(experiment_doc(name="exp"))
    code = records_reader(exp, UID, "bench", Images())["spec"]["containers"][0]["command"][-1]
    exec(compile(code.replace(builders.RUN_DIR, str(tmp_path)), "reader", "exec"), {})
    assert events_from_log(capsys.readouterr().out) == (
        '{"event": "server", "instance": "server-0"}\n{"event": "step", "instance": "source-0"}\n'
    )
