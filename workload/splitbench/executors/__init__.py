"""What starts the roles of an experiment's role plan (splitbench.roleplan): `local`
(processes on this machine), `docker` (containers through the Docker Engine API: Docker or
podman) or `kubernetes` (an Experiment resource that the operator turns into pods)."""

from .base import RunResult
from .docker import DockerExecutor
from .kubernetes import KubernetesExecutor
from .local import LocalExecutor

EXECUTORS = {"local": LocalExecutor, "docker": DockerExecutor, "kubernetes": KubernetesExecutor}

__all__ = ["EXECUTORS", "DockerExecutor", "KubernetesExecutor", "LocalExecutor", "RunResult"]
