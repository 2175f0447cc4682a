"""Roll the children's state up into the Experiment's status: a pure function of the pods
and the sources Job as the API server returns them (plain dicts), tested without a cluster.

status.phase      Pending, Running, Succeeded, Degraded (finished without some sources), Failed
status.conditions Ready, Progressing, Degraded, Failed as metav1.Condition (type, status,
                  reason, message, lastTransitionTime, observedGeneration), so that
                  `kubectl wait --for=condition=Ready` works; a condition's transition time
                  moves only when its status does
"""

from __future__ import annotations

from splitbench.crd import FINISHED
from splitbench.roleplan import RESTART_LIMIT

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Failed")


def _condition(obj: dict | None, kind: str) -> bool:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conds)


def _why(pod: dict) -> str:
    """The container's own account of its end (reason, exit code, message), else the pod's."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            text = (term.get("message") or "").strip().splitlines()
            return f"{term.get('reason', 'terminated')} (exit {term.get('exitCode')})" + (
                f": {text[-1]}" if text else ""
            )
    return status.get("reason") or status.get("message") or "failed"


def _restarts(pod: dict) -> int:
    return sum(int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def _indexes(text: str | None) -> list[int]:
    """A Job's index list as the API writes it ("1,3-5") -> [1, 3, 4, 5]."""
    out: list[int] = []
    for part in (text or "").split(","):
        if part.strip():
            lo, _, hi = part.partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    return out


def _phase(name: str, reason: str, message: str, progress: str) -> dict:
    return {"phase": name, "reason": reason, "progress": progress, "message": message}


def rollup(pods: list[dict], job: dict | None, sources: int) -> dict:
    """status.phase, its reason (a CamelCase word, for the conditions), progress (sources
    finished / sources; the trainer for centralized) and a one-line message.

    A source pod that dies is retried by its Job (backoffLimitPerIndex); one that fails
    past that is a lost source: the run goes on and ends Degraded, or Failed if every source
    is lost. A server or aggregator restarts in place (restartPolicy OnFailure); past
    RESTART_LIMIT restarts, or a pod that ends Failed, the run is Failed."""
    by_phase: dict[str, list[str]] = {}
    for p in pods:
        by_phase.setdefault((p.get("status") or {}).get("phase") or "Pending", []).append(p["metadata"]["name"])
    jstat = (job or {}).get("status") or {}
    peers = [
        p for p in pods if (p["metadata"].get("labels") or {}).get("splitbench.dev/role") not in ("source", "records")
    ]
    done = int(jstat.get("succeeded") or 0)
    if job is None and not sources:  # centralized: one trainer pod, no sources
        done, sources = sum((p.get("status") or {}).get("phase") == "Succeeded" for p in peers), len(peers)
    progress = f"{done}/{sources}"
    failed = [p for p in peers if (p.get("status") or {}).get("phase") == "Failed"]
    if failed:
        p = failed[0]
        return _phase("Failed", "PodFailed", f"{p['metadata']['name']}: {_why(p)}", progress)
    looping = [p for p in peers if _restarts(p) > RESTART_LIMIT]
    if looping:
        p = looping[0]
        return _phase(
            "Failed",
            "RestartLimitExceeded",
            f"{p['metadata']['name']} restarted {_restarts(p)} times (limit {RESTART_LIMIT}): {_why(p)}",
            progress,
        )
    lost = _indexes(jstat.get("failedIndexes"))
    if sources and len(lost) >= sources:
        return _phase("Failed", "SourcesLost", f"every source stopped ({_lost(lost)})", progress)
    if _condition(job, "Failed") and not lost:  # failed as a whole (deadline, no per-index budget)
        return _phase("Failed", "SourcesJobFailed", "sources job failed", progress)
    retried = int(jstat.get("failed") or 0)
    job_done = job is None or _condition(job, "Complete") or _condition(job, "Failed") or done + len(lost) >= sources
    if job_done and peers and all((p.get("status") or {}).get("phase") == "Succeeded" for p in peers):
        if lost:
            return _phase("Degraded", "SourcesLost", f"finished without {_lost(lost)}", progress)
        note = f"; {retried} source pod(s) retried" if retried else ""
        return _phase("Succeeded", "Succeeded", f"every role finished{note}", progress)
    running = by_phase.get("Running", [])
    lost_note = f"; lost {_lost(lost)}" if lost else ""
    if running:
        return _phase(
            "Running", "SourcesLost" if lost else "Running", f"{len(running)} pods running{lost_note}", progress
        )
    return _phase(
        "Pending",
        "SourcesLost" if lost else "PodsPending",
        f"{len(by_phase.get('Pending', []))} of {len(pods)} pods pending{lost_note}",
        progress,
    )


def _lost(indexes: list[int]) -> str:
    return "source " + ", ".join(str(i) for i in indexes) + f" (failed {RESTART_LIMIT + 1} times)"


def conditions(
    phase: str, reason: str, message: str, previous: list[dict] | None, now: str, generation: int | None = None
) -> list[dict]:
    """The four conditions for a phase, each keeping its lastTransitionTime from `previous`
    unless its status changed. now: an RFC 3339 time (the caller's clock: this stays pure)."""
    finished = phase in FINISHED
    states = {
        "Ready": (finished, reason if finished or phase == "Failed" else phase),
        "Progressing": (phase in ("Pending", "Running"), reason if phase in ("Pending", "Running") else "Finished"),
        "Degraded": (
            reason == "SourcesLost" and phase != "Failed",
            "SourcesLost" if reason == "SourcesLost" else "AllSources",
        ),
        "Failed": (phase == "Failed", reason if phase == "Failed" else "NotFailed"),
    }
    old = {c.get("type"): c for c in previous or []}
    out = []
    for kind in CONDITION_TYPES:
        value, why = states[kind]
        status = "True" if value else "False"
        before = old.get(kind) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        cond = {"type": kind, "status": status, "reason": why, "message": message, "lastTransitionTime": since or now}
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out
