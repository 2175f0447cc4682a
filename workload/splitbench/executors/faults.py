"""The executor's side of faults: spec.faults' kills and slowdowns performed at their time, and
what a source that is gone leaves in the record.

Every fault is a `fault` event in the executor's events file (executor-0.events.jsonl, merged
into the record with the roles'), one at its start (state=start) and one at its end
(state=end; a kill ends with the run). A fault whose step or time never came is recorded with
state=missed. Cuts are the link emulator's outages (spec.network_with_faults): its `outage`
events are their start and end. Times count from the first training step, as outages do.
"""

from __future__ import annotations

import time
from typing import Callable

from ..devices import change_cpu_limit
from ..roleplan import plan_roles
from ..record import EventLog
from ..spec import Experiment, cpu_cores
from .progress import Progress

EXECUTOR = "executor-0"  # the instance name of the executor's own events


class ExecutorLog:
    """The executor's own events (sources gone, faults) in executor-0.events.jsonl. The file is
    made at the first event only, so a clean run's record holds its roles' events alone, as a
    cluster's does; closed with a session event as a role's file is (record.read_events_file
    then reads it as whole)."""

    def __init__(self, exp: Experiment, run_dir):
        self.path, self.experiment = run_dir / f"{EXECUTOR}.events.jsonl", exp.name
        self._log: EventLog | None = None

    def write(self, event: str, **fields) -> None:
        if self._log is None:
            self._log = EventLog(self.path, self.experiment, "executor", EXECUTOR, echo=False)
        self._log.write(event, **fields)

    def close(self, **closing) -> None:
        if self._log is not None:
            self._log.write("session", **closing)
            self._log.close()


def executor_log(exp: Experiment, run_dir) -> ExecutorLog:
    return ExecutorLog(exp, run_dir)


def source_gone(log: ExecutorLog, progress: Progress, instance: str, reason: str, **fields) -> None:
    """Record a source that stopped: when (this event's time), its last step and the samples it trained."""
    progress.poll()  # its last lines first
    log.write(
        "source_gone",
        source=instance,
        last_step=progress.last_step.get(instance),
        samples_trained=progress.samples.get(instance, 0),
        reason=reason,
        noticed_by=EXECUTOR,
        **fields,
    )


class FaultInjector:
    """Performs spec.faults' kills and slowdowns as training goes (tick, every watch loop) and
    records each; close() ends what is still in force when the run ends."""

    def __init__(self, exp: Experiment, log: ExecutorLog):
        self.log = log
        self.pending = [f for f in exp.spec.faults if f.kind in ("kill", "slow")]
        self.active: list = []  # (end time, fault, mechanism): slowdowns in force
        self.killed: list[str] = []
        self.quota = plan_roles(exp).device("source").cpu

    def _due(self, f, progress: Progress, now: float) -> bool:
        if f.at_step is not None:
            return progress.done.get(f.role, 0) >= f.at_step
        return progress.first_step is not None and now - progress.first_step >= f.at_s

    def tick(self, progress: Progress, kill: Callable[[str], bool]) -> None:
        now = time.time()
        for f in [f for f in self.pending if self._due(f, progress, now)]:
            self.pending.remove(f)
            at = {
                "at_step": progress.done.get(f.role),
                "t_s": now - progress.first_step if progress.first_step is not None else None,
            }
            if f.kind == "kill":
                alive = kill(f.role)
                self.killed.append(f.role)
                self.log.write(
                    "fault",
                    kind="kill",
                    target=f.role,
                    state="start",
                    signal="SIGKILL",
                    enforced="killed" if alive else "already ended",
                    **at,
                )
                continue
            mechanism = progress.cpu_limit.get(f.role) or "none"
            enforced = change_cpu_limit(mechanism, cpu_cores(f.cpu))
            self.active.append((now + f.for_s, f, mechanism))
            self.log.write(
                "fault", kind="slow", target=f.role, state="start", cpu_quota=cpu_cores(f.cpu), cpu_limit=enforced, **at
            )
        for item in [a for a in self.active if a[0] <= now]:
            self._restore(item)

    def _restore(self, item) -> None:
        _, f, mechanism = item
        self.active.remove(item)
        enforced = change_cpu_limit(mechanism, self.quota) if self.quota else "no quota to restore"
        self.log.write("fault", kind="slow", target=f.role, state="end", cpu_quota=self.quota, cpu_limit=enforced)

    def close(self) -> None:
        for item in list(self.active):
            self._restore(item)
        for role in self.killed:
            self.log.write("fault", kind="kill", target=role, state="end", note="the role stays gone to the end")
        for f in self.pending:
            self.log.write(
                "fault",
                kind=f.kind,
                target=f.role,
                state="missed",
                note=f"its {'step' if f.at_step is not None else 'time'} never came",
            )
        self.pending = []
