"""status.rollup: the children's state as the Experiment's phase, progress and message."""
from splitbench_operator.status import rollup


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
    dead = pod("exp-server-0", "server", "Failed",
               {"reason": "Error", "exitCode": 1, "message": "Traceback...\nSpecError: dataset missing"})
    st = rollup([dead, pod("a", "source", "Running")], job(), 2)
    assert st["phase"] == "Failed"
    assert st["message"] == "exp-server-0: Error (exit 1): SpecError: dataset missing"
    assert rollup([pod("s", "server", "Running")], job(failed=True), 2)["phase"] == "Failed"


def test_centralized_progress_counts_the_trainer():
    st = rollup([pod("t", "trainer", "Succeeded")], None, 0)
    assert (st["phase"], st["progress"]) == ("Succeeded", "1/1")
