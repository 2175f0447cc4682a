"""Roll the children's state up into the Experiment's status: a pure function of the pods
and the sources Job as the API server returns them (plain dicts), tested without a cluster."""
from __future__ import annotations

TERMINAL = ("Succeeded", "Failed")


def _condition(obj: dict | None, kind: str) -> bool:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conds)


def _why(pod: dict) -> str:
    """The container's own account of its end (reason, exit code, message), else the pod's."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            text = (term.get("message") or "").strip().splitlines()
            return (f"{term.get('reason', 'terminated')} (exit {term.get('exitCode')})"
                    + (f": {text[-1]}" if text else ""))
    return status.get("reason") or status.get("message") or "failed"


def rollup(pods: list[dict], job: dict | None, sources: int) -> dict:
    """status.phase, progress (sources finished / sources; the trainer for centralized) and a
    one-line message."""
    by_phase: dict[str, list[str]] = {}
    for p in pods:
        by_phase.setdefault((p.get("status") or {}).get("phase") or "Pending", []).append(p["metadata"]["name"])
    jstat = (job or {}).get("status") or {}
    peers = [p for p in pods if (p["metadata"].get("labels") or {}).get("splitbench.dev/role") != "source"]
    done = int(jstat.get("succeeded") or 0)
    if job is None and not sources:  # centralized: one trainer pod, no sources
        done, sources = sum((p.get("status") or {}).get("phase") == "Succeeded" for p in peers), len(peers)
    progress = f"{done}/{sources}"
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if failed:
        p = failed[0]
        return {"phase": "Failed", "progress": progress, "message": f"{p['metadata']['name']}: {_why(p)}"}
    if _condition(job, "Failed"):
        return {"phase": "Failed", "progress": progress, "message": "sources job failed"}
    job_done = job is None or _condition(job, "Complete") or done >= sources
    if job_done and peers and all((p.get("status") or {}).get("phase") == "Succeeded" for p in peers):
        return {"phase": "Succeeded", "progress": progress, "message": "every role finished"}
    running = by_phase.get("Running", [])
    if running:
        return {"phase": "Running", "progress": progress, "message": f"{len(running)} pods running"}
    return {"phase": "Pending", "progress": progress,
            "message": f"{len(by_phase.get('Pending', []))} of {len(pods)} pods pending"}
