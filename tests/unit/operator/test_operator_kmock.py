"""The operator for real (kopf, the official client) against kmock's Kubernetes emulator:
an Experiment becomes its children with owner references, their states roll up into the
status, applying twice creates nothing twice, a bad spec fails with a one-line message, and
deleting the Experiment deletes the children."""

import time

import kubernetes
from splitbench.spec import Experiment
from splitbench_operator.security import SPEC_HASH, spec_hash
from kopf.testing import KopfRunner

from splitbench.crd import GROUP, PLURAL, VERSION
from splitbench.roleplan import RESTART_LIMIT
from support import experiment_doc
from support.kube_emulator import NS, cluster, wait  # noqa: F401 (cluster: a fixture)

KOPF = ["run", "--standalone", "--all-namespaces", "-m", "splitbench_operator.handlers"]


def custom():
    return kubernetes.client.CustomObjectsApi()


def get_experiment(name):
    try:
        return custom().get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    except kubernetes.client.ApiException as err:
        if err.status == 404:
            return None
        raise


def status(name):
    return (get_experiment(name) or {}).get("status") or {}


def mine(items, name):
    return [i for i in items if (i.metadata.labels or {}).get("splitbench.dev/experiment") == name]


def children(name):
    core, batch = kubernetes.client.CoreV1Api(), kubernetes.client.BatchV1Api()
    return {
        "ConfigMap": mine(core.list_namespaced_config_map(NS).items, name),
        "Service": mine(core.list_namespaced_service(NS).items, name),
        "Pod": mine(core.list_namespaced_pod(NS).items, name),
        "Job": mine(batch.list_namespaced_job(NS).items, name),
    }


def submit(doc):
    return custom().create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc)


def set_pod_phase(name, phase):
    kubernetes.client.CoreV1Api().patch_namespaced_pod_status(name, NS, {"status": {"phase": phase}})


def test_an_experiment_becomes_owned_children_whose_state_rolls_up_and_goes_with_it(cluster):
    doc = experiment_doc(name="exp", network={"profile": "wifi6"}, sources={"replicas": 2})
    core = kubernetes.client.CoreV1Api()
    # one child already there, owned by this Experiment (as after an operator crash mid-apply):
    # adopted, not an error
    submit(doc)
    owner = {
        "apiVersion": "splitbench.dev/v1alpha1",
        "kind": "Experiment",
        "name": "exp",
        "uid": get_experiment("exp")["metadata"]["uid"],
    }
    built_from = {SPEC_HASH: spec_hash(Experiment.model_validate(doc))}
    core.create_namespaced_config_map(
        NS,
        {
            "metadata": {
                "name": "exp-spec",
                "namespace": NS,
                "labels": {"splitbench.dev/experiment": "exp"},
                "annotations": built_from,
                "ownerReferences": [owner],
            },
            "data": {"spec.yaml": "left over"},
        },
    )
    with KopfRunner(KOPF, timeout=60) as runner:
        wait("the children", lambda: status("exp").get("children"))
        kids = children("exp")
        assert {k: len(v) for k, v in kids.items()} == {"ConfigMap": 1, "Service": 2, "Pod": 2, "Job": 1}
        uid = get_experiment("exp")["metadata"]["uid"]
        for obj in kids["Service"] + kids["Pod"] + kids["Job"]:
            (ref,) = obj.metadata.owner_references
            assert (ref.kind, ref.name, ref.uid, ref.controller) == ("Experiment", "exp", uid, True)
        assert status("exp")["phase"] == "Pending" and status("exp")["progress"] == "0/2"

        # what the kubelet and the Job controller would report
        for pod in ("exp-server-0", "exp-link"):
            set_pod_phase(pod, "Running")
        wait("Running", lambda: status("exp").get("phase") == "Running")
        kubernetes.client.BatchV1Api().patch_namespaced_job_status("exp-sources", NS, {"status": {"succeeded": 1}})
        wait("progress 1/2", lambda: status("exp").get("progress") == "1/2")
    assert runner.exception is None

    # an operator restart resumes the experiment: it applies again and creates nothing twice
    with KopfRunner(KOPF, timeout=60) as runner:
        time.sleep(2)  # the resume handler's work shows in its log line, checked after exit
        assert {k: len(v) for k, v in children("exp").items()} == {"ConfigMap": 1, "Service": 2, "Pod": 2, "Job": 1}
        kubernetes.client.BatchV1Api().patch_namespaced_job_status(
            "exp-sources", NS, {"status": {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]}}
        )
        for pod in ("exp-server-0", "exp-link"):
            set_pod_phase(pod, "Succeeded")
        wait("Succeeded", lambda: status("exp").get("phase") == "Succeeded")
        assert status("exp")["progress"] == "2/2"

        custom().delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "exp")
        wait("the experiment gone", lambda: get_experiment("exp") is None)
        assert {k: len(v) for k, v in children("exp").items()} == {"ConfigMap": 0, "Service": 0, "Pod": 0, "Job": 0}
    assert runner.exception is None
    assert "0 created, 8 already there" in runner.output  # the resumed apply (with the keys and the policy)
    assert cluster.api is not None


def test_a_bad_spec_fails_the_experiment_with_a_one_line_message_and_creates_nothing(cluster):
    doc = experiment_doc(name="bad", sources={"replicas": 0})
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(doc)
        st = wait("Failed", lambda: status("bad") if status("bad").get("phase") == "Failed" else None)
        assert "sources.replicas" in st["message"] and "\n" not in st["message"]
        assert all(not v for v in children("bad").values())
    assert runner.exception is None


def test_a_foreign_object_under_a_childs_name_fails_the_experiment_not_adopted(cluster):
    """A 409 is success only for this Experiment's own child: an object someone else made
    under the same name ends the Experiment with a one-line reason, never a retry loop."""
    kubernetes.client.CoreV1Api().create_namespaced_config_map(
        NS, {"metadata": {"name": "squat-spec", "namespace": NS}, "data": {"spec.yaml": "not yours"}}
    )
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(experiment_doc(name="squat", sources={"replicas": 1}))
        st = wait("Failed", lambda: status("squat") if status("squat").get("phase") == "Failed" else None)
        assert "ConfigMap/squat-spec already exists and is not owned by this Experiment" in st["message"]
        assert "\n" not in st["message"]
        time.sleep(1)
        assert status("squat")["phase"] == "Failed"
    assert runner.exception is None


def test_an_overflowing_cpu_fails_with_one_line_and_no_retry(cluster):
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(experiment_doc(name="cpu", sources={"replicas": 1, "device": {"cpu": "1" + "0" * 400}}))
        st = wait("Failed", lambda: status("cpu") if status("cpu").get("phase") == "Failed" else None)
        assert "cpu" in st["message"] and "\n" not in st["message"] and len(st["message"]) < 400
        assert all(not v for v in children("cpu").values())
    assert runner.exception is None
    assert runner.output.count("invalid spec") <= 3  # reported, not retried in a loop


def test_experiments_whose_names_share_a_long_prefix_get_children_of_their_own(cluster):
    """Child names used to be the experiment's name cut to 40 characters, so two suite runs
    with a long common prefix fought over the same children: now each keeps its own."""
    prefix = "compressed-split-paper-compressed-split-s4-"  # 43 characters, as in the shipped suites
    names = [prefix + "wifi6", prefix + "ethernet-1g"]
    with KopfRunner(KOPF, timeout=60) as runner:
        for name in names:
            submit(experiment_doc(name=name, sources={"replicas": 1}))
        for name in names:
            wait(f"children of {name}", lambda n=name: status(n).get("children"))
        kids = {name: children(name) for name in names}
        for name in names:
            assert {k: len(v) for k, v in kids[name].items()} == {"ConfigMap": 1, "Service": 2, "Pod": 2, "Job": 1}
            assert all(len(o.metadata.name) <= 63 for v in kids[name].values() for o in v)
        first, second = ({o.metadata.name for v in kids[n].values() for o in v} for n in names)
        assert not first & second
    assert runner.exception is None


def kubectl_wait(name, condition):
    """What `kubectl wait --for=condition=<condition> experiment/<name>` checks: the condition
    is there with status True, and it was written for the object's current generation."""
    exp = get_experiment(name) or {}
    for c in (exp.get("status") or {}).get("conditions") or []:
        if c.get("type") == condition:
            current = c.get("observedGeneration") in (None, exp["metadata"].get("generation"))
            return c if c.get("status") == "True" and current else None
    return None


class JobController:
    """What the Job controller and the kubelet would do for the sources' Indexed Job, step
    by step: one pod per index, a deleted or failed pod replaced while its index has tries
    left (backoffLimitPerIndex), the Job's counters and conditions."""

    def __init__(self, exp):
        self.exp, self.batch, self.core = exp, kubernetes.client.BatchV1Api(), kubernetes.client.CoreV1Api()
        self.job = self.batch.read_namespaced_job(f"{exp}-sources", NS).to_dict()["spec"]
        self.tries = {i: 0 for i in range(self.job["completions"])}
        self.failed, self.failed_indexes, self.succeeded = 0, [], []
        for i in self.tries:
            self.start(i)

    def start(self, i):
        self.tries[i] += 1
        name = f"{self.exp}-sources-{i}-try{self.tries[i]}"
        self.core.create_namespaced_pod(
            NS,
            {
                "metadata": {
                    "name": name,
                    "namespace": NS,
                    "labels": {"splitbench.dev/experiment": self.exp, "splitbench.dev/role": "source"},
                    "annotations": {"batch.kubernetes.io/job-completion-index": str(i)},
                }
            },
        )
        set_pod_phase(name, "Running")
        return name

    def lost(self, i):
        """Index i's pod was deleted or failed: count it and start another while tries remain."""
        self.failed += 1
        if self.tries[i] <= self.job["backoff_limit_per_index"]:
            self.start(i)
        else:
            self.failed_indexes.append(i)
        self.report()

    def finish(self):
        self.succeeded = [i for i in self.tries if i not in self.failed_indexes]
        for pod in mine(self.core.list_namespaced_pod(NS).items, self.exp):
            if pod.metadata.labels["splitbench.dev/role"] == "source" and pod.status.phase == "Running":
                set_pod_phase(pod.metadata.name, "Succeeded")
        self.report(done=True)

    def report(self, done=False):
        st = {
            "succeeded": len(self.succeeded),
            "failed": self.failed,
            "failedIndexes": ",".join(map(str, self.failed_indexes)),
            "completedIndexes": ",".join(map(str, self.succeeded)),
        }
        if done:
            st["conditions"] = [
                {"type": "Failed", "status": "True", "reason": "FailedIndexes"}
                if self.failed_indexes
                else {"type": "Complete", "status": "True"}
            ]
        self.batch.patch_namespaced_job_status(f"{self.exp}-sources", NS, {"status": st})


def test_a_deleted_source_pod_is_replaced_and_the_run_succeeds_as_kubectl_wait_sees_it(cluster):
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(experiment_doc(name="churn", network={"profile": "wifi6"}, sources={"replicas": 2}))
        wait("the children", lambda: status("churn").get("children"))
        assert status("churn")["observedGeneration"] == 1 and kubectl_wait("churn", "Progressing")
        jobs = JobController("churn")
        for pod in ("churn-server-0", "churn-link"):
            set_pod_phase(pod, "Running")
        wait("Running", lambda: status("churn").get("phase") == "Running")
        assert not kubectl_wait("churn", "Ready")

        kubernetes.client.CoreV1Api().delete_namespaced_pod("churn-sources-1-try1", NS)  # kubectl delete pod
        jobs.lost(1)
        names = {p.metadata.name for p in mine(kubernetes.client.CoreV1Api().list_namespaced_pod(NS).items, "churn")}
        assert {"churn-sources-1-try2", "churn-sources-0-try1"} <= names and "churn-sources-1-try1" not in names
        time.sleep(1)
        assert status("churn")["phase"] == "Running"  # a replaced source is not the end of the run

        jobs.finish()
        for pod in ("churn-server-0", "churn-link"):
            set_pod_phase(pod, "Succeeded")
        ready = wait("condition Ready", lambda: kubectl_wait("churn", "Ready"))
        st = status("churn")
        assert (st["phase"], st["progress"]) == ("Succeeded", "2/2")
        assert ready["reason"] == "Succeeded" and ready["message"] == "every role finished; 1 source pod(s) retried"
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert conds == {"Ready": "True", "Progressing": "False", "Degraded": "False", "Failed": "False"}
        assert st["records"] == "pod logs"
    assert runner.exception is None


def test_a_source_that_keeps_dying_ends_the_run_degraded_and_the_record_volume_is_read_back(cluster, monkeypatch):
    monkeypatch.setenv(
        "SPLITBENCH_RECORDS_PERSISTENCE", '{"enabled": true, "size": "2Gi", "accessMode": "ReadWriteMany"}'
    )
    core = kubernetes.client.CoreV1Api()
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(experiment_doc(name="lossy", paradigm={"name": "fedavg"}, sources={"replicas": 3}))
        wait("the children", lambda: status("lossy").get("children"))
        assert status("lossy")["records"] == "PersistentVolumeClaim/lossy-records"
        claims = mine(core.list_namespaced_persistent_volume_claim(NS).items, "lossy")
        assert [(c.metadata.name, c.spec.access_modes) for c in claims] == [("lossy-records", ["ReadWriteMany"])]
        jobs = JobController("lossy")
        for pod in ("lossy-aggregator", "lossy-link"):
            set_pod_phase(pod, "Running")
        for attempt in range(1, RESTART_LIMIT + 2):  # source 2 crashes every time it starts
            set_pod_phase(f"lossy-sources-2-try{attempt}", "Failed")
            jobs.lost(2)
        assert jobs.failed_indexes == [2]
        lost = wait("condition Degraded", lambda: kubectl_wait("lossy", "Degraded"))
        assert status("lossy")["phase"] == "Running" and "lost source 2" in lost["message"]  # the others go on
        assert not [
            p
            for p in mine(core.list_namespaced_pod(NS).items, "lossy")
            if p.metadata.labels["splitbench.dev/role"] == "records"
        ]  # no reader before the end

        jobs.finish()
        for pod in ("lossy-aggregator", "lossy-link"):
            set_pod_phase(pod, "Succeeded")
        wait("condition Ready", lambda: kubectl_wait("lossy", "Ready"))
        st = status("lossy")
        assert (st["phase"], st["progress"]) == ("Degraded", "2/3")
        assert (
            kubectl_wait("lossy", "Degraded")["message"]
            == f"finished without source 2 (failed {RESTART_LIMIT + 1} times)"
        )
        assert not kubectl_wait("lossy", "Failed")
        (reader,) = [
            p
            for p in mine(core.list_namespaced_pod(NS).items, "lossy")
            if p.metadata.labels["splitbench.dev/role"] == "records"
        ]
        assert reader.spec.volumes[0].persistent_volume_claim.claim_name == "lossy-records"

        custom().delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "lossy")
        wait("the experiment gone", lambda: get_experiment("lossy") is None)
        assert not mine(core.list_namespaced_persistent_volume_claim(NS).items, "lossy")
    assert runner.exception is None


def test_a_failed_spec_is_a_failed_condition_kubectl_wait_can_see(cluster):
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(experiment_doc(name="nope", sources={"replicas": 0}))
        failed = wait("condition Failed", lambda: kubectl_wait("nope", "Failed"))
        assert failed["reason"] == "InvalidSpec" and "sources.replicas" in failed["message"]
        assert status("nope")["observedGeneration"] == 1 and not kubectl_wait("nope", "Ready")
    assert runner.exception is None


def test_a_child_of_an_earlier_run_still_terminating_is_waited_for_not_a_failure(cluster):
    """Re-running an experiment of the same name: the earlier run's claim or pods may still be
    on their way out (grace period, pvc-protection); the new run starts once they are gone."""
    core = kubernetes.client.CoreV1Api()
    core.create_namespaced_config_map(
        NS,
        {
            "metadata": {
                "name": "again-spec",
                "namespace": NS,
                "finalizers": ["test/hold"],
                "labels": {"splitbench.dev/experiment": "again"},
            },
            "data": {"spec.yaml": "the earlier run's"},
        },
    )
    core.delete_namespaced_config_map("again-spec", NS)  # held by its finalizer: terminating
    assert core.read_namespaced_config_map("again-spec", NS).metadata.deletion_timestamp
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(experiment_doc(name="again", sources={"replicas": 1}))
        time.sleep(2)
        assert status("again").get("phase") != "Failed" and not status("again").get("children")
        core.patch_namespaced_config_map("again-spec", NS, {"metadata": {"finalizers": None}})  # now it goes
        wait("the children", lambda: status("again").get("children"), timeout=30)
        assert core.read_namespaced_config_map("again-spec", NS).data["spec.yaml"] != "the earlier run's"
    assert runner.exception is None
    assert "still being deleted" in runner.output


def test_a_spec_edited_mid_run_is_not_applied_and_the_conditions_say_which_generation_they_speak_for(cluster):
    with KopfRunner(KOPF, timeout=60) as runner:
        submit(experiment_doc(name="edit", paradigm={"name": "centralized"}))
        wait("the children", lambda: status("edit").get("children"))
        # an edit, with the generation bump the API server makes for a spec change
        custom().patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "edit", {"metadata": {"generation": 2}, "spec": {"training": {"epochs": 2}}}
        )
        wait(
            "the edit handled",
            lambda: (
                '"epochs":2'
                in get_experiment("edit")["metadata"]["annotations"].get(
                    "kopf.zalando.org/last-handled-configuration", ""
                )
            ),
        )
        set_pod_phase("edit-trainer", "Succeeded")
        wait("Succeeded", lambda: status("edit").get("phase") == "Succeeded")
        st = status("edit")
        assert st["observedGeneration"] == 1 and {c["observedGeneration"] for c in st["conditions"]} == {1}
        assert [c["status"] for c in st["conditions"] if c["type"] == "Ready"] == ["True"]
        assert kubectl_wait("edit", "Ready") is None  # not for generation 2: kubectl wait would keep waiting
    assert runner.exception is None
    assert "spec changed after the run was created: not applied" in runner.output
