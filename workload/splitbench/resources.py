"""Where the data files of benchmarks/ are found (profiles, suites, baselines)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def benchmarks_dir() -> Path:
    """$SPLITBENCH_BENCHMARKS, else ./benchmarks, else the repository's benchmarks/."""
    env = os.environ.get("SPLITBENCH_BENCHMARKS")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[2] / "benchmarks"]
    for c in candidates:
        if (c / "networks.yaml").exists():
            return c
    raise FileNotFoundError("benchmarks/networks.yaml not found; run from the repository or set SPLITBENCH_BENCHMARKS")


def load_profiles(filename: str) -> dict[str, dict]:
    return yaml.safe_load((benchmarks_dir() / filename).read_text())["profiles"]
