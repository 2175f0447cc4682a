"""Training paradigms: registry.PARADIGMS names each one's class (one module each), imported
only when a role runs it."""

from __future__ import annotations

from ..registry import PARADIGMS as REGISTRY
from .base import Paradigm, Setup


def paradigm_class(name: str) -> type[Paradigm]:
    return REGISTRY[name].load()


def get_paradigm(setup: Setup) -> Paradigm:
    return paradigm_class(setup.spec.paradigm.name)(setup)


__all__ = ["Paradigm", "Setup", "get_paradigm", "paradigm_class"]
