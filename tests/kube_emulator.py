"""A Kubernetes API for tests: kmock's emulator (objects kept in memory, list/watch/patch/
delete as the API server does them) on loopback, in its own thread and event loop, with the
Experiment CRD registered and a kubeconfig that points the official client and kopf at it."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import kmock
import yaml

from splitbench.crd import GROUP, KIND, PLURAL, VERSION

EXPERIMENTS = f"{GROUP}/{VERSION}/{PLURAL}"


class Emulator:
    def __init__(self, workdir: Path):
        self.kubeconfig = workdir / "kubeconfig"
        self.url = ""
        self.api: kmock.KubernetesEmulator | None = None

    def __enter__(self) -> "Emulator":
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(ready),), daemon=True)
        self.thread.start()
        if not ready.wait(20):
            raise RuntimeError("the kmock emulator did not start in 20 s")
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": "bench"}}],
        }))
        return self

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
            api.resources.load_bundled()
            api.resources[EXPERIMENTS] = kmock.ResourceInfo(
                kind=KIND, singular="experiment", namespaced=True, subresources={"status"},
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"})
            self.api, self.url = api, str(server.url).rstrip("/")
            ready.set()
            await self._stop.wait()

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
