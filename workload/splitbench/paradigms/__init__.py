"""Training paradigms, registered by the spec's paradigm name (one module each)."""
from __future__ import annotations

from .base import Paradigm, Setup
from .centralized import Centralized
from .compressed_split import CompressedSplit
from .early_exit import EarlyExit
from .fedavg import FedAvg
from .full_offload import FullOffload
from .hfsl import Hfsl
from .split import Split

PARADIGMS: dict[str, type[Paradigm]] = {p.name: p for p in (Centralized, FullOffload, Split, CompressedSplit, EarlyExit,
                                                             FedAvg, Hfsl)}


def get_paradigm(setup: Setup) -> Paradigm:
    return PARADIGMS[setup.spec.paradigm.name](setup)


__all__ = ["PARADIGMS", "Paradigm", "Setup", "get_paradigm"]
