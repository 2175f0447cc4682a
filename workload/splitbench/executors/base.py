from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
