"""What tests share besides fixtures: the repository root and a small experiment document.
Test modules import these (`from support import ROOT, experiment_doc`); fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
