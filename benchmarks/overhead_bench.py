"""The testbed's own overhead: time per step of split learning and full offload with the
link unconstrained (sources talk to the server directly on loopback, no CPU quota), vs the
same model trained whole in one process (the centralized trainer), same batch size.

Ratios of medians from one run; a ratio near 1 means the testbed adds little beyond the
compute it measures. The split step is broken down into edge compute, server compute,
and the rest (serialization, transport, scheduling).

    python benchmarks/overhead_bench.py [--steps 40]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd

from splitbench.data.datasets import DEBIAN_FASHION_MNIST
from splitbench.executors import LocalExecutor
from splitbench.spec import Experiment


def experiment(name: str, model: str, dataset: dict, paradigm: dict, steps: int) -> Experiment:
    return Experiment.model_validate({
        "metadata": {"name": name},
        "spec": {"model": {"name": model}, "dataset": dataset, "paradigm": paradigm,
                 "training": {"epochs": 1, "batchSize": 32, "lr": 0.01, "maxStepsPerEpoch": steps},
                 "network": {"profile": "unconstrained"}, "sources": {"replicas": 1}}})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repeats; the median is kept")
    args = ap.parse_args()
    fashion = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists()
    cases = [("small_cnn", {"name": "fashion_mnist", "samplesPerSource": 4096, "testSamples": 256} if fashion
              else {"name": "synthetic", "samplesPerSource": 4096, "testSamples": 256}, 4),
             ("vgg11_bn", {"name": "synthetic", "channels": 3, "imageSize": 32, "samplesPerSource": 2048,
                           "testSamples": 256}, 4)]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        ex = LocalExecutor(Path(d), cpu_limit="off", quiet=True)
        for model, dataset, cut in cases:
            runs: dict[str, list[float]] = {}
            edges, servers = [], []
            for _ in range(args.rounds):
                for paradigm in ({"name": "centralized"}, {"name": "split", "splitAfter": cut},
                                 {"name": "full_offload", "inputEncoding": "uint8"}):
                    exp = experiment(f"{model.replace('_', '-')}-{paradigm['name'].replace('_', '-')}", model,
                                     dataset, paradigm, args.steps)
                    r = ex.run(exp)
                    if not r.ok:
                        print(f"{exp.name} failed: {r.message}", file=sys.stderr)
                        return 1
                    rec = pd.read_parquet(r.run_dir / "record.parquet")
                    steps = rec[rec["event"] == "step"].iloc[3:]  # drop warm-up steps
                    runs.setdefault(paradigm["name"], []).append(steps["duration_s"].median())
                    if paradigm["name"] == "split":
                        edges.append((steps["phase_edge_forward_s"] + steps["phase_edge_backward_s"]).median())
                        servers.append((steps["phase_server_forward_s"] + steps["phase_server_backward_s"]).median())
            med = {k: statistics.median(v) for k, v in runs.items()}
            edge, server = statistics.median(edges), statistics.median(servers)
            whole = med["centralized"]
            rows.append((model, whole, med["split"], med["full_offload"], edge, server))
            print(f"{model}: whole model {whole * 1e3:.1f} ms/step | split {med['split'] * 1e3:.1f} ms "
                  f"(x{med['split'] / whole:.2f}; edge {edge * 1e3:.1f} + server {server * 1e3:.1f} + other "
                  f"{(med['split'] - edge - server) * 1e3:.1f}) | full offload {med['full_offload'] * 1e3:.1f} ms "
                  f"(x{med['full_offload'] / whole:.2f})")
    out = Path("runs/benchmarks/overhead.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["model", "whole_s", "split_s", "full_offload_s", "split_edge_s", "split_server_s"]
                 ).to_csv(out, index=False)
    print(f"medians of {args.rounds} interleaved runs of {args.steps - 3} steps each, batch 32, no CPU quota, unconstrained link; csv: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
