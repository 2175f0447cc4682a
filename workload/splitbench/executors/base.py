from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunResult:
    name: str
    run_dir: Path
    ok: bool
    message: str  # one line: what happened
    wall_s: float
