from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPLITBENCH_BENCHMARKS", str(ROOT / "benchmarks"))


def experiment_doc(name: str = "t", **overrides) -> dict:
    """A small, fast experiment: synthetic data, small CNN, 2 sources."""
    spec = {
        "model": {"name": "small_cnn"},
        "dataset": {"name": "synthetic", "samplesPerSource": 128, "testSamples": 128},
        "paradigm": {"name": "split", "splitAfter": 4},
        "training": {"epochs": 1, "batchSize": 32, "lr": 0.01, "replyTimeoutS": 60},
        "network": {"profile": "ethernet-1g"},
        "sources": {"replicas": 2, "device": {"cpu": "500m"}},
        "seed": 0,
    }
    for key, value in overrides.items():
        spec[key] = value
    return {"apiVersion": "splitbench.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}


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
