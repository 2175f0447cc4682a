"""The Kubernetes executor: each experiment becomes an Experiment custom resource that the
operator (helm/splitbench) turns into pods; this side waits for its status to finish, then
reads every pod's log back into the run folder (the roles print their events there, see
record.py), so the same record and report come out as with the local executor.

Needs a reachable cluster (KUBECONFIG or ~/.kube/config) with the chart installed
(`make deploy`); the namespace is $SPLITBENCH_NAMESPACE or the kubeconfig context's.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from ..crd import GROUP, PLURAL, VERSION
from ..record import events_from_log, merge
from ..spec import Experiment
from .base import RunResult
from .kubeapi import NoCluster, api_client, current_namespace

TERMINAL = ("Succeeded", "Failed")
NO_OPERATOR_S = 60.0  # an Experiment with no status after this long: no operator is watching


class KubernetesExecutor:
    def __init__(self, out_dir: Path = Path("runs"), cpu_limit: str = "auto", timeout_s: float | None = None,
                 quiet: bool = False, namespace: str | None = None, keep: bool = False, poll_s: float = 2.0):
        self.out_dir = Path(out_dir)
        self.timeout_s = timeout_s  # cpu_limit: on a cluster, limits.cpu of the device profile is the quota
        self.quiet, self.keep, self.poll_s = quiet, keep, poll_s
        self.namespace = namespace

    def _apis(self):
        import kubernetes

        client = api_client()
        return kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)

    def run(self, exp: Experiment) -> RunResult:
        run_dir = (self.out_dir / exp.name).resolve()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "spec.yaml").write_text(exp.to_yaml())
        t0 = time.time()
        ok, message = False, ""
        try:
            custom, core = self._apis()
            ns = self.namespace or current_namespace()
            self._replace(custom, ns, exp)
            t0 = time.time()
            ok, message = self._watch(custom, ns, exp.name, t0)
            self._collect(core, ns, exp.name, run_dir)
            if not self.keep:
                self._delete(custom, ns, exp.name)
        except NoCluster as err:
            message = str(err)
        except Exception as err:  # an API error: one line, and the record kept so far
            message = f"kubernetes: {_one_line(err)}"
        finally:
            if any(run_dir.glob("*.events.jsonl")):
                merge(run_dir, t0, executor="kubernetes")
            (run_dir / "status.txt").write_text(("ok" if ok else "failed") + f": {message}\n")
        return RunResult(exp.name, run_dir, ok, message, time.time() - t0)

    def _replace(self, custom, ns: str, exp: Experiment) -> None:
        """Create the Experiment, after removing one of the same name left by an earlier run."""
        from kubernetes.client.exceptions import ApiException

        body = exp.model_dump(by_alias=True, exclude_none=True, mode="json")
        body["metadata"]["namespace"] = ns
        if self._get(custom, ns, exp.name) is not None:
            self._delete(custom, ns, exp.name)
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        except ApiException as err:
            if err.status == 404:
                raise RuntimeError(f"the Experiment resource ({PLURAL}.{GROUP}) is not installed in the cluster: "
                                   "run `make deploy` (helm install of helm/splitbench)") from None
            raise

    @staticmethod
    def _get(custom, ns: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _delete(self, custom, ns: str, name: str, wait_s: float = 120) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status != 404:
                raise
        deadline = time.time() + wait_s
        while self._get(custom, ns, name) is not None:
            if time.time() > deadline:
                raise RuntimeError(f"experiment {name} still there {wait_s:.0f} s after delete (is the operator up?)")
            time.sleep(self.poll_s)

    def _watch(self, custom, ns: str, name: str, t0: float) -> tuple[bool, str]:
        last = ""
        while True:
            status = (self._get(custom, ns, name) or {}).get("status") or {}
            phase = status.get("phase")
            line = f"[{name}] {phase or 'submitted'} {status.get('progress', '')} sources  {status.get('message', '')}"
            if not self.quiet and line != last:
                print(f"{line}  {time.time() - t0:6.1f} s", file=sys.stderr, flush=True)
                last = line
            if phase in TERMINAL:
                return phase == "Succeeded", f"{phase.lower()} in {time.time() - t0:.1f} s: {status.get('message', '')}"
            if phase is None and time.time() - t0 > NO_OPERATOR_S:
                return False, f"no operator answered in {NO_OPERATOR_S:.0f} s: is it deployed (make deploy)?"
            if self.timeout_s and time.time() - t0 > self.timeout_s:
                return False, f"timed out after {self.timeout_s:.0f} s ({phase}, {status.get('progress', '?')} sources)"
            time.sleep(self.poll_s)

    @staticmethod
    def _collect(core, ns: str, name: str, run_dir: Path) -> None:
        """Every pod's log into <pod>.log, and its event lines into <pod>.events.jsonl."""
        from kubernetes.client.exceptions import ApiException

        pods = core.list_namespaced_pod(ns, label_selector=f"splitbench.dev/experiment={name}").items
        for pod in pods:
            if (pod.metadata.labels or {}).get("splitbench.dev/experiment") != name:
                continue
            try:
                text = core.read_namespaced_pod_log(pod.metadata.name, ns)
            except ApiException as err:
                text = f"(log unavailable: {err.status} {err.reason})\n"
            (run_dir / f"{pod.metadata.name}.log").write_text(text)
            events = events_from_log(text)
            if events:
                (run_dir / f"{pod.metadata.name}.events.jsonl").write_text(events)


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
