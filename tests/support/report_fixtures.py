"""Small synthetic run folders for report tests: the same files an executor leaves (spec.yaml,
model_cost.json by the executors' own helper, roles' event files merged by record.merge,
status.txt), written without starting any role."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from splitbench.model_cost_record import write_model_cost
from splitbench.record import merge
from splitbench.spec import REPEAT_LABEL, SETTING_LABEL, load_experiment

ACT = 12544  # small_cnn's activation bytes per sample after block 4 (float32, 16x14x14)


def fake_run(
    root: Path,
    setting: str,
    repeat: int,
    step_s: float,
    accuracy: float,
    network: str = "ethernet-1g",
    status: str = "ok",
    steps: int = 6,
    batch: int = 32,
    seed: int | None = None,
) -> Path:
    name = f"{setting}-r{repeat}"
    d = root / name
    d.mkdir(parents=True)
    doc = {
        "apiVersion": "splitbench.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "labels": {SETTING_LABEL: setting, REPEAT_LABEL: str(repeat)}},
        "spec": {
            "model": {"name": "small_cnn"},
            "dataset": {"name": "synthetic", "samplesPerSource": 192},
            "paradigm": {"name": "split", "splitAfter": 4},
            "training": {"epochs": 2, "batchSize": batch},
            "network": {"profile": network},
            "sources": {"replicas": 1, "device": {"cpu": "500m"}},
            "seed": repeat - 1 if seed is None else seed,
        },
    }
    (d / "spec.yaml").write_text(yaml.safe_dump(doc))
    write_model_cost(load_experiment(d / "spec.yaml"), d)  # as the executors do when they plan a run
    t0 = time.time()
    rows = [
        {
            "event": "session",
            "time": t0,
            "role": "source",
            "instance": "source-0",
            "status": "limited",
            "cpu_limit": "cgroup-v2:/sys/fs/cgroup/x",
        }
    ]
    t = t0
    for epoch in range(2):
        for step in range(steps // 2):
            t += step_s
            rows.append(
                {
                    "event": "step",
                    "time": t,
                    "role": "source",
                    "instance": "source-0",
                    "epoch": epoch,
                    "step": step,
                    "samples": batch,
                    "duration_s": step_s,
                    "loss": 1.0,
                    "phase_edge_forward_s": step_s * 0.3,
                    "phase_uplink_s": step_s * 0.4,
                    "phase_downlink_s": step_s * 0.2,
                    "up_activation_bytes": ACT * batch,
                    "up_label_bytes": batch,
                    "up_control_bytes": 117,
                    "down_gradient_bytes": ACT * batch,
                    "down_control_bytes": 178,
                }
            )
        rows.append(
            {
                "event": "eval",
                "time": t + 0.01,
                "role": "source",
                "instance": "source-0",
                "epoch": epoch,
                "samples": 128,
                "accuracy": accuracy * (0.8 if epoch == 0 else 1.0),
                "exit": "final",
                "up_eval_bytes": 1000,
            }
        )
    # the role's closing event, as roles.runtime writes it: record.read_run takes a file without one as cut short
    rows.append(
        {
            "event": "session",
            "time": t + 0.02,
            "role": "source",
            "instance": "source-0",
            "status": "ok",
            "duration_s": t + 0.02 - t0,
        }
    )
    with open(d / "source-0.events.jsonl", "w") as f:
        for r in rows:
            r.setdefault("experiment", name)
            f.write(json.dumps(r) + "\n")
    (d / "targets.json").write_text("[]")
    merge(d, t0 - 2.0)
    (d / "status.txt").write_text(f"{status}: synthetic\n")
    return d


def fake_suite(root: Path) -> list[Path]:
    """Three settings x 3 repeats (+ one failed run): 'eth-a' and 'eth-b' differ only by noise
    (other seeds), 'lowrate' is three times slower per step and less accurate."""
    dirs = []
    for r, (a, b, slow) in enumerate([(0.100, 0.101, 0.30), (0.104, 0.097, 0.31), (0.098, 0.103, 0.29)], 1):
        dirs.append(fake_run(root, "fake-split-eth-a", r, a, 0.80 + 0.01 * r))
        dirs.append(fake_run(root, "fake-split-eth-b", r, b, 0.81 + 0.005 * r, seed=100 + r))
        dirs.append(fake_run(root, "fake-split-lowrate", r, slow, 0.60 + 0.01 * r, network="low-bitrate"))
    dirs.append(fake_run(root, "fake-split-lowrate", 4, 5.0, 0.1, network="low-bitrate", status="failed"))
    return dirs
