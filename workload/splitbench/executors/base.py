from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class RunResult:
    name: str
    run_dir: Path
    ok: bool
    message: str  # one line: what happened
    wall_s: float


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


def status_line(ok: bool, interrupted: bool, message: str) -> str:
    """status.txt of a run: '<ok|failed|interrupted>: what happened' (record.run_status reads it)."""
    return f"{'interrupted' if interrupted else 'ok' if ok else 'failed'}: {message}\n"
