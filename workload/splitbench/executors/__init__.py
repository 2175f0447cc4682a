"""What starts the roles of an experiment: `local` (processes on this machine)."""
from .base import RunResult
from .local import LocalExecutor

EXECUTORS = {"local": LocalExecutor}

__all__ = ["EXECUTORS", "LocalExecutor", "RunResult"]
