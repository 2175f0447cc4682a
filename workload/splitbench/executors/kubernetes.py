"""The Kubernetes executor: each experiment becomes an Experiment custom resource that the
operator (helm/splitbench) turns into pods; this side waits for its status to finish, then
reads the record back into the run folder, so the same record and report come out as with
the local executor:

- with a records volume (status.records is a PersistentVolumeClaim: the chart's
  records.persistence) the roles' events files live on it, appended across restarts and
  kept when a pod is deleted; the operator's reader pod prints them to its log, which is
  read here (a pod log is what both a cluster and an API emulator serve);
- without one, every pod's log (the roles print their events there, see record.py), with
  the previous container's log first where the pod restarted: what a restart or a deleted
  pod took with it beyond that is lost, and the volume is the way to keep it.

Needs a reachable cluster (KUBECONFIG or ~/.kube/config) with the chart installed
(`make deploy`); the namespace is $SPLITBENCH_NAMESPACE or the kubeconfig context's.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from ..crd import FINISHED, GROUP, PLURAL, TERMINAL, VERSION
from ..atomic import write_atomic
from ..model_cost_record import write_model_cost
from ..record import events_from_log, merge
from ..roleplan import one_process_per_source
from ..spec import Experiment
from .base import RunResult, status_line
from .kubeapi import NoCluster, api_client, current_namespace

NO_OPERATOR_S = 60.0  # an Experiment with no status after this long: no operator is watching
READER_S = 120.0  # the records reader pod: pulled, started and done within this long


class KubernetesExecutor:
    def __init__(
        self,
        out_dir: Path = Path("runs"),
        cpu_limit: str = "auto",
        timeout_s: float | None = None,
        quiet: bool = False,
        namespace: str | None = None,
        keep: bool = False,
        poll_s: float = 2.0,
    ):
        self.out_dir = Path(out_dir)
        self.timeout_s = timeout_s  # cpu_limit: on a cluster, limits.cpu of the device profile is the quota
        self.quiet, self.keep, self.poll_s = quiet, keep, poll_s
        self.namespace = namespace

    def _apis(self):
        import kubernetes

        client = api_client()
        return kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)

    def run(self, exp: Experiment) -> RunResult:
        one_process_per_source(exp.spec, "kubernetes")
        run_dir = (self.out_dir / exp.name).resolve()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_atomic(run_dir / "spec.yaml", exp.to_yaml())
        write_model_cost(exp, run_dir)  # the report reads it, builds no model
        t0 = time.time()
        ok, message, status = False, "", {}
        try:
            custom, core = self._apis()
            ns = self.namespace or current_namespace()
            self._replace(custom, ns, exp)
            t0 = time.time()
            ok, message, status = self._watch(custom, ns, exp.name, t0)
            # the operator starts the volume's reader when the run ends: none for a run timed out here
            volume = str(status.get("records", "")) if status.get("phase") in TERMINAL else ""
            note = self._collect(core, ns, exp.name, run_dir, volume)
            message += f"; {note}" if note else ""
            if not self.keep:
                self._delete(custom, ns, exp.name)
        except NoCluster as err:
            message = str(err)
        except Exception as err:  # an API error: one line, and the record kept so far
            message = f"kubernetes: {_one_line(err)}"
        finally:
            if any(run_dir.glob("*.events.jsonl")):
                merge(run_dir, t0, executor="kubernetes")
            kind = ("degraded" if status.get("phase") == "Degraded" else "ok") if ok else "failed"
            write_atomic(run_dir / "status.txt", status_line(kind, False, message))
        return RunResult(exp.name, run_dir, kind == "ok", message, time.time() - t0, status=kind)

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
                raise RuntimeError(
                    f"the Experiment resource ({PLURAL}.{GROUP}) is not installed in the cluster: "
                    "run `make deploy` (helm install of helm/splitbench)"
                ) from None
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

    def _watch(self, custom, ns: str, name: str, t0: float) -> tuple[bool, str, dict]:
        """Poll the Experiment until its phase is terminal: (finished with a record, a
        one-line account, the last status)."""
        last = ""
        while True:
            status = (self._get(custom, ns, name) or {}).get("status") or {}
            phase = status.get("phase")
            line = f"[{name}] {phase or 'submitted'} {status.get('progress', '')} sources  {status.get('message', '')}"
            if not self.quiet and line != last:
                print(f"{line}  {time.time() - t0:6.1f} s", file=sys.stderr, flush=True)
                last = line
            if phase in TERMINAL:
                return (
                    phase in FINISHED,
                    f"{phase.lower()} in {time.time() - t0:.1f} s: {status.get('message', '')}",
                    status,
                )
            if phase is None and time.time() - t0 > NO_OPERATOR_S:
                return False, f"no operator answered in {NO_OPERATOR_S:.0f} s: is it deployed (make deploy)?", status
            if self.timeout_s and time.time() - t0 > self.timeout_s:
                return (
                    False,
                    f"timed out after {self.timeout_s:.0f} s ({phase}, {status.get('progress', '?')} sources)",
                    status,
                )
            time.sleep(self.poll_s)

    def _collect(self, core, ns: str, name: str, run_dir: Path, records: str) -> str:
        """Every role pod's log into <pod>.log; the events from the records volume where the
        run has one (<instance>.events.jsonl), else from those logs (<pod>.events.jsonl).
        Returns a note for the run's message where the volume could not be read ('' if fine)."""
        from kubernetes.client.exceptions import ApiException

        pods = [
            p
            for p in core.list_namespaced_pod(ns, label_selector=f"splitbench.dev/experiment={name}").items
            if (p.metadata.labels or {}).get("splitbench.dev/experiment") == name
        ]
        roles = [p for p in pods if (p.metadata.labels or {}).get("splitbench.dev/role") != "records"]
        logs = {p.metadata.name: _pod_log(core, ns, p) for p in roles}
        for pod, text in logs.items():
            write_atomic(run_dir / f"{pod}.log", text)
        note = ""
        if records.startswith("PersistentVolumeClaim/"):
            try:
                by_instance = _split_by_instance(events_from_log(self._read_volume(core, ns, name)))
                for instance, text in by_instance.items():
                    write_atomic(run_dir / f"{instance}.events.jsonl", text)
                return ""
            except (RuntimeError, ValueError, ApiException) as err:
                note = f"{records} not read back ({_one_line(err)}): events from the pods' logs"
        for pod, text in logs.items():
            events = events_from_log(text)
            if events:
                write_atomic(run_dir / f"{pod}.events.jsonl", events)
        return note

    def _read_volume(self, core, ns: str, name: str) -> str:
        """The log of the operator's records reader pod (label splitbench.dev/role=records),
        once it has succeeded."""
        deadline = time.time() + READER_S
        while True:
            readers = [
                p
                for p in core.list_namespaced_pod(ns, label_selector=f"splitbench.dev/experiment={name}").items
                if (p.metadata.labels or {}).get("splitbench.dev/role") == "records"
            ]
            phase = readers[0].status.phase if readers and readers[0].status else None
            if phase == "Succeeded":
                return core.read_namespaced_pod_log(readers[0].metadata.name, ns)
            if phase == "Failed":
                raise RuntimeError(f"the records reader pod {readers[0].metadata.name} failed")
            if time.time() > deadline:
                raise RuntimeError(f"no records reader pod done in {READER_S:.0f} s ({phase or 'none'})")
            time.sleep(self.poll_s)


def _pod_log(core, ns: str, pod) -> str:
    """A pod's log, after its previous container's where it restarted (the kubelet keeps
    one previous instance: a role restarted in place appends to its record)."""
    from kubernetes.client.exceptions import ApiException

    parts = []
    restarted = (
        any((cs.restart_count or 0) > 0 for cs in (pod.status.container_statuses or [])) if pod.status else False
    )
    for previous in (True, False) if restarted else (False,):
        try:
            parts.append(core.read_namespaced_pod_log(pod.metadata.name, ns, previous=previous))
        except ApiException as err:
            which = "previous container's " if previous else ""
            parts.append(f"({which}log unavailable: {err.status} {err.reason})\n")
    return "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts)


def _split_by_instance(events: str) -> dict[str, str]:
    """Event lines -> {role instance: its lines}, as each role wrote its own events file."""
    out: dict[str, list[str]] = {}
    for line in events.splitlines(keepends=True):
        out.setdefault(str(json.loads(line).get("instance")), []).append(line)
    return {k: "".join(v) for k, v in out.items()}


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
