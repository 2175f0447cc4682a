"""Shared helpers for tests that start real role processes."""

from __future__ import annotations

import functools
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


@functools.cache
def small_cnn_values() -> int:
    """How many weights small_cnn has: one FedAvg contribution's length."""
    from splitbench.models import build_model
    from splitbench.paradigms.federated import state_tensors

    return sum(t.numel() for t in state_tensors(build_model("small_cnn")))


def fedavg_contribution(w: float, n: int, epoch: int = 0, values: int | None = None):
    """A FedAvg device's round contribution, as a source sends it: every weight w, n samples."""
    import torch

    from splitbench.transport import Kind, Message, Traffic

    values = small_cnn_values() if values is None else values
    return (
        Message(Kind.TRAIN, "t", epoch=epoch)
        .add("w_whole", torch.full((values,), float(w)), Traffic.WEIGHTS)
        .add("n", torch.tensor([n]), Traffic.CONTROL)
    )


def close_peers(ctx, role, *endpoints) -> None:
    """End a test's fake peers and the role process they talked to (if it still runs)."""
    for ep in endpoints:
        ep.close()
    ctx.term()
    if role.poll() is None:
        role.kill()
