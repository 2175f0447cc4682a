"""Centralized reference: the whole model trained in one process on all the data. No
network, no server; the trainer role runs it (see roles/trainer.py)."""

from __future__ import annotations

from .base import Paradigm


class Centralized(Paradigm):
    name = "centralized"

    def source(self, call, send=None, aggregate=None):
        raise NotImplementedError("centralized training runs in the trainer role, not on sources")

    def server(self, aggregate=None):
        raise NotImplementedError("centralized training runs in the trainer role, not on a server")
