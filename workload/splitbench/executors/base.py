from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

STATUSES = ("ok", "degraded", "failed")


@dataclass
class RunResult:
    """What one run came to. status: ok (every role finished), degraded (it finished without
    some sources: a fault, see the record's source_gone events) or failed (it could not go on).
    ok stays the bool callers have always read: True only for a clean run."""

    name: str
    run_dir: Path
    ok: bool
    message: str  # one line: what happened
    wall_s: float
    status: str | None = None  # default: from ok

    def __post_init__(self) -> None:
        if self.status is None:
            self.status = "ok" if self.ok else "failed"
        if self.status not in STATUSES:
            raise ValueError(f"run status {self.status!r}: expected one of {', '.join(STATUSES)}")
        self.ok = self.status == "ok"

    @property
    def finished(self) -> bool:
        """It ran to the end (clean or degraded): its record is complete for the roles that stayed."""
        return self.status != "failed"


def interrupt_on_sigterm() -> None:
    """SIGTERM (`kill`, make's when it is stopped, a CI timeout) takes Ctrl-C's path: the
    executor stops the experiment in flight, keeps its partial record and marks it interrupted."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore a second Ctrl-C or SIGTERM while a run is cleaned up (roles stopped, containers
    and cgroups removed, record merged), so none of that is left half done; then let them through."""
    if threading.current_thread() is not threading.main_thread():  # signals: main thread only
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def status_line(status: str, interrupted: bool, message: str) -> str:
    """status.txt of a run: '<ok|degraded|failed|interrupted>: what happened' (record.run_status reads it)."""
    return f"{'interrupted' if interrupted else status}: {message}\n"
