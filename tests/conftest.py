from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from support import ROOT

os.environ.setdefault("SPLITBENCH_BENCHMARKS", str(ROOT / "benchmarks"))


def pytest_collection_modifyitems(config, items):
    """The folder is the marker: tests under integration/ start real processes, under cluster/ need a
    cluster, so `pytest -m "not integration"` is the fast unit run whatever a module declares."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts[0] in ("integration", "cluster"):
            item.add_marker(parts[0])


@pytest.fixture
def write_spec(tmp_path):
    def write(doc: dict, filename: str = "exp.yaml") -> Path:
        p = tmp_path / filename
        p.write_text(yaml.safe_dump(doc))
        return p

    return write


@pytest.fixture(scope="session")
def container_engine():
    """A Docker Engine API (Docker, or a podman service started and stopped here) and the
    edge image, built once: an image whose inputs have not changed is reused (tools/images.py).
    Skipped with the reason where no engine can be had (not root, no apt, no Docker)."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import container_engine as engine_tool
    import images as images_tool

    started_here = not engine_tool.PIDFILE.exists()
    try:
        host = engine_tool.start()
    except engine_tool.NoEngine as err:
        pytest.skip(f"no container engine: {err}")
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    import docker

    client = docker.DockerClient(base_url=host, timeout=600)
    try:
        images_tool.main(["--edge"])
        yield client
    finally:
        client.close()
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        if started_here:
            engine_tool.stop()
