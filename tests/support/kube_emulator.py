"""A Kubernetes API for tests: kmock's emulator (objects kept in memory, list/watch/patch/
delete as the API server does them) on loopback, in its own thread and event loop, with the
Experiment CRD registered and a kubeconfig that points the official client and kopf at it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import kmock
import kubernetes
import pytest
import yaml

from splitbench.crd import GROUP, KIND, PLURAL, VERSION
from splitbench.executors.kubeapi import api_client

EXPERIMENTS = f"{GROUP}/{VERSION}/{PLURAL}"
NS = "bench"


class _ApiServer(kmock.KubernetesEmulator):
    """kmock keeps what it is sent; an API server also gives each new object a namespace, a
    uid, a resourceVersion and a generation, which kopf, owner references and conditions
    rely on."""

    async def _handle(self, request):
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("generation", 1)  # what conditions' observedGeneration answers to
        return await super()._handle(request)


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
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "kmock",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {"token": "test"}}],
                    "contexts": [
                        {"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": "bench"}}
                    ],
                }
            )
        )
        return self

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        async with _ApiServer() as api, kmock.Server(api) as server:
            api.resources.load_bundled()
            api.resources[EXPERIMENTS] = kmock.ResourceInfo(
                kind=KIND,
                singular="experiment",
                namespaced=True,
                subresources={"status"},
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            )
            self.api, self.url = api, str(server.url).rstrip("/")
            ready.set()
            await self._stop.wait()

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    with Emulator(tmp_path) as emu:
        monkeypatch.setenv("KUBECONFIG", str(emu.kubeconfig))
        # the client reads $KUBECONFIG once, at import; kopf's login goes through it
        monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(emu.kubeconfig))
        monkeypatch.setenv("SPLITBENCH_STATUS_INTERVAL", "0.3")
        api_client.cache_clear()
        kubernetes.config.load_kube_config(config_file=str(emu.kubeconfig))
        yield emu
        api_client.cache_clear()


def wait(what, check, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
