"""What starts the roles of an experiment: `local` (processes on this machine) or
`kubernetes` (an Experiment resource that the operator turns into pods)."""
from .base import RunResult
from .kubernetes import KubernetesExecutor
from .local import LocalExecutor

EXECUTORS = {"local": LocalExecutor, "kubernetes": KubernetesExecutor}

__all__ = ["EXECUTORS", "KubernetesExecutor", "LocalExecutor", "RunResult"]
