"""status.rollup: the children's state as the Experiment's phase, progress and message."""

from splitbench.roleplan import RESTART_LIMIT
from splitbench_operator.status import conditions, rollup


def pod(name, role, phase, terminated=None):
    st = {"phase": phase}
    if terminated:
        st["containerStatuses"] = [{"state": {"terminated": terminated}}]
    return {"metadata": {"name": name, "labels": {"splitbench.dev/role": role}}, "status": st}


def job(succeeded=0, complete=False, failed=False):
    conds = [{"type": "Complete", "status": "True"}] if complete else []
    conds += [{"type": "Failed", "status": "True"}] if failed else []
    return {"status": {"succeeded": succeeded, "conditions": conds}}


def test_phases_follow_the_pods_and_the_job():
    assert rollup([], None, 2)["phase"] == "Pending"
    pending = rollup([pod("s", "server", "Pending"), pod("l", "link", "Pending")], job(), 2)
    assert (pending["phase"], pending["progress"], pending["message"]) == ("Pending", "0/2", "2 of 2 pods pending")
    running = rollup([pod("s", "server", "Running"), pod("a", "source", "Running")], job(1), 2)
    assert (running["phase"], running["progress"]) == ("Running", "1/2")
    # the job done but the server still writing its record: not finished yet
    assert rollup([pod("s", "server", "Running")], job(2, complete=True), 2)["phase"] == "Running"
    done = rollup([pod("s", "server", "Succeeded"), pod("a", "source", "Succeeded")], job(2, complete=True), 2)
    assert (done["phase"], done["progress"]) == ("Succeeded", "2/2")


def test_a_failed_pod_fails_the_experiment_with_the_containers_own_last_words():
    dead = pod(
        "exp-server-0",
        "server",
        "Failed",
        {"reason": "Error", "exitCode": 1, "message": "Traceback...\nSpecError: dataset missing"},
    )
    st = rollup([dead, pod("a", "source", "Running")], job(), 2)
    assert st["phase"] == "Failed"
    assert st["message"] == "exp-server-0: Error (exit 1): SpecError: dataset missing"
    assert rollup([pod("s", "server", "Running")], job(failed=True), 2)["phase"] == "Failed"


def test_centralized_progress_counts_the_trainer():
    st = rollup([pod("t", "trainer", "Succeeded")], None, 0)
    assert (st["phase"], st["progress"]) == ("Succeeded", "1/1")


def source_job(succeeded=0, failed=0, failed_indexes="", complete=False, job_failed=False):
    st = job(succeeded, complete=complete, failed=job_failed)
    st["status"].update(failed=failed, failedIndexes=failed_indexes)
    return st


def test_a_retried_source_still_succeeds_and_says_so():
    """A deleted source pod is replaced by its Job (status.failed counts the lost pod)."""
    peers = [pod("s", "server", "Succeeded"), pod("l", "link", "Succeeded")]
    st = rollup(peers, source_job(succeeded=2, failed=1, complete=True), 2)
    assert (st["phase"], st["reason"], st["progress"]) == ("Succeeded", "Succeeded", "2/2")
    assert "1 source pod(s) retried" in st["message"]
    # a source pod Failed mid-run is the Job's to retry, not the end of the run
    assert (
        rollup([pod("s", "server", "Running"), pod("x", "source", "Failed")], source_job(failed=1), 2)["phase"]
        == "Running"
    )


def test_a_source_lost_past_its_retries_ends_degraded_and_every_source_lost_fails():
    running = rollup([pod("s", "server", "Running")], source_job(succeeded=1, failed=4, failed_indexes="1"), 3)
    assert (running["phase"], running["reason"]) == ("Running", "SourcesLost") and "lost source 1" in running["message"]
    end = rollup(
        [pod("s", "server", "Succeeded")], source_job(succeeded=2, failed=4, failed_indexes="1", job_failed=True), 3
    )
    assert (end["phase"], end["reason"], end["progress"]) == ("Degraded", "SourcesLost", "2/3")
    assert end["message"] == "finished without source 1 (failed 4 times)"
    gone = rollup([pod("s", "server", "Running")], source_job(failed=8, failed_indexes="0-1", job_failed=True), 2)
    assert (gone["phase"], gone["reason"]) == ("Failed", "SourcesLost")


def test_a_server_restarts_in_place_until_its_limit():
    def server(restarts):
        p = pod("exp-server-0", "server", "Running")
        p["status"]["containerStatuses"] = [
            {
                "restartCount": restarts,
                "lastState": {"terminated": {"reason": "Error", "exitCode": 137}},
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            }
        ]
        return p

    assert rollup([server(RESTART_LIMIT)], source_job(), 2)["phase"] == "Running"
    st = rollup([server(RESTART_LIMIT + 1)], source_job(), 2)
    assert (st["phase"], st["reason"]) == ("Failed", "RestartLimitExceeded")
    assert (
        st["message"] == f"exp-server-0 restarted {RESTART_LIMIT + 1} times (limit {RESTART_LIMIT}): Error (exit 137)"
    )


def test_conditions_follow_the_phase_and_keep_their_transition_times():
    first = {c["type"]: c for c in conditions("Running", "Running", "2 pods running", None, "T1", 1)}
    assert {k: c["status"] for k, c in first.items()} == {
        "Ready": "False",
        "Progressing": "True",
        "Degraded": "False",
        "Failed": "False",
    }
    assert all(c["lastTransitionTime"] == "T1" and c["observedGeneration"] == 1 for c in first.values())
    end = {
        c["type"]: c
        for c in conditions("Degraded", "SourcesLost", "finished without source 1", list(first.values()), "T2", 1)
    }
    assert (end["Ready"]["status"], end["Ready"]["reason"], end["Ready"]["lastTransitionTime"]) == (
        "True",
        "SourcesLost",
        "T2",
    )
    assert (end["Degraded"]["status"], end["Degraded"]["message"]) == ("True", "finished without source 1")
    assert end["Failed"]["status"] == "False" and end["Failed"]["lastTransitionTime"] == "T1"  # unchanged status
    assert end["Progressing"]["status"] == "False" and end["Progressing"]["reason"] == "Finished"
    failed = {c["type"]: c for c in conditions("Failed", "PodFailed", "x: Error", None, "T3")}
    assert (failed["Failed"]["status"], failed["Failed"]["reason"], failed["Ready"]["status"]) == (
        "True",
        "PodFailed",
        "False",
    )
    assert "observedGeneration" not in failed["Ready"]


def test_every_condition_is_a_valid_metav1_condition():
    """Checked against the CRD's own schema for conditions (what the API server enforces)."""
    import jsonschema
    from splitbench.crd import CONDITION, as_jsonschema

    v = jsonschema.Draft4Validator(as_jsonschema(CONDITION), format_checker=jsonschema.FormatChecker())
    for phase, reason in (
        ("Pending", "PodsPending"),
        ("Running", "SourcesLost"),
        ("Succeeded", "Succeeded"),
        ("Degraded", "SourcesLost"),
        ("Failed", "RestartLimitExceeded"),
        ("Failed", "InvalidSpec"),
    ):
        for c in conditions(phase, reason, "m", None, "2026-12-02T12:00:00Z", 3):
            v.validate(c)
