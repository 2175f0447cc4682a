"""Shared helpers for tests that start real role processes."""
from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def prom_samples(path: Path, name: str) -> list:
    """Samples of one metric family from a role's final exposition dump."""
    for family in text_string_to_metric_families(path.read_text()):
        if family.name == name:
            return family.samples
    return []


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains text (to prove no role outlived its run)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found
